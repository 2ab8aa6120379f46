// The blending index: which dataset of a weighted mix feeds each sample.
#pragma once

#include <cstdint>

namespace neox {

// Greedy largest-error-first assignment, as GPT-NeoX's BlendableDataset: sample i goes to
// the dataset whose weight * max(i, 1) - samples_taken_so_far is largest (the first such
// on ties). Writes the dataset id and that dataset's running sample number for each of the
// size samples, and the final number of samples taken from each dataset to counts.
// weights must already be normalised; needs no Python: call it without the GIL.
void fill_blending_index(const double* weights, int64_t num_datasets, int64_t size,
                         uint8_t* dataset_index, int64_t* dataset_sample_index,
                         int64_t* counts);

}  // namespace neox
