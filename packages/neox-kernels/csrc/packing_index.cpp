// pack_until_overflow and unpacked index builders, with GPT-NeoX's semantics.
#include "packing_index.h"

#include <stdexcept>
#include <string>

namespace neox {

template <typename DocId>
int64_t DocumentView<DocId>::document_at(int64_t i) const {
  const int64_t doc = static_cast<int64_t>(documents[i]);
  if (doc < 0 || doc >= num_sizes) {
    throw std::invalid_argument("documents[" + std::to_string(i) + "] = " + std::to_string(doc) +
                                " is not a document id in [0, " + std::to_string(num_sizes) +
                                ")");
  }
  return doc;
}

template <typename DocId>
bool DocumentView<DocId>::usable(int64_t doc) const {
  if (!allow_chopped && static_cast<int64_t>(sizes[doc]) > seq_length + 1) return false;
  return skip == nullptr || skip[doc] == 0;
}

template <typename DocId>
bool DocumentView<DocId>::any_usable() const {
  for (int64_t i = 0; i < num_documents; ++i) {
    if (usable(document_at(i))) return true;
  }
  return false;
}

template <typename DocId>
void fill_pack_until_overflow(const DocumentView<DocId>& view, int64_t* order,
                              int64_t num_samples, const std::function<void()>& reshuffle,
                              std::vector<int64_t>& doc_idx, int64_t* sample_idx_out) {
  if (num_samples > 0 && !view.any_usable()) {
    throw std::invalid_argument(
        "no document can be packed: every document is skipped or longer than seq_length + 1 "
        "(allow_chopped is off)");
  }
  const int64_t capacity = view.seq_length + 1;
  int64_t opened = 0;   // samples opened so far
  int64_t running = 0;  // tokens in the open sample
  int64_t cursor = 0;   // position in order
  bool placed = false;  // whether this pass over order placed a document
  while (opened < num_samples) {
    if (cursor == view.num_documents) {
      // A permutation of the positions holds a usable document (checked above); an order
      // that is not one could otherwise spin here forever.
      if (!placed) {
        throw std::invalid_argument(
            "a whole pass over order placed no document: order must be a permutation of the "
            "positions of documents");
      }
      // GPT-NeoX reshuffles right after the last position of a pass; doing it lazily here
      // draws the same permutations (nothing else uses the generator meanwhile).
      reshuffle();
      cursor = 0;
      placed = false;
    }
    const int64_t position = order[cursor++];
    if (position < 0 || position >= view.num_documents) {
      throw std::invalid_argument("order holds position " + std::to_string(position) +
                                  ", outside [0, " + std::to_string(view.num_documents) + ")");
    }
    const int64_t doc = view.document_at(position);
    if (!view.usable(doc)) continue;
    const int64_t length = view.sizes[doc];
    if (running == 0 || running + length > capacity) {
      sample_idx_out[2 * opened] = static_cast<int64_t>(doc_idx.size());
      sample_idx_out[2 * opened + 1] = 0;
      ++opened;
      running = length;
    } else {
      running += length;
    }
    doc_idx.push_back(doc);
    placed = true;
  }
  sample_idx_out[2 * opened] = static_cast<int64_t>(doc_idx.size());
  sample_idx_out[2 * opened + 1] = 0;
}

template <typename DocId>
void fill_unpacked(const DocumentView<DocId>& view, int64_t num_samples, int64_t* doc_idx_out,
                   int64_t* sample_idx_out) {
  // Cycling over the split and skipping unusable documents is the same as cycling over the
  // usable ones; listing them once keeps this linear however many are skipped.
  std::vector<int64_t> usable;
  for (int64_t i = 0; i < view.num_documents; ++i) {
    const int64_t doc = view.document_at(i);
    if (view.usable(doc)) usable.push_back(doc);
  }
  if (usable.empty()) {
    throw std::invalid_argument(
        "no document can be used: every document is skipped or longer than seq_length + 1 "
        "(allow_chopped is off)");
  }
  const int64_t count = static_cast<int64_t>(usable.size());
  for (int64_t i = 0, j = 0; i <= num_samples; ++i) {
    doc_idx_out[i] = usable[j];
    j = j + 1 == count ? 0 : j + 1;
    sample_idx_out[2 * i] = i;
    sample_idx_out[2 * i + 1] = 0;
  }
}

template struct DocumentView<int32_t>;
template struct DocumentView<int64_t>;
template void fill_pack_until_overflow<int32_t>(const DocumentView<int32_t>&, int64_t*, int64_t,
                                                const std::function<void()>&,
                                                std::vector<int64_t>&, int64_t*);
template void fill_pack_until_overflow<int64_t>(const DocumentView<int64_t>&, int64_t*, int64_t,
                                                const std::function<void()>&,
                                                std::vector<int64_t>&, int64_t*);
template void fill_unpacked<int32_t>(const DocumentView<int32_t>&, int64_t, int64_t*, int64_t*);
template void fill_unpacked<int64_t>(const DocumentView<int64_t>&, int64_t, int64_t*, int64_t*);

}  // namespace neox
