// Python bindings of the dataset index builder (module neox_kernels._index). Each function
// checks its arguments with the GIL held, then runs the C++ loop with the GIL released.
// The typed, documented API is neox_kernels.index; this module is its engine.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "array_checks.h"
#include "blending_index.h"
#include "packing_index.h"
#include "sample_index.h"

namespace py = pybind11;

namespace {

constexpr int64_t kInt32Max = std::numeric_limits<int32_t>::max();
// GPT-NeoX stores dataset ids as uint8 and asserts fewer than 255 datasets.
constexpr int64_t kMaxDatasets = 254;

void require_positive(int64_t value, const char* what) {
  if (value < 1) {
    throw py::value_error(std::string(what) + " must be >= 1, got " + std::to_string(value));
  }
}

void require_non_negative(int64_t value, const char* what) {
  if (value < 0) {
    throw py::value_error(std::string(what) + " must be >= 0, got " + std::to_string(value));
  }
}

void require_non_negative_sizes(const py::array& sizes) {
  int64_t bad;
  {
    py::gil_scoped_release release;
    bad = neox::first_negative(neox::data_of<int32_t>(sizes), sizes.shape(0));
  }
  if (bad >= 0) {
    throw py::value_error("sizes[" + std::to_string(bad) + "] = " +
                          std::to_string(neox::data_of<int32_t>(sizes)[bad]) +
                          " is negative: document sizes must be >= 0");
  }
}

// Hands a vector's storage to numpy without a copy.
py::array_t<int64_t> to_numpy(std::vector<int64_t>&& values) {
  auto* owned = new std::vector<int64_t>(std::move(values));
  py::capsule free_when_done(owned, [](void* p) { delete static_cast<std::vector<int64_t>*>(p); });
  return py::array_t<int64_t>({static_cast<py::ssize_t>(owned->size())}, {sizeof(int64_t)},
                              owned->data(), free_when_done);
}

int64_t sum_document_sizes(const py::array& sizes, const py::array& documents) {
  neox::require_vector<int32_t>(sizes, "sizes");
  const bool wide = neox::require_index_vector(documents, "documents");
  require_non_negative_sizes(sizes);
  py::gil_scoped_release release;
  const auto* s = neox::data_of<int32_t>(sizes);
  if (wide) {
    return neox::sum_document_sizes(s, sizes.shape(0), neox::data_of<int64_t>(documents),
                                    documents.shape(0));
  }
  return neox::sum_document_sizes(s, sizes.shape(0), neox::data_of<int32_t>(documents),
                                  documents.shape(0));
}

template <typename DocId, typename Pos>
py::array sample_idx_as(const py::array& sizes, const py::array& doc_idx, int64_t seq_length,
                        int64_t num_samples) {
  py::array_t<Pos> out({static_cast<py::ssize_t>(num_samples + 1), py::ssize_t{2}});
  Pos* dst = out.mutable_data();
  {
    py::gil_scoped_release release;
    neox::fill_sample_index(neox::data_of<int32_t>(sizes), sizes.shape(0),
                            neox::data_of<DocId>(doc_idx), doc_idx.shape(0), seq_length,
                            num_samples, dst);
  }
  return std::move(out);
}

py::array build_sample_idx(const py::array& sizes, const py::array& doc_idx, int64_t seq_length,
                           int64_t num_epochs, int64_t tokens_per_epoch, bool use_int64) {
  neox::require_vector<int32_t>(sizes, "sizes");
  const bool wide_ids = neox::require_index_vector(doc_idx, "doc_idx");
  require_positive(seq_length, "seq_length");
  require_positive(num_epochs, "num_epochs");
  require_positive(tokens_per_epoch, "tokens_per_epoch");
  if (seq_length >= kInt32Max) {
    throw py::value_error("seq_length must be < 2**31 - 1, got " + std::to_string(seq_length));
  }
  if (!use_int64 && doc_idx.shape(0) > kInt32Max) {
    throw py::value_error("doc_idx has " + std::to_string(doc_idx.shape(0)) +
                          " entries: positions do not fit int32, build with use_int64=True");
  }
  const int64_t num_samples = neox::packed_num_samples(num_epochs, tokens_per_epoch, seq_length);
  require_non_negative_sizes(sizes);
  if (wide_ids) {
    return use_int64 ? sample_idx_as<int64_t, int64_t>(sizes, doc_idx, seq_length, num_samples)
                     : sample_idx_as<int64_t, int32_t>(sizes, doc_idx, seq_length, num_samples);
  }
  return use_int64 ? sample_idx_as<int32_t, int64_t>(sizes, doc_idx, seq_length, num_samples)
                   : sample_idx_as<int32_t, int32_t>(sizes, doc_idx, seq_length, num_samples);
}

py::tuple build_blending_indices(const py::array& weights, int64_t size) {
  neox::require_vector<double>(weights, "weights");
  const int64_t num_datasets = weights.shape(0);
  if (num_datasets < 1 || num_datasets > kMaxDatasets) {
    throw py::value_error("a blend needs 1 to " + std::to_string(kMaxDatasets) +
                          " datasets, got " + std::to_string(num_datasets));
  }
  require_non_negative(size, "size");
  const double* w = neox::data_of<double>(weights);
  double total = 0.0;
  for (int64_t d = 0; d < num_datasets; ++d) {
    if (!std::isfinite(w[d]) || w[d] < 0.0) {
      throw py::value_error("weights[" + std::to_string(d) + "] = " + std::to_string(w[d]) +
                            ": weights must be finite and >= 0");
    }
    total += w[d];
  }
  if (!(total > 0.0)) throw py::value_error("weights must sum to a positive number");

  py::array_t<uint8_t> dataset_index({static_cast<py::ssize_t>(size)});
  py::array_t<int64_t> dataset_sample_index({static_cast<py::ssize_t>(size)});
  py::array_t<int64_t> counts({static_cast<py::ssize_t>(num_datasets)});
  uint8_t* di = dataset_index.mutable_data();
  int64_t* dsi = dataset_sample_index.mutable_data();
  int64_t* c = counts.mutable_data();
  {
    py::gil_scoped_release release;
    neox::fill_blending_index(w, num_datasets, size, di, dsi, c);
  }
  return py::make_tuple(dataset_index, dataset_sample_index, counts);
}

// The corpus arguments of the unpadded variants, checked and viewed for C++.
template <typename DocId>
neox::DocumentView<DocId> document_view(const py::array& sizes, const py::array& documents,
                                        const py::object& skip, int64_t seq_length,
                                        bool allow_chopped) {
  const uint8_t* skip_data = nullptr;
  if (!skip.is_none()) {
    const auto mask = py::reinterpret_borrow<py::array>(skip);
    neox::require_vector<bool>(mask, "skip");
    if (mask.shape(0) != sizes.shape(0)) {
      throw py::value_error("skip has " + std::to_string(mask.shape(0)) +
                            " entries, sizes has " + std::to_string(sizes.shape(0)) +
                            ": skip is indexed by document id");
    }
    skip_data = static_cast<const uint8_t*>(mask.data());
  }
  return neox::DocumentView<DocId>{neox::data_of<int32_t>(sizes),
                                   sizes.shape(0),
                                   neox::data_of<DocId>(documents),
                                   documents.shape(0),
                                   skip_data,
                                   seq_length,
                                   allow_chopped};
}

void check_unpadded_arguments(const py::array& sizes, const py::array& documents,
                              const py::object& skip, int64_t seq_length, int64_t num_samples) {
  neox::require_vector<int32_t>(sizes, "sizes");
  neox::require_index_vector(documents, "documents");
  if (!skip.is_none() && !py::isinstance<py::array>(skip)) {
    throw py::value_error("skip must be None or a numpy bool array");
  }
  require_positive(seq_length, "seq_length");
  if (seq_length >= kInt32Max) {
    throw py::value_error("seq_length must be < 2**31 - 1, got " + std::to_string(seq_length));
  }
  require_non_negative(num_samples, "num_samples");
  if (documents.shape(0) == 0) throw py::value_error("documents is empty");
  require_non_negative_sizes(sizes);
}

template <typename DocId>
py::tuple pack_until_overflow_as(const py::array& sizes, const py::array& documents,
                                 py::array& order, int64_t seq_length, int64_t num_samples,
                                 bool allow_chopped, const py::object& skip,
                                 const py::function& reshuffle) {
  const auto view = document_view<DocId>(sizes, documents, skip, seq_length, allow_chopped);
  py::array_t<int64_t> sample_idx({static_cast<py::ssize_t>(num_samples + 1), py::ssize_t{2}});
  int64_t* rows = sample_idx.mutable_data();
  auto* positions = static_cast<int64_t*>(order.mutable_data());
  std::vector<int64_t> doc_idx;
  doc_idx.reserve(static_cast<size_t>(num_samples));
  const std::function<void()> call_reshuffle = [&reshuffle]() {
    py::gil_scoped_acquire acquire;
    reshuffle();
  };
  {
    py::gil_scoped_release release;
    neox::fill_pack_until_overflow(view, positions, num_samples, call_reshuffle, doc_idx, rows);
  }
  return py::make_tuple(to_numpy(std::move(doc_idx)), sample_idx);
}

py::tuple build_pack_until_overflow(const py::array& sizes, const py::array& documents,
                                    py::array& order, int64_t seq_length, int64_t num_samples,
                                    bool allow_chopped, const py::object& skip,
                                    const py::function& reshuffle) {
  check_unpadded_arguments(sizes, documents, skip, seq_length, num_samples);
  neox::require_vector<int64_t>(order, "order");
  if (order.shape(0) != documents.shape(0)) {
    throw py::value_error("order must be a permutation of the " +
                          std::to_string(documents.shape(0)) + " positions of documents, got " +
                          std::to_string(order.shape(0)) + " entries");
  }
  if (!order.writeable()) throw py::value_error("order must be writeable: it is reshuffled");
  if (neox::is_plain_vector<int64_t>(documents)) {
    return pack_until_overflow_as<int64_t>(sizes, documents, order, seq_length, num_samples,
                                           allow_chopped, skip, reshuffle);
  }
  return pack_until_overflow_as<int32_t>(sizes, documents, order, seq_length, num_samples,
                                         allow_chopped, skip, reshuffle);
}

template <typename DocId>
py::tuple unpacked_as(const py::array& sizes, const py::array& documents, int64_t seq_length,
                      int64_t num_samples, bool allow_chopped, const py::object& skip) {
  const auto view = document_view<DocId>(sizes, documents, skip, seq_length, allow_chopped);
  py::array_t<int64_t> doc_idx({static_cast<py::ssize_t>(num_samples + 1)});
  py::array_t<int64_t> sample_idx({static_cast<py::ssize_t>(num_samples + 1), py::ssize_t{2}});
  int64_t* docs_out = doc_idx.mutable_data();
  int64_t* rows = sample_idx.mutable_data();
  {
    py::gil_scoped_release release;
    neox::fill_unpacked(view, num_samples, docs_out, rows);
  }
  return py::make_tuple(doc_idx, sample_idx);
}

py::tuple build_unpacked(const py::array& sizes, const py::array& documents, int64_t seq_length,
                         int64_t num_samples, bool allow_chopped, const py::object& skip) {
  check_unpadded_arguments(sizes, documents, skip, seq_length, num_samples);
  if (neox::is_plain_vector<int64_t>(documents)) {
    return unpacked_as<int64_t>(sizes, documents, seq_length, num_samples, allow_chopped, skip);
  }
  return unpacked_as<int32_t>(sizes, documents, seq_length, num_samples, allow_chopped, skip);
}

int64_t num_samples(int64_t num_epochs, int64_t tokens_per_epoch, int64_t seq_length) {
  require_positive(num_epochs, "num_epochs");
  require_positive(tokens_per_epoch, "tokens_per_epoch");
  require_positive(seq_length, "seq_length");
  return neox::packed_num_samples(num_epochs, tokens_per_epoch, seq_length);
}

}  // namespace

PYBIND11_MODULE(_index, m) {
  m.doc() = "neox dataset index builder (C++); use the typed API in neox_kernels.index";
  m.def("build_info", []() {
    py::dict info;
    info["version"] = NEOX_KERNELS_VERSION;
    info["compiler"] = __VERSION__;
    info["cplusplus"] = __cplusplus;
    info["functions"] = py::make_tuple("num_samples", "sum_document_sizes", "build_sample_idx",
                                       "build_blending_indices", "build_pack_until_overflow",
                                       "build_unpacked");
    return info;
  });
  m.def("num_samples", &num_samples, py::arg("num_epochs"), py::arg("tokens_per_epoch"),
        py::arg("seq_length"));
  m.def("sum_document_sizes", &sum_document_sizes, py::arg("sizes"), py::arg("documents"));
  m.def("build_sample_idx", &build_sample_idx, py::arg("sizes"), py::arg("doc_idx"),
        py::arg("seq_length"), py::arg("num_epochs"), py::arg("tokens_per_epoch"),
        py::arg("use_int64"));
  m.def("build_blending_indices", &build_blending_indices, py::arg("weights"), py::arg("size"));
  m.def("build_pack_until_overflow", &build_pack_until_overflow, py::arg("sizes"),
        py::arg("documents"), py::arg("order"), py::arg("seq_length"), py::arg("num_samples"),
        py::arg("allow_chopped"), py::arg("skip"), py::arg("reshuffle"));
  m.def("build_unpacked", &build_unpacked, py::arg("sizes"), py::arg("documents"),
        py::arg("seq_length"), py::arg("num_samples"), py::arg("allow_chopped"),
        py::arg("skip"));
}
