// Blending index with GPT-NeoX's semantics (megatron/data/helpers.cpp). The error terms must
// round exactly as there, so this file is compiled without floating-point contraction.
#include "blending_index.h"

#include <algorithm>
#include <array>

namespace neox {

namespace {

// Blends of up to this many datasets (nearly all of them) take the unrolled path.
constexpr int64_t kMaxUnrolled = 8;
// Counts are exact as doubles up to 2**53.
constexpr int64_t kExactDoubleCounts = int64_t{1} << 53;

// The unrolled path: weights and counts live in registers, and counts are kept as doubles,
// which spares an int-to-double conversion on the chain from one sample's choice to the
// next sample's errors. Same operations, same rounding, same choices as any_blend.
template <int64_t N>
void unrolled_blend(const double* weights, int64_t size, uint8_t* dataset_index,
                    int64_t* dataset_sample_index, int64_t* counts) {
  std::array<double, N> w{};
  std::array<double, N> taken{};
  for (int64_t d = 0; d < N; ++d) w[d] = weights[d];
  for (int64_t sample = 0; sample < size; ++sample) {
    const double scale = std::max(static_cast<double>(sample), 1.0);
    int64_t best = 0;
    double best_error = w[0] * scale - taken[0];
    for (int64_t d = 1; d < N; ++d) {
      const double error = w[d] * scale - taken[d];
      const bool better = error > best_error;  // strictly: the first dataset wins ties
      best = better ? d : best;
      best_error = better ? error : best_error;
    }
    double before = 0.0;
    for (int64_t d = 0; d < N; ++d) {
      before = d == best ? taken[d] : before;
      taken[d] += d == best ? 1.0 : 0.0;
    }
    dataset_index[sample] = static_cast<uint8_t>(best);
    dataset_sample_index[sample] = static_cast<int64_t>(before);
  }
  for (int64_t d = 0; d < N; ++d) counts[d] = static_cast<int64_t>(taken[d]);
}

void any_blend(const double* weights, int64_t num_datasets, int64_t size,
               uint8_t* dataset_index, int64_t* dataset_sample_index, int64_t* counts) {
  std::fill(counts, counts + num_datasets, int64_t{0});
  for (int64_t sample = 0; sample < size; ++sample) {
    const double scale = std::max(static_cast<double>(sample), 1.0);
    int64_t best = 0;
    double best_error = weights[0] * scale - static_cast<double>(counts[0]);
    for (int64_t d = 1; d < num_datasets; ++d) {
      const double error = weights[d] * scale - static_cast<double>(counts[d]);
      if (error > best_error) {  // strictly: the first dataset wins ties
        best_error = error;
        best = d;
      }
    }
    dataset_index[sample] = static_cast<uint8_t>(best);
    dataset_sample_index[sample] = counts[best];
    ++counts[best];
  }
}

template <int64_t N>
bool try_unrolled(int64_t num_datasets, const double* weights, int64_t size,
                  uint8_t* dataset_index, int64_t* dataset_sample_index, int64_t* counts) {
  if constexpr (N > kMaxUnrolled) {
    return false;
  } else {
    if (num_datasets != N) {
      return try_unrolled<N + 1>(num_datasets, weights, size, dataset_index,
                                 dataset_sample_index, counts);
    }
    unrolled_blend<N>(weights, size, dataset_index, dataset_sample_index, counts);
    return true;
  }
}

}  // namespace

void fill_blending_index(const double* weights, int64_t num_datasets, int64_t size,
                         uint8_t* dataset_index, int64_t* dataset_sample_index,
                         int64_t* counts) {
  if (size <= kExactDoubleCounts &&
      try_unrolled<1>(num_datasets, weights, size, dataset_index, dataset_sample_index,
                      counts)) {
    return;
  }
  any_blend(weights, num_datasets, size, dataset_index, dataset_sample_index, counts);
}

}  // namespace neox
