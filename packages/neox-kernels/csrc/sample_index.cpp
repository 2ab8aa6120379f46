// The packed sample index walk, with GPT-NeoX's semantics (megatron/data/helpers.cpp).
#include "sample_index.h"

#include <limits>
#include <stdexcept>
#include <string>

namespace neox {

int64_t packed_num_samples(int64_t num_epochs, int64_t tokens_per_epoch, int64_t seq_length) {
  if (num_epochs < 1) throw std::invalid_argument("num_epochs must be >= 1");
  if (tokens_per_epoch < 1) throw std::invalid_argument("tokens_per_epoch must be >= 1");
  if (seq_length < 1) throw std::invalid_argument("seq_length must be >= 1");
  if (tokens_per_epoch > std::numeric_limits<int64_t>::max() / num_epochs) {
    throw std::invalid_argument("num_epochs * tokens_per_epoch overflows int64");
  }
  return (num_epochs * tokens_per_epoch - 1) / seq_length;
}

template <typename DocId>
int64_t sum_document_sizes(const int32_t* sizes, int64_t num_sizes, const DocId* documents,
                           int64_t num_documents) {
  int64_t total = 0;
  for (int64_t i = 0; i < num_documents; ++i) {
    const int64_t doc = static_cast<int64_t>(documents[i]);
    if (doc < 0 || doc >= num_sizes) {
      throw std::invalid_argument("documents[" + std::to_string(i) + "] = " +
                                  std::to_string(doc) + " is not a document id in [0, " +
                                  std::to_string(num_sizes) + ")");
    }
    total += sizes[doc];
  }
  return total;
}

int64_t first_negative(const int32_t* sizes, int64_t num_sizes) {
  // A branch-free minimum first: the common case (no negative size) is one vectorised pass.
  int32_t smallest = 0;
  for (int64_t i = 0; i < num_sizes; ++i) smallest = sizes[i] < smallest ? sizes[i] : smallest;
  if (smallest >= 0) return -1;
  for (int64_t i = 0; i < num_sizes; ++i) {
    if (sizes[i] < 0) return i;
  }
  return -1;
}

template <typename DocId, typename Pos>
void fill_sample_index(const int32_t* sizes, int64_t num_sizes, const DocId* doc_idx,
                       int64_t doc_idx_len, int64_t seq_length, int64_t num_samples, Pos* out) {
  int64_t position = 0;  // index into doc_idx of the current document
  int64_t offset = 0;    // token offset inside that document
  out[0] = 0;
  out[1] = 0;
  for (int64_t sample = 1; sample <= num_samples; ++sample) {
    // Tokens still to cover, counting the current one: a sample is seq_length + 1 tokens and
    // its last token is the first token of the next sample.
    int64_t needed = seq_length + 1;
    for (;;) {
      if (position >= doc_idx_len) {
        throw std::invalid_argument(
            "doc_idx ran out of tokens at sample " + std::to_string(sample) + " of " +
            std::to_string(num_samples) +
            ": tokens_per_epoch * num_epochs exceeds the tokens of the documents in doc_idx");
      }
      const int64_t doc = static_cast<int64_t>(doc_idx[position]);
      if (doc < 0 || doc >= num_sizes) {
        throw std::invalid_argument("doc_idx[" + std::to_string(position) + "] = " +
                                    std::to_string(doc) + " is not a document id in [0, " +
                                    std::to_string(num_sizes) + ")");
      }
      const int64_t available = static_cast<int64_t>(sizes[doc]) - offset;
      if (needed <= available) {
        offset += needed - 1;
        break;
      }
      needed -= available;
      ++position;
      offset = 0;
    }
    out[2 * sample] = static_cast<Pos>(position);
    out[2 * sample + 1] = static_cast<Pos>(offset);
  }
}

template int64_t sum_document_sizes<int32_t>(const int32_t*, int64_t, const int32_t*, int64_t);
template int64_t sum_document_sizes<int64_t>(const int32_t*, int64_t, const int64_t*, int64_t);
template void fill_sample_index<int32_t, int32_t>(const int32_t*, int64_t, const int32_t*,
                                                  int64_t, int64_t, int64_t, int32_t*);
template void fill_sample_index<int32_t, int64_t>(const int32_t*, int64_t, const int32_t*,
                                                  int64_t, int64_t, int64_t, int64_t*);
template void fill_sample_index<int64_t, int32_t>(const int32_t*, int64_t, const int64_t*,
                                                  int64_t, int64_t, int64_t, int32_t*);
template void fill_sample_index<int64_t, int64_t>(const int32_t*, int64_t, const int64_t*,
                                                  int64_t, int64_t, int64_t, int64_t*);

}  // namespace neox
