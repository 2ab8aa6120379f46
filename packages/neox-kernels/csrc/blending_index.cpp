// Blending index with GPT-NeoX's semantics (megatron/data/helpers.cpp). The error terms must
// round exactly as there, so this file is compiled without floating-point contraction.
#include "blending_index.h"

#include <algorithm>

namespace neox {

void fill_blending_index(const double* weights, int64_t num_datasets, int64_t size,
                         uint8_t* dataset_index, int64_t* dataset_sample_index,
                         int64_t* counts) {
  std::fill(counts, counts + num_datasets, int64_t{0});
  for (int64_t sample = 0; sample < size; ++sample) {
    const double scale = std::max(static_cast<double>(sample), 1.0);
    int64_t best = 0;
    double best_error = weights[0] * scale - static_cast<double>(counts[0]);
    for (int64_t d = 1; d < num_datasets; ++d) {
      const double error = weights[d] * scale - static_cast<double>(counts[d]);
      if (error > best_error) {
        best_error = error;
        best = d;
      }
    }
    dataset_index[sample] = static_cast<uint8_t>(best);
    dataset_sample_index[sample] = counts[best];
    ++counts[best];
  }
}

}  // namespace neox
