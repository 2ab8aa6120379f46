// The packed sample index walk, with GPT-NeoX's semantics (megatron/data/helpers.cpp).
#include "sample_index.h"

#include <algorithm>
#include <limits>
#include <stdexcept>
#include <string>

namespace neox {

namespace {

// Documents whose sizes are gathered ahead of the walk (a 16 KiB stack buffer).
constexpr int64_t kGatherBlock = 2048;

}  // namespace

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

template <typename DocId>
[[noreturn]] void throw_bad_document(const DocId* doc_idx, int64_t from, int64_t to,
                                     int64_t num_sizes) {
  for (int64_t position = from; position < to; ++position) {
    const int64_t doc = static_cast<int64_t>(doc_idx[position]);
    if (doc < 0 || doc >= num_sizes) {
      throw std::invalid_argument("doc_idx[" + std::to_string(position) + "] = " +
                                  std::to_string(doc) + " is not a document id in [0, " +
                                  std::to_string(num_sizes) + ")");
    }
  }
  throw std::logic_error("throw_bad_document found no bad document");
}

template <typename DocId, typename Pos>
void fill_sample_index(const int32_t* sizes, int64_t num_sizes, const DocId* doc_idx,
                       int64_t doc_idx_len, int64_t seq_length, int64_t num_samples, Pos* out) {
  // GPT-NeoX walks sample by sample; walking document by document gives the same rows:
  // row k (k >= 1) is the first document whose tokens reach past global token
  // k * seq_length, with that token's offset in it (empty documents never qualify).
  out[0] = 0;
  out[1] = 0;
  if (num_samples == 0) return;
  int64_t row = 1;
  int64_t boundary = seq_length;  // global token position at which sample `row` starts
  int64_t start = 0;              // global token position of the current document
  // doc_idx is shuffled, so sizes is read at random. Gathering a block of lengths first,
  // in a loop of independent loads, lets the CPU overlap those cache misses; the walk then
  // reads the block sequentially.
  int64_t lengths[kGatherBlock];
  for (int64_t first = 0; first < doc_idx_len; first += kGatherBlock) {
    const int64_t count = std::min(kGatherBlock, doc_idx_len - first);
    bool bad = false;
    for (int64_t i = 0; i < count; ++i) {
      const auto doc = static_cast<uint64_t>(static_cast<int64_t>(doc_idx[first + i]));
      const bool inside = doc < static_cast<uint64_t>(num_sizes);
      lengths[i] = sizes[inside ? doc : 0];
      bad |= !inside;
    }
    if (bad) throw_bad_document(doc_idx, first, first + count, num_sizes);
    for (int64_t i = 0; i < count; ++i) {
      const int64_t position = first + i;
      const int64_t end = start + lengths[i];
      // Most documents hold at most one boundary: write the row unconditionally and keep
      // it only on a hit, so the loop does not stall on an unpredictable branch. The
      // offset written on a miss lies in [0, seq_length] and is overwritten later.
      out[2 * row] = static_cast<Pos>(position);
      out[2 * row + 1] = static_cast<Pos>(boundary - start);
      // A mask, not a branch: whether a document holds a boundary is a coin flip for the
      // branch predictor, and GCC otherwise turns the select into a jump.
      const int64_t mask = -static_cast<int64_t>(boundary < end);
      row -= mask;
      boundary += seq_length & mask;
      if (row > num_samples) return;
      while (boundary < end) {  // a document longer than seq_length holds more boundaries
        out[2 * row] = static_cast<Pos>(position);
        out[2 * row + 1] = static_cast<Pos>(boundary - start);
        ++row;
        boundary += seq_length;
        if (row > num_samples) return;
      }
      start = end;
    }
  }
  throw std::invalid_argument(
      "doc_idx ran out of tokens at sample " + std::to_string(row) + " of " +
      std::to_string(num_samples) +
      ": tokens_per_epoch * num_epochs exceeds the tokens of the documents in doc_idx");
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
