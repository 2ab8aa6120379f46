// SwiGLU and bias-GeLU (exact erf and tanh forms), forward and backward, elementwise.
#include "common.cuh"

namespace neox {
namespace {

// 1 / (1 + exp(-x)) with the fast reciprocal: exp overflow gives 0 (x -> -inf), as it should.
__device__ __forceinline__ float sigmoid(float x) { return __fdividef(1.f, 1.f + __expf(-x)); }
__device__ __forceinline__ float silu(float x) { return x * sigmoid(x); }

// SwiGLU, and the GeLU backward that also sums the bias gradient, run a 2-D grid over
// [rows, packs of a row] (the GeLU kernels without it run flat, below): thread (x, y) of block
// (bx, by) owns pack column j = bx * blockDim.x + x of U consecutive rows per round, starting at
// row (by * blockDim.y + y) * U. A warp reads 32 consecutive packs of one row (coalesced), the U
// rows' loads are all issued before any arithmetic (U loads in flight per input), no index
// needs a division, and a bias or its gradient belongs to one column per thread.
// U = 2 (the kernels read two or three tensors): 32-48 bytes in flight per thread, with registers
// left for enough resident warps.
constexpr int kRowsMoreInputs = 2;

struct ElementwiseShape {
  dim3 grid, block;
};

// max_row_blocks: the grid's height (rounds stride over the rest); the bias-gradient kernel
// keeps it small because each row of threads writes one row of partial sums.
ElementwiseShape elementwise_shape(int64_t rows, int64_t per_row, int64_t max_row_blocks,
                                   int rows_per_thread) {
  int tx = 32;
  while (tx < 128 && tx < per_row) tx *= 2;
  const int ty = 256 / tx;
  const int64_t col_blocks = (per_row + tx - 1) / tx;
  const int64_t rows_per_block = int64_t(ty) * rows_per_thread;
  int64_t row_blocks = (rows + rows_per_block - 1) / rows_per_block;
  if (row_blocks > max_row_blocks) row_blocks = max_row_blocks;
  if (row_blocks > 65535) row_blocks = 65535;
  if (row_blocks < 1) row_blocks = 1;
  return {dim3(static_cast<unsigned>(col_blocks), static_cast<unsigned>(row_blocks)), dim3(tx, ty)};
}

template <int U>
__device__ __forceinline__ int64_t first_row() {
  return (int64_t(blockIdx.y) * blockDim.y + threadIdx.y) * U;
}
template <int U>
__device__ __forceinline__ int64_t row_step() {
  return int64_t(gridDim.y) * blockDim.y * U;
}
__device__ __forceinline__ int64_t pack_column() {
  return int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
}

template <typename T, int VEC>
__global__ void swiglu_fwd_kernel(const T* __restrict__ h, T* __restrict__ out, int64_t rows,
                                  int64_t inner) {
  constexpr int U = kRowsMoreInputs;
  const int64_t j = pack_column();
  if (j >= inner / VEC) return;
  for (int64_t r0 = first_row<U>(); r0 < rows; r0 += row_step<U>()) {
    Pack<T, VEC> up[U], gate[U];
#pragma unroll
    for (int u = 0; u < U; ++u) {
      if (r0 + u < rows) {
        const T* hr = h + (r0 + u) * 2 * inner;
        up[u] = load_pack<T, VEC>(hr, j);
        gate[u] = load_pack<T, VEC>(hr + inner, j);
      }
    }
#pragma unroll
    for (int u = 0; u < U; ++u) {
      if (r0 + u < rows) {
#pragma unroll
        for (int k = 0; k < VEC; ++k)
          up[u].v[k] = from_f<T>(to_f(up[u].v[k]) * silu(to_f(gate[u].v[k])));
        store_pack<T, VEC>(out + (r0 + u) * inner, j, up[u]);
      }
    }
  }
}

template <typename T, int VEC>
__global__ void swiglu_bwd_kernel(const T* __restrict__ g, const T* __restrict__ h,
                                  T* __restrict__ dh, int64_t rows, int64_t inner) {
  constexpr int U = kRowsMoreInputs;
  const int64_t j = pack_column();
  if (j >= inner / VEC) return;
  for (int64_t r0 = first_row<U>(); r0 < rows; r0 += row_step<U>()) {
    Pack<T, VEC> up[U], gate[U], go[U];
#pragma unroll
    for (int u = 0; u < U; ++u) {
      if (r0 + u < rows) {
        const T* hr = h + (r0 + u) * 2 * inner;
        up[u] = load_pack<T, VEC>(hr, j);
        gate[u] = load_pack<T, VEC>(hr + inner, j);
        go[u] = load_pack<T, VEC>(g + (r0 + u) * inner, j);
      }
    }
#pragma unroll
    for (int u = 0; u < U; ++u) {
      if (r0 + u < rows) {
#pragma unroll
        for (int k = 0; k < VEC; ++k) {
          const float x = to_f(gate[u].v[k]), up_v = to_f(up[u].v[k]), gg = to_f(go[u].v[k]);
          const float sig = sigmoid(x);
          up[u].v[k] = from_f<T>(gg * x * sig);
          gate[u].v[k] = from_f<T>(gg * up_v * sig * (1.f + x * (1.f - sig)));
        }
        T* dr = dh + (r0 + u) * 2 * inner;
        store_pack<T, VEC>(dr, j, up[u]);
        store_pack<T, VEC>(dr + inner, j, gate[u]);
      }
    }
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

// erf(x / sqrt(2)) from e = exp(-x^2 / 2), as 1 - poly(t) * e with t = 1 / (1 + p |x| / sqrt 2)
// (Abramowitz & Stegun 7.1.26, absolute error below 1.5e-7, about erff's own). Both GeLU and
// its gradient need e, so the exact form costs one exp, one reciprocal and five FMAs instead of
// erff's longer polynomial plus an exp: the difference between compute- and memory-bound here.
__device__ __forceinline__ float erf_scaled(float x, float e) {
  const float t = __fdividef(1.f, 1.f + 0.3275911f * kSqrt1_2 * fabsf(x));
  const float poly =
      t * (0.254829592f + t * (-0.284496736f + t * (1.421413741f + t * (-1.453152027f + t * 1.061405429f))));
  return copysignf(1.f - poly * e, x);
}

__device__ __forceinline__ float gelu(float x, bool approximate) {
  if (approximate) return 0.5f * x * (1.f + fast_tanh(kSqrt2OverPi * (x + kTanhCoef * x * x * x)));
  return 0.5f * x * (1.f + erf_scaled(x, __expf(-0.5f * x * x)));
}

__device__ __forceinline__ float gelu_grad(float x, bool approximate) {
  if (approximate) {
    const float t = fast_tanh(kSqrt2OverPi * (x + kTanhCoef * x * x * x));
    return 0.5f * (1.f + t) +
           0.5f * x * (1.f - t * t) * kSqrt2OverPi * (1.f + 3.f * kTanhCoef * x * x);
  }
  const float e = __expf(-0.5f * x * x);
  return 0.5f * (1.f + erf_scaled(x, e)) + x * kInvSqrt2Pi * e;
}

// GeLU forward, and its backward when no bias gradient is asked: one pack per thread over the
// flat tensor, the layout of torch's own elementwise kernels, which measured faster here than
// the row layout above (H200, exact GeLU of 16384 x 16384 bf16, forward: 0.391 ms in rows, 0.340
// flat; torch's own 0.348). The bias column is the pack's index modulo the packs of a row.
template <typename T, int VEC>
__global__ void bias_gelu_fwd_kernel(const T* __restrict__ x, const T* __restrict__ bias,
                                     T* __restrict__ out, int64_t packs, int64_t per_row,
                                     bool approximate) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t p = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; p < packs; p += stride) {
    Pack<T, VEC> px = load_pack<T, VEC>(x, p), pb;
    if (bias != nullptr) pb = load_pack<T, VEC>(bias, p % per_row);
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
__global__ void bias_gelu_bwd_flat_kernel(const T* __restrict__ g, const T* __restrict__ x,
                                          const T* __restrict__ bias, T* __restrict__ dx,
                                          int64_t packs, int64_t per_row, bool approximate) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t p = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; p < packs; p += stride) {
    Pack<T, VEC> px = load_pack<T, VEC>(x, p), pb;
    const Pack<T, VEC> pg = load_pack<T, VEC>(g, p);
    if (bias != nullptr) pb = load_pack<T, VEC>(bias, p % per_row);
#pragma unroll
    for (int k = 0; k < VEC; ++k) {
      float v = to_f(px.v[k]);
      if (bias != nullptr) v += to_f(pb.v[k]);
      px.v[k] = from_f<T>(to_f(pg.v[k]) * gelu_grad(v, approximate));
    }
    store_pack<T, VEC>(dx, p, px);
  }
}

constexpr int kFlatThreads = 256;

int flat_blocks(int64_t packs) {
  const int64_t blocks = (packs + kFlatThreads - 1) / kFlatThreads;
  return static_cast<int>(blocks < (int64_t(1) << 30) ? (blocks > 0 ? blocks : 1) : (int64_t(1) << 30));
}

// dx = g * gelu'(x + bias) and the bias gradient's partial sums, in the row layout: row
// by * blockDim.y + y of part_db [gridDim.y * blockDim.y, cols] holds the column sums of dx
// (as rounded to T, what autograd would sum) over the rows that thread row visited.
template <typename T, int VEC>
__global__ void bias_gelu_bwd_db_kernel(const T* __restrict__ g, const T* __restrict__ x,
                                     const T* __restrict__ bias, T* __restrict__ dx,
                                     float* __restrict__ part_db, int64_t rows, int64_t cols,
                                     bool approximate) {
  constexpr int U = kRowsMoreInputs;
  const int64_t j = pack_column();
  if (j >= cols / VEC) return;
  Pack<T, VEC> pb;
  if (bias != nullptr) pb = load_pack<T, VEC>(bias, j);
  float db[VEC];
#pragma unroll
  for (int k = 0; k < VEC; ++k) db[k] = 0.f;
  for (int64_t r0 = first_row<U>(); r0 < rows; r0 += row_step<U>()) {
    Pack<T, VEC> px[U], pg[U];
#pragma unroll
    for (int u = 0; u < U; ++u) {
      if (r0 + u < rows) {
        px[u] = load_pack<T, VEC>(x + (r0 + u) * cols, j);
        pg[u] = load_pack<T, VEC>(g + (r0 + u) * cols, j);
      }
    }
#pragma unroll
    for (int u = 0; u < U; ++u) {
      if (r0 + u < rows) {
#pragma unroll
        for (int k = 0; k < VEC; ++k) {
          float v = to_f(px[u].v[k]);
          if (bias != nullptr) v += to_f(pb.v[k]);
          px[u].v[k] = from_f<T>(to_f(pg[u].v[k]) * gelu_grad(v, approximate));
          db[k] += to_f(px[u].v[k]);
        }
        store_pack<T, VEC>(dx + (r0 + u) * cols, j, px[u]);
      }
    }
  }
  float* out = part_db + (int64_t(blockIdx.y) * blockDim.y + threadIdx.y) * cols + j * VEC;
#pragma unroll
  for (int k = 0; k < VEC; ++k) out[k] = db[k];
}

// Height of the bias-gradient kernel's grid: about one resident wave of blocks, so that the
// partial sums stay a few rows per SM.
int64_t bias_grad_row_blocks(int64_t rows, int64_t per_row) {
  const ElementwiseShape s = elementwise_shape(rows, per_row, 1 << 30, kRowsMoreInputs);
  const int64_t wave = int64_t(sm_count()) * (2048 / (s.block.x * s.block.y));
  int64_t most = wave / s.grid.x;
  return most < 1 ? 1 : most;
}

constexpr int64_t kNoLimit = int64_t(1) << 40;

}  // namespace

const char* swiglu_forward(int dtype, const void* h, void* out, int64_t rows, int64_t inner,
                           void* stream) {
  if (rows * inner == 0) return nullptr;
  auto s = static_cast<cudaStream_t>(stream);
  NEOX_DISPATCH_DTYPE(dtype, {
    constexpr int vec = 16 / sizeof(scalar_t);
    auto hp = static_cast<const scalar_t*>(h);
    auto op = static_cast<scalar_t*>(out);
    if (can_vectorize<scalar_t>(inner, {h, out})) {
      const auto e = elementwise_shape(rows, inner / vec, kNoLimit, kRowsMoreInputs);
      swiglu_fwd_kernel<scalar_t, vec><<<e.grid, e.block, 0, s>>>(hp, op, rows, inner);
    } else {
      const auto e = elementwise_shape(rows, inner, kNoLimit, kRowsMoreInputs);
      swiglu_fwd_kernel<scalar_t, 1><<<e.grid, e.block, 0, s>>>(hp, op, rows, inner);
    }
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
    if (can_vectorize<scalar_t>(inner, {grad_out, h, grad_h})) {
      const auto e = elementwise_shape(rows, inner / vec, kNoLimit, kRowsMoreInputs);
      swiglu_bwd_kernel<scalar_t, vec><<<e.grid, e.block, 0, s>>>(gp, hp, dp, rows, inner);
    } else {
      const auto e = elementwise_shape(rows, inner, kNoLimit, kRowsMoreInputs);
      swiglu_bwd_kernel<scalar_t, 1><<<e.grid, e.block, 0, s>>>(gp, hp, dp, rows, inner);
    }
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
    if (can_vectorize<scalar_t>(cols, {x, bias, out})) {
      const int64_t packs = rows * cols / vec;
      bias_gelu_fwd_kernel<scalar_t, vec><<<flat_blocks(packs), kFlatThreads, 0, s>>>(
          xp, bp, op, packs, cols / vec, approximate);
    } else {
      bias_gelu_fwd_kernel<scalar_t, 1><<<flat_blocks(rows * cols), kFlatThreads, 0, s>>>(
          xp, bp, op, rows * cols, cols, approximate);
    }
  });
  return last_error();
}

namespace {

// The backward's launch: vectorised when cols and every pointer allow; with the bias gradient,
// a grid about one resident wave high (each row of threads writes one row of partial sums).
template <typename T>
ElementwiseShape bias_gelu_bwd_shape(int64_t rows, int64_t cols, bool bias_grad, bool* wide,
                                     std::initializer_list<const void*> ptrs) {
  constexpr int vec = 16 / sizeof(T);
  *wide = can_vectorize<T>(cols, ptrs);
  const int64_t per_row = *wide ? cols / vec : cols;
  return elementwise_shape(rows, per_row, bias_grad ? bias_grad_row_blocks(rows, per_row) : kNoLimit,
                           kRowsMoreInputs);
}

}  // namespace

int bias_gelu_backward_partials(int dtype, const void* grad_out, const void* x, const void* bias,
                                const void* grad_x, int64_t rows, int64_t cols) {
  if (rows * cols == 0) return 0;  // no partial rows: the bias gradient sums to zeros
  bool wide = false;
  ElementwiseShape e{};
  switch (dtype) {
    case kFloat32: e = bias_gelu_bwd_shape<float>(rows, cols, true, &wide, {grad_out, x, bias, grad_x}); break;
    case kFloat16: e = bias_gelu_bwd_shape<__half>(rows, cols, true, &wide, {grad_out, x, bias, grad_x}); break;
    default: e = bias_gelu_bwd_shape<__nv_bfloat16>(rows, cols, true, &wide, {grad_out, x, bias, grad_x});
  }
  return static_cast<int>(e.grid.y * e.block.y);
}

const char* bias_gelu_backward(int dtype, const void* grad_out, const void* x, const void* bias,
                               void* grad_x, float* partial_db, int partials, int64_t rows,
                               int64_t cols, bool approximate, void* stream) {
  if (rows * cols == 0) return nullptr;
  auto s = static_cast<cudaStream_t>(stream);
  NEOX_DISPATCH_DTYPE(dtype, {
    constexpr int vec = 16 / sizeof(scalar_t);
    auto gp = static_cast<const scalar_t*>(grad_out);
    auto xp = static_cast<const scalar_t*>(x);
    auto bp = static_cast<const scalar_t*>(bias);
    auto dp = static_cast<scalar_t*>(grad_x);
    bool wide = false;
    const auto e = bias_gelu_bwd_shape<scalar_t>(rows, cols, partial_db != nullptr, &wide,
                                                 {grad_out, x, bias, grad_x});
    if (partial_db != nullptr && static_cast<int64_t>(e.grid.y) * e.block.y != partials)
      return "bias_gelu_backward: partial_db rows differ from bias_gelu_backward_partials";
    if (partial_db == nullptr) {
      const int64_t packs = wide ? rows * cols / vec : rows * cols, per_row = wide ? cols / vec : cols;
      if (wide)
        bias_gelu_bwd_flat_kernel<scalar_t, vec><<<flat_blocks(packs), kFlatThreads, 0, s>>>(
            gp, xp, bp, dp, packs, per_row, approximate);
      else
        bias_gelu_bwd_flat_kernel<scalar_t, 1><<<flat_blocks(packs), kFlatThreads, 0, s>>>(
            gp, xp, bp, dp, packs, per_row, approximate);
    } else if (wide) {
      bias_gelu_bwd_db_kernel<scalar_t, vec><<<e.grid, e.block, 0, s>>>(gp, xp, bp, dp, partial_db,
                                                                       rows, cols, approximate);
    } else {
      bias_gelu_bwd_db_kernel<scalar_t, 1><<<e.grid, e.block, 0, s>>>(gp, xp, bp, dp, partial_db,
                                                                     rows, cols, approximate);
    }
  });
  return last_error();
}

}  // namespace neox
