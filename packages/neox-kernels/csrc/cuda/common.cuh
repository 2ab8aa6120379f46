// Shared helpers of the fused kernels: dtype dispatch, fp32 conversion, block reductions.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <initializer_list>

#include "launchers.h"

namespace neox {

__device__ __forceinline__ float to_f(float v) { return v; }
__device__ __forceinline__ float to_f(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_f(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename T>
__device__ __forceinline__ T from_f(float v);
template <>
__device__ __forceinline__ float from_f<float>(float v) { return v; }
template <>
__device__ __forceinline__ __half from_f<__half>(float v) { return __float2half_rn(v); }
template <>
__device__ __forceinline__ __nv_bfloat16 from_f<__nv_bfloat16>(float v) {
  return __float2bfloat16_rn(v);
}

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, offset));
  return v;
}

// Sum over the block; every thread gets the result. `scratch` holds 32 floats.
__device__ __forceinline__ float block_sum(float v, float* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int warps = (blockDim.x + 31) >> 5;
  v = warp_sum(v);
  __syncthreads();  // scratch may still be read by a previous reduction
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  v = lane < warps ? scratch[lane] : 0.f;
  return warp_sum(v);
}

// Runs `fn.template operator()<T>()` for the dtype code (0 fp32, 1 fp16, 2 bf16).
#define NEOX_DISPATCH_DTYPE(code, ...)                                   \
  switch (code) {                                                        \
    case kFloat32: { using scalar_t = float; __VA_ARGS__; break; }       \
    case kFloat16: { using scalar_t = __half; __VA_ARGS__; break; }      \
    case kBFloat16: { using scalar_t = __nv_bfloat16; __VA_ARGS__; break; } \
    default: return "unsupported dtype code";                            \
  }

inline const char* last_error() {
  cudaError_t err = cudaGetLastError();
  return err == cudaSuccess ? nullptr : cudaGetErrorString(err);
}

inline int grid_for(int64_t work, int threads, int max_blocks) {
  int64_t blocks = (work + threads - 1) / threads;
  if (blocks > max_blocks) blocks = max_blocks;
  return blocks < 1 ? 1 : static_cast<int>(blocks);
}

inline int sm_count() {
  int device = 0, count = 0;
  cudaGetDevice(&device);
  cudaDeviceGetAttribute(&count, cudaDevAttrMultiProcessorCount, device);
  return count > 0 ? count : 80;
}

}  // namespace neox

namespace neox {

// VEC consecutive elements moved as one access (16 bytes when VEC * sizeof(T) == 16).
template <typename T, int VEC>
struct alignas(sizeof(T) * VEC) Pack {
  T v[VEC];
};

template <typename T, int VEC>
__device__ __forceinline__ Pack<T, VEC> load_pack(const T* base, int64_t pack) {
  return reinterpret_cast<const Pack<T, VEC>*>(base)[pack];
}

template <typename T, int VEC>
__device__ __forceinline__ void store_pack(T* base, int64_t pack, const Pack<T, VEC>& p) {
  reinterpret_cast<Pack<T, VEC>*>(base)[pack] = p;
}

// The widest pack (16 bytes) when every pointer is 16-byte aligned and n divides evenly.
template <typename T>
inline bool can_vectorize(int64_t n, std::initializer_list<const void*> ptrs) {
  constexpr int vec = 16 / sizeof(T);
  if (n % vec != 0) return false;
  for (const void* p : ptrs)
    if (p != nullptr && reinterpret_cast<uintptr_t>(p) % 16 != 0) return false;
  return true;
}

}  // namespace neox
