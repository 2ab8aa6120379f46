// The packed ("concatenate documents") sample index: where each training sample starts.
#pragma once

#include <cstdint>

namespace neox {

// Samples of seq_length + 1 tokens, overlapping by one token, that num_epochs passes over
// tokens_per_epoch tokens give: (num_epochs * tokens_per_epoch - 1) / seq_length.
// Throws std::invalid_argument on non-positive arguments or int64 overflow.
int64_t packed_num_samples(int64_t num_epochs, int64_t tokens_per_epoch, int64_t seq_length);

// Sum of sizes[documents[i]] over all i, checking every id lies in [0, num_sizes).
template <typename DocId>
int64_t sum_document_sizes(const int32_t* sizes, int64_t num_sizes, const DocId* documents,
                           int64_t num_documents);

// Index of the first negative entry of sizes, or -1 when there is none.
int64_t first_negative(const int32_t* sizes, int64_t num_sizes);

// Writes num_samples + 1 rows of (position in doc_idx, token offset in that document) to
// out (row-major, two entries per row). Row 0 is (0, 0); row k is where the token at
// global position k * seq_length lies, so sample k spans row k to row k + 1 inclusive.
// Throws std::invalid_argument when doc_idx holds an id outside sizes or runs out of
// tokens before num_samples samples are placed. Needs no Python: call it without the GIL.
template <typename DocId, typename Pos>
void fill_sample_index(const int32_t* sizes, int64_t num_sizes, const DocId* doc_idx,
                       int64_t doc_idx_len, int64_t seq_length, int64_t num_samples, Pos* out);

}  // namespace neox
