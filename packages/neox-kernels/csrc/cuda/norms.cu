// RMSNorm / LayerNorm forward and backward, with the residual add fused in front.
// One block per row; fp32 statistics; the row is re-read from L1/L2 rather than kept.
#include "common.cuh"

namespace neox {
namespace {

template <typename T, int VEC, bool RMS>
__global__ void norm_fwd_kernel(const T* __restrict__ x, const T* __restrict__ res,
                                const T* __restrict__ w, const T* __restrict__ b,
                                T* __restrict__ out, T* __restrict__ res_out,
                                float* __restrict__ mean_out, float* __restrict__ rstd_out,
                                int64_t hidden, float eps) {
  __shared__ float scratch[32];
  const int64_t row = blockIdx.x;
  const int64_t packs = hidden / VEC;
  const T* xr = x + row * hidden;
  const T* src = xr;
  float s = 0.f, ss = 0.f;
  if (res != nullptr) {
    const T* rr = res + row * hidden;
    T* ro = res_out + row * hidden;
    for (int64_t i = threadIdx.x; i < packs; i += blockDim.x) {
      Pack<T, VEC> px = load_pack<T, VEC>(xr, i), pr = load_pack<T, VEC>(rr, i);
#pragma unroll
      for (int k = 0; k < VEC; ++k) {
        px.v[k] = from_f<T>(to_f(px.v[k]) + to_f(pr.v[k]));  // the residual stream's rounding
        const float v = to_f(px.v[k]);
        s += v;
        ss += v * v;
      }
      store_pack<T, VEC>(ro, i, px);
    }
    src = ro;
  } else {
    for (int64_t i = threadIdx.x; i < packs; i += blockDim.x) {
      Pack<T, VEC> px = load_pack<T, VEC>(xr, i);
#pragma unroll
      for (int k = 0; k < VEC; ++k) {
        const float v = to_f(px.v[k]);
        s += v;
        ss += v * v;
      }
    }
  }
  float mean = 0.f, var;
  if (RMS) {
    var = block_sum(ss, scratch) / hidden;
  } else {
    mean = block_sum(s, scratch) / hidden;
    float d2 = 0.f;  // second pass: no cancellation when |mean| >> std
    for (int64_t i = threadIdx.x; i < packs; i += blockDim.x) {
      Pack<T, VEC> px = load_pack<T, VEC>(src, i);
#pragma unroll
      for (int k = 0; k < VEC; ++k) {
        const float d = to_f(px.v[k]) - mean;
        d2 += d * d;
      }
    }
    var = block_sum(d2, scratch) / hidden;
  }
  const float rstd = rsqrtf(var + eps);
  if (threadIdx.x == 0) {
    rstd_out[row] = rstd;
    if (!RMS) mean_out[row] = mean;
  }
  T* orow = out + row * hidden;
  for (int64_t i = threadIdx.x; i < packs; i += blockDim.x) {
    Pack<T, VEC> px = load_pack<T, VEC>(src, i);
    Pack<T, VEC> pw, pb;
    if (w != nullptr) pw = load_pack<T, VEC>(w, i);
    if (b != nullptr) pb = load_pack<T, VEC>(b, i);
#pragma unroll
    for (int k = 0; k < VEC; ++k) {
      float y = (to_f(px.v[k]) - mean) * rstd;
      if (w != nullptr) y *= to_f(pw.v[k]);
      if (b != nullptr) y += to_f(pb.v[k]);
      px.v[k] = from_f<T>(y);
    }
    store_pack<T, VEC>(orow, i, px);
  }
}

// Grid-stride over rows; each thread owns the same columns in every row, so the per-block
// weight/bias gradient sums live in shared memory without atomics.
template <typename T, int VEC, bool RMS>
__global__ void norm_bwd_kernel(const T* __restrict__ dy, const T* __restrict__ dres,
                                const T* __restrict__ x, const T* __restrict__ w,
                                const float* __restrict__ mean_in, const float* __restrict__ rstd_in,
                                T* __restrict__ dx, float* __restrict__ part_dw,
                                float* __restrict__ part_db, int64_t rows, int64_t hidden) {
  extern __shared__ float smem[];
  __shared__ float scratch[32];
  float* sdw = smem;
  float* sdb = smem + hidden;
  const int64_t packs = hidden / VEC;
  for (int64_t c = threadIdx.x; c < hidden; c += blockDim.x) {
    if (part_dw != nullptr) sdw[c] = 0.f;
    if (part_db != nullptr) sdb[c] = 0.f;
  }
  __syncthreads();
  for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
    const T* xr = x + row * hidden;
    const T* gr = dy + row * hidden;
    const float rstd = rstd_in[row];
    const float mean = RMS ? 0.f : mean_in[row];
    float s_wdy_xhat = 0.f, s_wdy = 0.f;
    for (int64_t i = threadIdx.x; i < packs; i += blockDim.x) {
      Pack<T, VEC> px = load_pack<T, VEC>(xr, i), pg = load_pack<T, VEC>(gr, i), pw;
      if (w != nullptr) pw = load_pack<T, VEC>(w, i);
#pragma unroll
      for (int k = 0; k < VEC; ++k) {
        const float xhat = (to_f(px.v[k]) - mean) * rstd;
        const float g = to_f(pg.v[k]);
        const float wdy = w != nullptr ? g * to_f(pw.v[k]) : g;
        s_wdy_xhat += wdy * xhat;
        s_wdy += wdy;
        const int64_t c = i * VEC + k;
        if (part_dw != nullptr) sdw[c] += g * xhat;
        if (part_db != nullptr) sdb[c] += g;
      }
    }
    const float c1 = block_sum(s_wdy_xhat, scratch) / hidden;
    const float c2 = RMS ? 0.f : block_sum(s_wdy, scratch) / hidden;
    T* dxr = dx + row * hidden;
    const T* drr = dres != nullptr ? dres + row * hidden : nullptr;
    for (int64_t i = threadIdx.x; i < packs; i += blockDim.x) {
      Pack<T, VEC> px = load_pack<T, VEC>(xr, i), pg = load_pack<T, VEC>(gr, i), pw, pr;
      if (w != nullptr) pw = load_pack<T, VEC>(w, i);
      if (drr != nullptr) pr = load_pack<T, VEC>(drr, i);
#pragma unroll
      for (int k = 0; k < VEC; ++k) {
        const float xhat = (to_f(px.v[k]) - mean) * rstd;
        const float g = to_f(pg.v[k]);
        const float wdy = w != nullptr ? g * to_f(pw.v[k]) : g;
        float d = rstd * (wdy - c2 - xhat * c1);
        if (drr != nullptr) d += to_f(pr.v[k]);
        px.v[k] = from_f<T>(d);
      }
      store_pack<T, VEC>(dxr, i, px);
    }
  }
  __syncthreads();
  for (int64_t c = threadIdx.x; c < hidden; c += blockDim.x) {
    if (part_dw != nullptr) part_dw[blockIdx.x * hidden + c] = sdw[c];
    if (part_db != nullptr) part_db[blockIdx.x * hidden + c] = sdb[c];
  }
}

int threads_for(int64_t packs) {
  int t = 32;
  while (t < 1024 && t * 2 <= packs) t *= 2;
  return t;
}

template <typename T, int VEC>
const char* launch_fwd(bool rms, const void* x, const void* res, const void* w, const void* b,
                       void* out, void* res_out, float* mean, float* rstd, int64_t rows,
                       int64_t hidden, float eps, cudaStream_t stream) {
  const int threads = threads_for(hidden / VEC);
  auto args = [&](auto kernel) {
    kernel<<<static_cast<unsigned>(rows), threads, 0, stream>>>(
        static_cast<const T*>(x), static_cast<const T*>(res), static_cast<const T*>(w),
        static_cast<const T*>(b), static_cast<T*>(out), static_cast<T*>(res_out), mean, rstd,
        hidden, eps);
  };
  if (rms)
    args(norm_fwd_kernel<T, VEC, true>);
  else
    args(norm_fwd_kernel<T, VEC, false>);
  return last_error();
}

template <typename T, int VEC>
const char* launch_bwd(bool rms, const void* dy, const void* dres, const void* x, const void* w,
                       const float* mean, const float* rstd, void* dx, float* pdw, float* pdb,
                       int blocks, int64_t rows, int64_t hidden, cudaStream_t stream) {
  const int threads = threads_for(hidden / VEC);
  const size_t smem = sizeof(float) * hidden * 2;
  auto run = [&](auto kernel) -> const char* {
    if (smem > 48 * 1024) {
      if (cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                               static_cast<int>(smem)) != cudaSuccess)
        return "hidden size too large for the fused norm backward";
    }
    kernel<<<blocks, threads, smem, stream>>>(
        static_cast<const T*>(dy), static_cast<const T*>(dres), static_cast<const T*>(x),
        static_cast<const T*>(w), mean, rstd, static_cast<T*>(dx), pdw, pdb, rows, hidden);
    return last_error();
  };
  return rms ? run(norm_bwd_kernel<T, VEC, true>) : run(norm_bwd_kernel<T, VEC, false>);
}

}  // namespace

const char* norm_forward(int dtype, bool rms, const void* x, const void* residual,
                         const void* weight, const void* bias, void* out, void* residual_out,
                         float* mean, float* rstd, int64_t rows, int64_t hidden, float eps,
                         void* stream) {
  if (rows == 0) return nullptr;
  auto s = static_cast<cudaStream_t>(stream);
  NEOX_DISPATCH_DTYPE(dtype, {
    constexpr int vec = 16 / sizeof(scalar_t);
    if (can_vectorize<scalar_t>(hidden, {x, residual, weight, bias, out, residual_out}))
      return launch_fwd<scalar_t, vec>(rms, x, residual, weight, bias, out, residual_out, mean,
                                       rstd, rows, hidden, eps, s);
    return launch_fwd<scalar_t, 1>(rms, x, residual, weight, bias, out, residual_out, mean,
                                   rstd, rows, hidden, eps, s);
  });
  return nullptr;
}

int norm_backward_blocks(int64_t rows) {
  const int64_t most = static_cast<int64_t>(sm_count()) * 4;
  return static_cast<int>(rows < most ? (rows > 0 ? rows : 1) : most);
}

const char* norm_backward(int dtype, bool rms, const void* grad_out, const void* grad_residual_out,
                          const void* input, const void* weight, const float* mean,
                          const float* rstd, void* grad_x, float* partial_dw, float* partial_db,
                          int blocks, int64_t rows, int64_t hidden, void* stream) {
  if (rows == 0) return nullptr;
  auto s = static_cast<cudaStream_t>(stream);
  NEOX_DISPATCH_DTYPE(dtype, {
    constexpr int vec = 16 / sizeof(scalar_t);
    if (can_vectorize<scalar_t>(hidden, {grad_out, grad_residual_out, input, weight, grad_x}))
      return launch_bwd<scalar_t, vec>(rms, grad_out, grad_residual_out, input, weight, mean,
                                       rstd, grad_x, partial_dw, partial_db, blocks, rows,
                                       hidden, s);
    return launch_bwd<scalar_t, 1>(rms, grad_out, grad_residual_out, input, weight, mean, rstd,
                                   grad_x, partial_dw, partial_db, blocks, rows, hidden, s);
  });
  return nullptr;
}

}  // namespace neox
