// Indices of the unpadded-packing variants: `pack_until_overflow` (whole documents per
// sample, a new sample when the next document would overflow) and `unpacked` (one document
// per sample). Both follow GPT-NeoX's gpt2_dataset.py.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

namespace neox {

// What both variants read: the corpus, the split's documents and which documents to leave out.
template <typename DocId>
struct DocumentView {
  const int32_t* sizes;     // tokens per document id
  int64_t num_sizes;
  const DocId* documents;   // the split's document ids, in order
  int64_t num_documents;
  const uint8_t* skip;      // per document id: nonzero = never use (may be null)
  int64_t seq_length;
  bool allow_chopped;       // keep documents longer than seq_length + 1 (truncated later)

  // The document id at position i of documents, checked against sizes.
  int64_t document_at(int64_t i) const;
  // Whether the document may be placed in a sample at all.
  bool usable(int64_t doc) const;
  // Whether any document of the split is usable; without one neither variant can finish.
  bool any_usable() const;
};

// pack_until_overflow: walks order (positions into documents, a permutation) and appends
// each usable document to doc_idx, opening a new sample when the running length would pass
// seq_length + 1 (or when nothing is running yet). At the end of order it calls reshuffle(),
// which must permute order in place, and starts over. Stops once num_samples samples are
// open; sample_idx_out gets num_samples + 1 rows of (first position in doc_idx, 0).
template <typename DocId>
void fill_pack_until_overflow(const DocumentView<DocId>& view, int64_t* order,
                              int64_t num_samples, const std::function<void()>& reshuffle,
                              std::vector<int64_t>& doc_idx, int64_t* sample_idx_out);

// unpacked: doc_idx_out gets num_samples + 1 usable documents taken in split order,
// cycling; sample_idx_out gets rows (i, 0).
template <typename DocId>
void fill_unpacked(const DocumentView<DocId>& view, int64_t num_samples, int64_t* doc_idx_out,
                   int64_t* sample_idx_out);

}  // namespace neox
