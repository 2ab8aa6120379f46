// SwiGLU and bias-GeLU (exact erf and tanh forms), forward and backward, elementwise.
#include "common.cuh"

namespace neox {
namespace {

// 1 / (1 + exp(-x)) with the fast reciprocal: exp overflow gives 0 (x -> -inf), as it should.
__device__ __forceinline__ float sigmoid(float x) { return __fdividef(1.f, 1.f + __expf(-x)); }
__device__ __forceinline__ float silu(float x) { return x * sigmoid(x); }

// Row/column of flat pack index p (p = r * per_row + j, 0 <= j < per_row), advanced by a
// grid-stride step without a 64-bit division per element.
struct RowCursor {
  int64_t r, j, dr, dj, per_row;
  __device__ __forceinline__ RowCursor(int64_t p, int64_t stride, int64_t per_row_)
      : per_row(per_row_) {
    r = p / per_row;
    j = p - r * per_row;
    dr = stride / per_row;
    dj = stride - dr * per_row;
  }
  __device__ __forceinline__ void advance() {
    r += dr;
    j += dj;
    if (j >= per_row) {
      j -= per_row;
      ++r;
    }
  }
};

template <typename T, int VEC>
__global__ void swiglu_fwd_kernel(const T* __restrict__ h, T* __restrict__ out, int64_t rows,
                                  int64_t inner) {
  const int64_t packs_per_row = inner / VEC, total = rows * packs_per_row;
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  int64_t p = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  for (RowCursor c(p, stride, packs_per_row); p < total; p += stride, c.advance()) {
    const int64_t r = c.r, j = c.j;
    const T* hr = h + r * 2 * inner;
    Pack<T, VEC> up = load_pack<T, VEC>(hr, j), gate = load_pack<T, VEC>(hr + inner, j);
#pragma unroll
    for (int k = 0; k < VEC; ++k) up.v[k] = from_f<T>(to_f(up.v[k]) * silu(to_f(gate.v[k])));
    store_pack<T, VEC>(out + r * inner, j, up);
  }
}

template <typename T, int VEC>
__global__ void swiglu_bwd_kernel(const T* __restrict__ g, const T* __restrict__ h,
                                  T* __restrict__ dh, int64_t rows, int64_t inner) {
  const int64_t packs_per_row = inner / VEC, total = rows * packs_per_row;
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  int64_t p = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  for (RowCursor c(p, stride, packs_per_row); p < total; p += stride, c.advance()) {
    const int64_t r = c.r, j = c.j;
    const T* hr = h + r * 2 * inner;
    T* dr = dh + r * 2 * inner;
    Pack<T, VEC> up = load_pack<T, VEC>(hr, j), gate = load_pack<T, VEC>(hr + inner, j);
    const Pack<T, VEC> go = load_pack<T, VEC>(g + r * inner, j);
#pragma unroll
    for (int k = 0; k < VEC; ++k) {
      const float x = to_f(gate.v[k]), u = to_f(up.v[k]), gg = to_f(go.v[k]);
      const float sig = sigmoid(x);
      const float sl = x * sig;
      up.v[k] = from_f<T>(gg * sl);
      gate.v[k] = from_f<T>(gg * u * sig * (1.f + x * (1.f - sig)));
    }
    store_pack<T, VEC>(dr, j, up);
    store_pack<T, VEC>(dr + inner, j, gate);
  }
}

constexpr float kSqrt1_2 = 0.70710678118654752f;
constexpr float kInvSqrt2Pi = 0.39894228040143268f;
constexpr float kSqrt2OverPi = 0.79788456080286536f;
constexpr float kTanhCoef = 0.044715f;

// tanh(u) = 1 - 2 / (exp(2u) + 1): exactly +-1 where exp over/underflows; its absolute error
// (~1e-7) is what matters here, as it enters only through 1 + t and 1 - t^2.
__device__ __forceinline__ float fast_tanh(float u) {
  return 1.f - __fdividef(2.f, __expf(2.f * u) + 1.f);
}

__device__ __forceinline__ float gelu(float x, bool approximate) {
  if (approximate) return 0.5f * x * (1.f + fast_tanh(kSqrt2OverPi * (x + kTanhCoef * x * x * x)));
  return 0.5f * x * (1.f + erff(x * kSqrt1_2));
}

__device__ __forceinline__ float gelu_grad(float x, bool approximate) {
  if (approximate) {
    const float t = fast_tanh(kSqrt2OverPi * (x + kTanhCoef * x * x * x));
    return 0.5f * (1.f + t) +
           0.5f * x * (1.f - t * t) * kSqrt2OverPi * (1.f + 3.f * kTanhCoef * x * x);
  }
  return 0.5f * (1.f + erff(x * kSqrt1_2)) + x * kInvSqrt2Pi * __expf(-0.5f * x * x);
}

template <typename T, int VEC>
__global__ void bias_gelu_fwd_kernel(const T* __restrict__ x, const T* __restrict__ bias,
                                     T* __restrict__ out, int64_t rows, int64_t cols,
                                     bool approximate) {
  const int64_t packs_per_row = cols / VEC, total = rows * packs_per_row;
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  int64_t p = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  for (RowCursor c(p, stride, packs_per_row); p < total; p += stride, c.advance()) {
    Pack<T, VEC> px = load_pack<T, VEC>(x, p), pb;
    if (bias != nullptr) pb = load_pack<T, VEC>(bias, c.j);
#pragma unroll
    for (int k = 0; k < VEC; ++k) {
      float v = to_f(px.v[k]);
      if (bias != nullptr) v += to_f(pb.v[k]);
      px.v[k] = from_f<T>(gelu(v, approximate));
    }
    store_pack<T, VEC>(out, p, px);
  }
}

template <typename T, int VEC>
__global__ void bias_gelu_bwd_kernel(const T* __restrict__ g, const T* __restrict__ x,
                                     const T* __restrict__ bias, T* __restrict__ dx, int64_t rows,
                                     int64_t cols, bool approximate) {
  const int64_t packs_per_row = cols / VEC, total = rows * packs_per_row;
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  int64_t p = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  for (RowCursor c(p, stride, packs_per_row); p < total; p += stride, c.advance()) {
    Pack<T, VEC> px = load_pack<T, VEC>(x, p), pb;
    const Pack<T, VEC> pg = load_pack<T, VEC>(g, p);
    if (bias != nullptr) pb = load_pack<T, VEC>(bias, c.j);
#pragma unroll
    for (int k = 0; k < VEC; ++k) {
      float v = to_f(px.v[k]);
      if (bias != nullptr) v += to_f(pb.v[k]);
      px.v[k] = from_f<T>(to_f(pg.v[k]) * gelu_grad(v, approximate));
    }
    store_pack<T, VEC>(dx, p, px);
  }
}

constexpr int kThreads = 256;

int elementwise_blocks(int64_t packs) { return grid_for(packs, kThreads, sm_count() * 8); }

}  // namespace

const char* swiglu_forward(int dtype, const void* h, void* out, int64_t rows, int64_t inner,
                           void* stream) {
  if (rows * inner == 0) return nullptr;
  auto s = static_cast<cudaStream_t>(stream);
  NEOX_DISPATCH_DTYPE(dtype, {
    constexpr int vec = 16 / sizeof(scalar_t);
    auto hp = static_cast<const scalar_t*>(h);
    auto op = static_cast<scalar_t*>(out);
    if (can_vectorize<scalar_t>(inner, {h, out}))
      swiglu_fwd_kernel<scalar_t, vec>
          <<<elementwise_blocks(rows * inner / vec), kThreads, 0, s>>>(hp, op, rows, inner);
    else
      swiglu_fwd_kernel<scalar_t, 1>
          <<<elementwise_blocks(rows * inner), kThreads, 0, s>>>(hp, op, rows, inner);
  });
  return last_error();
}

const char* swiglu_backward(int dtype, const void* grad_out, const void* h, void* grad_h,
                            int64_t rows, int64_t inner, void* stream) {
  if (rows * inner == 0) return nullptr;
  auto s = static_cast<cudaStream_t>(stream);
  NEOX_DISPATCH_DTYPE(dtype, {
    constexpr int vec = 16 / sizeof(scalar_t);
    auto gp = static_cast<const scalar_t*>(grad_out);
    auto hp = static_cast<const scalar_t*>(h);
    auto dp = static_cast<scalar_t*>(grad_h);
    if (can_vectorize<scalar_t>(inner, {grad_out, h, grad_h}))
      swiglu_bwd_kernel<scalar_t, vec>
          <<<elementwise_blocks(rows * inner / vec), kThreads, 0, s>>>(gp, hp, dp, rows, inner);
    else
      swiglu_bwd_kernel<scalar_t, 1>
          <<<elementwise_blocks(rows * inner), kThreads, 0, s>>>(gp, hp, dp, rows, inner);
  });
  return last_error();
}

const char* bias_gelu_forward(int dtype, const void* x, const void* bias, void* out, int64_t rows,
                              int64_t cols, bool approximate, void* stream) {
  if (rows * cols == 0) return nullptr;
  auto s = static_cast<cudaStream_t>(stream);
  NEOX_DISPATCH_DTYPE(dtype, {
    constexpr int vec = 16 / sizeof(scalar_t);
    auto xp = static_cast<const scalar_t*>(x);
    auto bp = static_cast<const scalar_t*>(bias);
    auto op = static_cast<scalar_t*>(out);
    if (can_vectorize<scalar_t>(cols, {x, bias, out}))
      bias_gelu_fwd_kernel<scalar_t, vec><<<elementwise_blocks(rows * cols / vec), kThreads, 0,
                                            s>>>(xp, bp, op, rows, cols, approximate);
    else
      bias_gelu_fwd_kernel<scalar_t, 1><<<elementwise_blocks(rows * cols), kThreads, 0, s>>>(
          xp, bp, op, rows, cols, approximate);
  });
  return last_error();
}

const char* bias_gelu_backward(int dtype, const void* grad_out, const void* x, const void* bias,
                               void* grad_x, int64_t rows, int64_t cols, bool approximate,
                               void* stream) {
  if (rows * cols == 0) return nullptr;
  auto s = static_cast<cudaStream_t>(stream);
  NEOX_DISPATCH_DTYPE(dtype, {
    constexpr int vec = 16 / sizeof(scalar_t);
    auto gp = static_cast<const scalar_t*>(grad_out);
    auto xp = static_cast<const scalar_t*>(x);
    auto bp = static_cast<const scalar_t*>(bias);
    auto dp = static_cast<scalar_t*>(grad_x);
    if (can_vectorize<scalar_t>(cols, {grad_out, x, bias, grad_x}))
      bias_gelu_bwd_kernel<scalar_t, vec><<<elementwise_blocks(rows * cols / vec), kThreads, 0,
                                            s>>>(gp, xp, bp, dp, rows, cols, approximate);
    else
      bias_gelu_bwd_kernel<scalar_t, 1><<<elementwise_blocks(rows * cols), kThreads, 0, s>>>(
          gp, xp, bp, dp, rows, cols, approximate);
  });
  return last_error();
}

}  // namespace neox
