// Column sums of per-block partial sums, written in the gradient's dtype: the last step of the
// weight and bias gradients of the norms and of bias-GeLU. One launch covers up to two arrays
// (a norm's weight and bias), where a sum and a cast per array took four.
#include "common.cuh"

namespace neox {
namespace {

constexpr int kCols = 32;    // columns per block: a warp reads 128 contiguous bytes of a row
constexpr int kLanes = 32;   // rows read side by side per column, combined in shared memory
constexpr int kUnroll = 8;   // loads in flight per thread

template <typename T>
__global__ void __launch_bounds__(kCols * kLanes)
    sum_partials_kernel(const float* __restrict__ a, T* __restrict__ out_a,
                        const float* __restrict__ b, T* __restrict__ out_b, int partials,
                        int64_t cols) {
  __shared__ float tile[kLanes][kCols + 1];
  const float* src = blockIdx.y == 0 ? a : b;
  T* dst = blockIdx.y == 0 ? out_a : out_b;
  const int64_t c = static_cast<int64_t>(blockIdx.x) * kCols + threadIdx.x;
  float s = 0.f;
  if (c < cols) {
    for (int r0 = threadIdx.y; r0 < partials; r0 += kLanes * kUnroll) {
      float v[kUnroll];
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        const int r = r0 + u * kLanes;
        v[u] = r < partials ? src[static_cast<int64_t>(r) * cols + c] : 0.f;
      }
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) s += v[u];
    }
  }
  tile[threadIdx.y][threadIdx.x] = s;
  __syncthreads();
  if (threadIdx.y == 0 && c < cols) {
    float total = 0.f;
#pragma unroll
    for (int y = 0; y < kLanes; ++y) total += tile[y][threadIdx.x];
    dst[c] = from_f<T>(total);
  }
}

}  // namespace

const char* sum_partials(int dtype, const float* a, void* out_a, const float* b, void* out_b,
                         int partials, int64_t cols, void* stream) {
  if (a == nullptr) {  // only b: it takes a's place
    a = b;
    out_a = out_b;
    b = nullptr;
    out_b = nullptr;
  }
  if (a == nullptr || cols == 0) return nullptr;
  if (partials < 1) return "sum_partials: no partial rows";
  const dim3 grid(static_cast<unsigned>((cols + kCols - 1) / kCols), b != nullptr ? 2 : 1);
  const dim3 block(kCols, kLanes);
  auto s = static_cast<cudaStream_t>(stream);
  NEOX_DISPATCH_DTYPE(dtype, {
    sum_partials_kernel<scalar_t><<<grid, block, 0, s>>>(
        a, static_cast<scalar_t*>(out_a), b, static_cast<scalar_t*>(out_b), partials, cols);
  });
  return last_error();
}

}  // namespace neox
