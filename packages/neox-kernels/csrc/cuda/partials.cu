// The last step of gradients summed in fp32, written in the gradient's dtype:
// - column sums of per-block partial sums: the weight and bias gradients of the norms and of
//   bias-GeLU. One launch covers up to two arrays (a norm's weight and bias), where a sum and a
//   cast per array took four.
// - a scaled copy by a device scalar: linear + cross-entropy's weight gradient, summed in the
//   forward before the loss's gradient is known. torch's multiply by a 0-dim CUDA tensor takes
//   its generic strided kernel (under 1 TB/s on an H100 for an fp32 -> bf16 copy).
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

// dst[i] = src[i] * factor[0], rounded once to Out; dst may be src (fp32 in place): each element
// is read and written by the same thread.
template <typename Out>
__global__ void scale_cast_kernel(const float* src, Out* dst, const float* __restrict__ factor,
                                  int64_t n) {
  const float f = *factor;
  const int64_t packs = n / 4;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  const int64_t first = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  for (int64_t i = first; i < packs; i += stride) {
    const Pack<float, 4> p = load_pack<float, 4>(src, i);
    Pack<Out, 4> o;
#pragma unroll
    for (int k = 0; k < 4; ++k) o.v[k] = from_f<Out>(p.v[k] * f);
    store_pack<Out, 4>(dst, i, o);
  }
  for (int64_t i = packs * 4 + first; i < n; i += stride) dst[i] = from_f<Out>(src[i] * f);
}

}  // namespace

const char* scale_cast(int dtype, const float* src, void* dst, const float* factor, int64_t n,
                       void* stream) {
  if (n == 0) return nullptr;
  if (reinterpret_cast<uintptr_t>(src) % 16 != 0 || reinterpret_cast<uintptr_t>(dst) % 16 != 0)
    return "scale_cast: src and dst must be 16-byte aligned";
  auto s = static_cast<cudaStream_t>(stream);
  const int threads = 256;
  const int blocks = grid_for((n + 3) / 4, threads, sm_count() * 8);
  NEOX_DISPATCH_DTYPE(dtype, {
    scale_cast_kernel<scalar_t><<<blocks, threads, 0, s>>>(src, static_cast<scalar_t*>(dst),
                                                            factor, n);
  });
  return last_error();
}

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
