// RMSNorm / LayerNorm forward and backward, with the residual add fused in front.
// One block per row (forward); fp32 statistics. Rows of up to 512 * P packs are kept in
// registers (the *_reg kernels); longer rows take the shared-memory kernels, which re-read
// the row from L1/L2.
#include "common.cuh"

// Threads per row of the register-resident kernels at most, unless the row needs more packs a
// thread than the kernel holds (defines, so that variants build side by side for a measurement).
// Fewer threads holding more packs each keep more loads in flight: on an H100 (bf16, 16384 rows,
// one run) a forward of at most 128 threads a row took LayerNorm 0.0511 / 0.0988 / 0.0986 ms at
// hidden 2048 / 4096 / 8192 (rows of 8192: 256 threads, 4 packs each) against 0.0584 / 0.1175 /
// 0.1082 with up to 512, RMSNorm+residual within noise. The backward is slower so (LayerNorm at
// hidden 4096: 0.180 ms with 256 threads, 0.175 with 512): its weight-gradient partials hold
// registers per pack, and it keeps 512.
#ifndef NEOX_NORM_FWD_THREADS
#define NEOX_NORM_FWD_THREADS 128
#endif
#ifndef NEOX_NORM_BWD_THREADS
#define NEOX_NORM_BWD_THREADS 512
#endif
// Rows in flight in the backward's shared-memory pipeline (norm_bwd_pipe_kernel): the row being
// reduced and STAGES - 1 rows whose copies are on their way. Below 2 the pipeline is not built.
#ifndef NEOX_NORM_BWD_STAGES
#define NEOX_NORM_BWD_STAGES 2
#endif

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

// Sums of a and (unless ONE) b over the block, every thread getting both, behind one barrier:
// `scratch` holds two buffers of 32 floats that alternate rows (`buf`), so a row's writes cannot
// race the previous row's reads. Shuffles share an SM's one shuffle unit among all its blocks:
// for two sums one exchange halves both at once (lanes 0-15 carry a on, lanes 16-31 b), and
// each half-warp then sums the per-warp results itself, instead of every warp summing both
// again (10 shuffles a warp instead of 20, 9 instead of 10 for one sum). blockDim.x is a
// multiple of 32 and at most 512 (16 warps).
template <bool ONE>
__device__ __forceinline__ float2 row_sums(float a, float b, float* scratch, int buf) {
  constexpr unsigned kAll = 0xffffffffu;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int warps = blockDim.x >> 5;
  const bool upper = lane >= 16;
  float* s = scratch + buf * 32;
  float v;
  if constexpr (ONE) {
    v = warp_sum(a);
    if (lane == 0) s[warp] = v;
  } else {
    v = (upper ? b : a) + __shfl_xor_sync(kAll, upper ? a : b, 16);
#pragma unroll
    for (int offset = 8; offset > 0; offset >>= 1) v += __shfl_xor_sync(kAll, v, offset);
    if ((lane & 15) == 0) s[(upper ? 16 : 0) + warp] = v;
  }
  __syncthreads();
  v = (lane & 15) < warps ? s[ONE ? (lane & 15) : lane] : 0.f;
#pragma unroll
  for (int offset = 8; offset > 0; offset >>= 1) v += __shfl_xor_sync(kAll, v, offset);
  if constexpr (ONE) return make_float2(v, 0.f);
  const float other = __shfl_xor_sync(kAll, v, 16);
  return upper ? make_float2(other, v) : make_float2(v, other);
}

// Register-resident variants: thread t of the block owns packs t, t + blockDim, ... (at most P),
// so a row is read from memory once, its statistics come from registers (LayerNorm's variance
// as a second pass over the registers: no cancellation) and the output is written once.
template <typename T, int VEC, bool RMS, int P>
__global__ void __launch_bounds__(512)
    norm_fwd_reg_kernel(const T* __restrict__ x, const T* __restrict__ res,
                        const T* __restrict__ w, const T* __restrict__ b, T* __restrict__ out,
                        T* __restrict__ res_out, float* __restrict__ mean_out,
                        float* __restrict__ rstd_out, int64_t hidden, float eps) {
  __shared__ float scratch[32];
  const int64_t base = static_cast<int64_t>(blockIdx.x) * hidden;
  const int packs = static_cast<int>(hidden / VEC);
  Pack<T, VEC> px[P];
  float s = 0.f;
#pragma unroll
  for (int j = 0; j < P; ++j) {
    const int i = threadIdx.x + j * blockDim.x;
    if (i < packs) {
      px[j] = load_pack<T, VEC>(x + base, i);
      if (res != nullptr) {
        const Pack<T, VEC> pr = load_pack<T, VEC>(res + base, i);
#pragma unroll
        for (int k = 0; k < VEC; ++k)  // the residual stream's rounding
          px[j].v[k] = from_f<T>(to_f(px[j].v[k]) + to_f(pr.v[k]));
        store_pack<T, VEC>(res_out + base, i, px[j]);
      }
#pragma unroll
      for (int k = 0; k < VEC; ++k) {
        const float v = to_f(px[j].v[k]);
        s += RMS ? v * v : v;
      }
    }
  }
  float mean = 0.f, var;
  if (RMS) {
    var = block_sum(s, scratch) / hidden;
  } else {
    mean = block_sum(s, scratch) / hidden;
    float d2 = 0.f;
#pragma unroll
    for (int j = 0; j < P; ++j) {
      if (static_cast<int>(threadIdx.x + j * blockDim.x) < packs) {
#pragma unroll
        for (int k = 0; k < VEC; ++k) {
          const float d = to_f(px[j].v[k]) - mean;
          d2 += d * d;
        }
      }
    }
    var = block_sum(d2, scratch) / hidden;
  }
  const float rstd = rsqrtf(var + eps);
  if (threadIdx.x == 0) {
    rstd_out[blockIdx.x] = rstd;
    if (!RMS) mean_out[blockIdx.x] = mean;
  }
#pragma unroll
  for (int j = 0; j < P; ++j) {
    const int i = threadIdx.x + j * blockDim.x;
    if (i < packs) {
      Pack<T, VEC> pw, pb, po;
      if (w != nullptr) pw = load_pack<T, VEC>(w, i);
      if (b != nullptr) pb = load_pack<T, VEC>(b, i);
#pragma unroll
      for (int k = 0; k < VEC; ++k) {
        float y = (to_f(px[j].v[k]) - mean) * rstd;
        if (w != nullptr) y *= to_f(pw.v[k]);
        if (b != nullptr) y += to_f(pb.v[k]);
        po.v[k] = from_f<T>(y);
      }
      store_pack<T, VEC>(out + base, i, po);
    }
  }
}

// Grid-stride over rows; thread t owns the columns of packs t, t + blockDim, ... (at most P) in
// every row, so its weight/bias gradient sums stay in registers and are written once, and the
// row's x and dy stay in registers between the two passes.
template <typename T, int VEC, bool RMS, int P>
__global__ void __launch_bounds__(512)
    norm_bwd_reg_kernel(const T* __restrict__ dy, const T* __restrict__ dres,
                        const T* __restrict__ x, const T* __restrict__ w,
                        const float* __restrict__ mean_in, const float* __restrict__ rstd_in,
                        T* __restrict__ dx, float* __restrict__ part_dw,
                        float* __restrict__ part_db, int64_t rows, int64_t hidden) {
  __shared__ float scratch[2 * 32];
  const int packs = static_cast<int>(hidden / VEC);
  float dw[P][VEC], db[P][VEC];
#pragma unroll
  for (int j = 0; j < P; ++j)
#pragma unroll
    for (int k = 0; k < VEC; ++k) dw[j][k] = db[j][k] = 0.f;
  // Small rows: the next row's x and dy are loaded while this row is reduced (prefetch).
  constexpr bool kPrefetch = P * VEC <= 16;
  Pack<T, VEC> px[P], pg[P];
  if (kPrefetch && blockIdx.x < rows) {
#pragma unroll
    for (int j = 0; j < P; ++j) {
      const int i = threadIdx.x + j * blockDim.x;
      if (i < packs) {
        px[j] = load_pack<T, VEC>(x + blockIdx.x * hidden, i);
        pg[j] = load_pack<T, VEC>(dy + blockIdx.x * hidden, i);
      }
    }
  }
  // The row statistics are loaded one row ahead as well (their latency is otherwise paid
  // once per row, before any arithmetic can start).
  float rstd_next = 0.f, mean_next = 0.f;
  if (blockIdx.x < rows) {
    rstd_next = rstd_in[blockIdx.x];
    if (!RMS) mean_next = mean_in[blockIdx.x];
  }
  int parity = 0;  // row_sums' scratch buffer
  for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
    const int64_t base = row * hidden;
    const float rstd = rstd_next;
    const float mean = RMS ? 0.f : mean_next;
    Pack<T, VEC> nx[P], ng[P];
    const int64_t next = row + gridDim.x;
    if (next < rows) {
      rstd_next = rstd_in[next];
      if (!RMS) mean_next = mean_in[next];
    }
#pragma unroll
    for (int j = 0; j < P; ++j) {
      const int i = threadIdx.x + j * blockDim.x;
      if (kPrefetch && next < rows && i < packs) {
        nx[j] = load_pack<T, VEC>(x + next * hidden, i);
        ng[j] = load_pack<T, VEC>(dy + next * hidden, i);
      }
    }
    float s_wdy_xhat = 0.f, s_wdy = 0.f;
    // the residual's gradient: for small rows loaded before the reduction (its latency hides
    // behind it), for long rows after it (registers)
    Pack<T, VEC> early[kPrefetch ? P : 1];
#pragma unroll
    for (int j = 0; j < P; ++j) {
      const int i = threadIdx.x + j * blockDim.x;
      if (i < packs) {
        if constexpr (kPrefetch) {
          if (dres != nullptr) early[j] = load_pack<T, VEC>(dres + base, i);
        }
        if (!kPrefetch) {
          px[j] = load_pack<T, VEC>(x + base, i);
          pg[j] = load_pack<T, VEC>(dy + base, i);
        }
        Pack<T, VEC> pw;
        if (w != nullptr) pw = load_pack<T, VEC>(w, i);
#pragma unroll
        for (int k = 0; k < VEC; ++k) {
          const float xhat = (to_f(px[j].v[k]) - mean) * rstd;
          const float g = to_f(pg[j].v[k]);
          const float wdy = w != nullptr ? g * to_f(pw.v[k]) : g;
          s_wdy_xhat += wdy * xhat;
          s_wdy += wdy;
          dw[j][k] += g * xhat;
          db[j][k] += g;
        }
      }
    }
    const float2 sums = row_sums<RMS>(s_wdy_xhat, s_wdy, scratch, parity);
    parity ^= 1;
    const float c1 = sums.x / hidden;
    const float c2 = RMS ? 0.f : sums.y / hidden;
#pragma unroll
    for (int j = 0; j < P; ++j) {
      const int i = threadIdx.x + j * blockDim.x;
      if (i < packs) {
        Pack<T, VEC> pw, pd, pr;
        if (w != nullptr) pw = load_pack<T, VEC>(w, i);
        if constexpr (kPrefetch) {
          pr = early[j];
        } else if (dres != nullptr) {
          pr = load_pack<T, VEC>(dres + base, i);
        }
#pragma unroll
        for (int k = 0; k < VEC; ++k) {
          const float xhat = (to_f(px[j].v[k]) - mean) * rstd;
          const float g = to_f(pg[j].v[k]);
          const float wdy = w != nullptr ? g * to_f(pw.v[k]) : g;
          float d = rstd * (wdy - c2 - xhat * c1);
          if (dres != nullptr) d += to_f(pr.v[k]);
          pd.v[k] = from_f<T>(d);
        }
        store_pack<T, VEC>(dx + base, i, pd);
      }
    }
    if (kPrefetch) {
#pragma unroll
      for (int j = 0; j < P; ++j) {
        px[j] = nx[j];
        pg[j] = ng[j];
      }
    }
  }
  float* pdw = part_dw != nullptr ? part_dw + static_cast<int64_t>(blockIdx.x) * hidden : nullptr;
  float* pdb = part_db != nullptr ? part_db + static_cast<int64_t>(blockIdx.x) * hidden : nullptr;
#pragma unroll
  for (int j = 0; j < P; ++j) {
    const int i = threadIdx.x + j * blockDim.x;
    if (i < packs) {
#pragma unroll
      for (int k = 0; k < VEC; ++k) {
        if (pdw != nullptr) pdw[static_cast<int64_t>(i) * VEC + k] = dw[j][k];
        if (pdb != nullptr) pdb[static_cast<int64_t>(i) * VEC + k] = db[j][k];
      }
    }
  }
}

// 16-byte asynchronous copy global -> shared (sm_80+; a plain load and store before that).
__device__ __forceinline__ void cp_async16(void* dst, const void* src) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(dst));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(s), "l"(src));
#else
  *reinterpret_cast<int4*>(dst) = *reinterpret_cast<const int4*>(src);
#endif
}

__device__ __forceinline__ void cp_async_commit() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.commit_group;\n" ::);
#endif
}

template <int N>
__device__ __forceinline__ void cp_async_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
#endif
}

// Shared memory of norm_bwd_pipe_kernel: STAGES rows of x, dy and (with it) the residual's
// gradient.
inline size_t pipe_smem_bytes(int64_t hidden, int elem_size, bool residual) {
  return static_cast<size_t>(NEOX_NORM_BWD_STAGES) * (residual ? 3 : 2) * hidden * elem_size;
}

// The register-resident backward for rows where a thread holds 16 values (16-byte packs, P * VEC
// == 16: bf16/fp16 rows of 4104 to 8192), with the rows streamed through shared memory: while a
// row is reduced, the copies of the block's next STAGES - 1 rows are in flight (cp.async) and
// hold no registers. There the register kernel needs about 120 registers a thread, one block of
// 512 an SM, and its one-row register prefetch left the loads short: H100, 16384 rows, bf16, its
// backward alone 489 us for RMSNorm + residual at hidden 8192 (73 % of copy bandwidth) and 328
// us for LayerNorm (81 %); this kernel with 2 stages 377-382 / 297-306 us (93-94 % / 87-90 %),
// fwd+bwd 0.859-0.867 -> 0.746 ms and 0.531-0.532 -> 0.500-0.503 ms. Where two to four blocks
// share an SM (hidden 2048, 4096) it was slower than the register prefetch (LayerNorm's backward
// at 2048: 93 -> 100-102 us with 2, 3 or 4 stages; at 4096 168 -> 185-241 us), which stays.
// Each thread copies and reads back only its own packs, so no barrier guards the ring.
// Its per-pack arithmetic is written out as in norm_bwd_reg_kernel on purpose: shared inline
// helpers for both changed the register kernel's code (one pack a thread, bf16: 64 -> 82
// registers, two blocks of 512 an SM -> one) and on an H100 (2026-12-06, the two builds
// alternating, two runs) RMSNorm + residual's backward at 16384x4096 went 195 -> 250 us.
template <typename T, int VEC, bool RMS, int P>
__global__ void __launch_bounds__(512)
    norm_bwd_pipe_kernel(const T* __restrict__ dy, const T* __restrict__ dres,
                         const T* __restrict__ x, const T* __restrict__ w,
                         const float* __restrict__ mean_in, const float* __restrict__ rstd_in,
                         T* __restrict__ dx, float* __restrict__ part_dw,
                         float* __restrict__ part_db, int64_t rows, int64_t hidden) {
  constexpr int S = NEOX_NORM_BWD_STAGES;
  using PackT = Pack<T, VEC>;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  __shared__ float scratch[2 * 32];
  const int packs = static_cast<int>(hidden / VEC);
  const int streams = dres != nullptr ? 3 : 2;
  PackT* ring = reinterpret_cast<PackT*>(smem_raw);  // [S][streams][packs]
  const int64_t stride = gridDim.x;
  // copies of `row` into stage `stage` (this thread's packs); one commit group either way, so
  // that the group count stays the row count
  auto issue = [&](int64_t row, int stage) {
    if (row < rows) {
      PackT* slot = ring + static_cast<int64_t>(stage) * streams * packs;
#pragma unroll
      for (int j = 0; j < P; ++j) {
        const int i = threadIdx.x + j * blockDim.x;
        if (i < packs) {
          cp_async16(slot + i, x + row * hidden + static_cast<int64_t>(i) * VEC);
          cp_async16(slot + packs + i, dy + row * hidden + static_cast<int64_t>(i) * VEC);
          if (dres != nullptr)
            cp_async16(slot + 2 * packs + i, dres + row * hidden + static_cast<int64_t>(i) * VEC);
        }
      }
    }
    cp_async_commit();
  };
  float dw[P][VEC], db[P][VEC];
#pragma unroll
  for (int j = 0; j < P; ++j)
#pragma unroll
    for (int k = 0; k < VEC; ++k) dw[j][k] = db[j][k] = 0.f;
#pragma unroll
  for (int s = 0; s < S - 1; ++s) issue(blockIdx.x + s * stride, s);
  float rstd_next = 0.f, mean_next = 0.f;
  if (blockIdx.x < rows) {
    rstd_next = rstd_in[blockIdx.x];
    if (!RMS) mean_next = mean_in[blockIdx.x];
  }
  int stage = 0;
  int parity = 0;  // row_sums' scratch buffer
  for (int64_t row = blockIdx.x; row < rows; row += stride) {
    // the stage read last iteration is free again: refill it S - 1 rows ahead
    issue(row + (S - 1) * stride, stage == 0 ? S - 1 : stage - 1);
    const float rstd = rstd_next;
    const float mean = RMS ? 0.f : mean_next;
    if (row + stride < rows) {
      rstd_next = rstd_in[row + stride];
      if (!RMS) mean_next = mean_in[row + stride];
    }
    cp_async_wait<S - 1>();  // this row's copies have landed
    const PackT* slot = ring + static_cast<int64_t>(stage) * streams * packs;
    PackT px[P], pg[P];
#pragma unroll
    for (int j = 0; j < P; ++j) {
      const int i = threadIdx.x + j * blockDim.x;
      if (i < packs) {
        px[j] = slot[i];
        pg[j] = slot[packs + i];
      }
    }
    float s_wdy_xhat = 0.f, s_wdy = 0.f;
#pragma unroll
    for (int j = 0; j < P; ++j) {
      const int i = threadIdx.x + j * blockDim.x;
      if (i < packs) {
        PackT pw;
        if (w != nullptr) pw = load_pack<T, VEC>(w, i);
#pragma unroll
        for (int k = 0; k < VEC; ++k) {
          const float xhat = (to_f(px[j].v[k]) - mean) * rstd;
          const float g = to_f(pg[j].v[k]);
          const float wdy = w != nullptr ? g * to_f(pw.v[k]) : g;
          s_wdy_xhat += wdy * xhat;
          s_wdy += wdy;
          dw[j][k] += g * xhat;
          db[j][k] += g;
        }
      }
    }
    const float2 sums = row_sums<RMS>(s_wdy_xhat, s_wdy, scratch, parity);
    parity ^= 1;
    const float c1 = sums.x / hidden;
    const float c2 = RMS ? 0.f : sums.y / hidden;
#pragma unroll
    for (int j = 0; j < P; ++j) {
      const int i = threadIdx.x + j * blockDim.x;
      if (i < packs) {
        PackT pw, pr, pd;
        if (w != nullptr) pw = load_pack<T, VEC>(w, i);
        if (dres != nullptr) pr = slot[2 * packs + i];
#pragma unroll
        for (int k = 0; k < VEC; ++k) {
          const float xhat = (to_f(px[j].v[k]) - mean) * rstd;
          const float g = to_f(pg[j].v[k]);
          const float wdy = w != nullptr ? g * to_f(pw.v[k]) : g;
          float d = rstd * (wdy - c2 - xhat * c1);
          if (dres != nullptr) d += to_f(pr.v[k]);
          pd.v[k] = from_f<T>(d);
        }
        store_pack<T, VEC>(dx + row * hidden, i, pd);
      }
    }
    stage = stage == S - 1 ? 0 : stage + 1;
  }
  cp_async_wait<0>();
  float* pdw = part_dw != nullptr ? part_dw + static_cast<int64_t>(blockIdx.x) * hidden : nullptr;
  float* pdb = part_db != nullptr ? part_db + static_cast<int64_t>(blockIdx.x) * hidden : nullptr;
#pragma unroll
  for (int j = 0; j < P; ++j) {
    const int i = threadIdx.x + j * blockDim.x;
    if (i < packs) {
#pragma unroll
      for (int k = 0; k < VEC; ++k) {
        if (pdw != nullptr) pdw[static_cast<int64_t>(i) * VEC + k] = dw[j][k];
        if (pdb != nullptr) pdb[static_cast<int64_t>(i) * VEC + k] = db[j][k];
      }
    }
  }
}

// Launch shape of the register-resident kernels: packs per thread p (at most max_p) and
// threads (a multiple of 32, at most max_threads unless the row needs more than max_p packs a
// thread there, and at most 512) with threads * p >= packs. False: the row is too long for
// registers (the shared-memory kernels take it).
bool reg_shape(int64_t packs, int max_p, int max_threads, int* p, int* threads) {
  if (packs < 1) return false;
  int64_t pp = (packs + max_threads - 1) / max_threads;
  if (pp > max_p) pp = max_p;  // the most packs a thread holds, and more threads
  if ((packs + pp - 1) / pp > 512) return false;
  const int64_t per = (packs + pp - 1) / pp;  // <= 512
  *p = static_cast<int>(pp);
  *threads = static_cast<int>((per + 31) / 32 * 32);
  return true;
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
  int threads = threads_for(hidden / VEC), p = 0;
  auto args = [&](auto kernel) {
    kernel<<<static_cast<unsigned>(rows), threads, 0, stream>>>(
        static_cast<const T*>(x), static_cast<const T*>(res), static_cast<const T*>(w),
        static_cast<const T*>(b), static_cast<T*>(out), static_cast<T*>(res_out), mean, rstd,
        hidden, eps);
  };
  constexpr int kMaxP = VEC > 1 ? 4 : 16;
  if (reg_shape(hidden / VEC, kMaxP, NEOX_NORM_FWD_THREADS, &p, &threads)) {
    // p packs per thread; the kernel's P is the next instantiated size (P >= p).
    if constexpr (VEC > 1) {
      if (p == 1) {
        rms ? args(norm_fwd_reg_kernel<T, VEC, true, 1>) : args(norm_fwd_reg_kernel<T, VEC, false, 1>);
        return last_error();
      }
      if (p == 2) {
        rms ? args(norm_fwd_reg_kernel<T, VEC, true, 2>) : args(norm_fwd_reg_kernel<T, VEC, false, 2>);
        return last_error();
      }
    }
    if (p <= 4)
      rms ? args(norm_fwd_reg_kernel<T, VEC, true, 4>) : args(norm_fwd_reg_kernel<T, VEC, false, 4>);
    else
      rms ? args(norm_fwd_reg_kernel<T, VEC, true, kMaxP>)
          : args(norm_fwd_reg_kernel<T, VEC, false, kMaxP>);
    return last_error();
  }
  threads = threads_for(hidden / VEC);
  if (rms)
    args(norm_fwd_kernel<T, VEC, true>);
  else
    args(norm_fwd_kernel<T, VEC, false>);
  return last_error();
}

// Calls f(kernel, threads, dynamic shared memory bytes) with the register-resident backward
// kernel for rows of `hidden` (packs of VEC): the shared-memory pipelined one where the packs are
// 16 bytes, a thread holds 16 values and the ring takes at most 96 KiB; false when the row is
// too long for registers.
template <typename T, int VEC, typename F>
bool with_bwd_reg_kernel(bool rms, int64_t hidden, bool residual, F&& f) {
  constexpr int kMaxP = VEC > 1 ? 4 : 16;
  int p = 0, threads = 0;
  if (!reg_shape(hidden / VEC, kMaxP, NEOX_NORM_BWD_THREADS, &p, &threads)) return false;
  if constexpr (VEC * sizeof(T) == 16 && NEOX_NORM_BWD_STAGES >= 2) {
    const size_t smem = pipe_smem_bytes(hidden, sizeof(T), residual);
    constexpr int kPipeP = 16 / VEC;  // 2 packs (bf16, fp16) or 4 (fp32): the reg kernels' P
    if (p > kPipeP / 2 && p <= kPipeP && smem <= 96 * 1024) {
      rms ? f(norm_bwd_pipe_kernel<T, VEC, true, kPipeP>, threads, smem)
          : f(norm_bwd_pipe_kernel<T, VEC, false, kPipeP>, threads, smem);
      return true;
    }
  }
  // p packs per thread; the kernel's P is the next instantiated size (P >= p).
  if constexpr (VEC > 1) {
    if (p == 1) {
      rms ? f(norm_bwd_reg_kernel<T, VEC, true, 1>, threads, size_t{0})
          : f(norm_bwd_reg_kernel<T, VEC, false, 1>, threads, size_t{0});
      return true;
    }
    if (p == 2) {
      rms ? f(norm_bwd_reg_kernel<T, VEC, true, 2>, threads, size_t{0})
          : f(norm_bwd_reg_kernel<T, VEC, false, 2>, threads, size_t{0});
      return true;
    }
  }
  if (p <= 4)
    rms ? f(norm_bwd_reg_kernel<T, VEC, true, 4>, threads, size_t{0})
        : f(norm_bwd_reg_kernel<T, VEC, false, 4>, threads, size_t{0});
  else
    rms ? f(norm_bwd_reg_kernel<T, VEC, true, kMaxP>, threads, size_t{0})
        : f(norm_bwd_reg_kernel<T, VEC, false, kMaxP>, threads, size_t{0});
  return true;
}

// Lets `kernel` take `bytes` of dynamic shared memory (past 48 KiB with its static shared memory
// it must opt in; opting in below that costs nothing).
template <typename K>
bool allow_smem(K kernel, size_t bytes) {
  return bytes == 0 ||
         cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                              static_cast<int>(bytes)) == cudaSuccess;
}

template <typename T, int VEC>
const char* launch_bwd(bool rms, const void* dy, const void* dres, const void* x, const void* w,
                       const float* mean, const float* rstd, void* dx, float* pdw, float* pdb,
                       int blocks, int64_t rows, int64_t hidden, cudaStream_t stream) {
  const int threads = threads_for(hidden / VEC);
  const size_t smem = sizeof(float) * hidden * 2;
  auto run = [&](auto kernel) -> const char* {
    if (!allow_smem(kernel, smem)) return "hidden size too large for the fused norm backward";
    kernel<<<blocks, threads, smem, stream>>>(
        static_cast<const T*>(dy), static_cast<const T*>(dres), static_cast<const T*>(x),
        static_cast<const T*>(w), mean, rstd, static_cast<T*>(dx), pdw, pdb, rows, hidden);
    return last_error();
  };
  const char* error = nullptr;
  if (with_bwd_reg_kernel<T, VEC>(rms, hidden, dres != nullptr, [&](auto kernel, int reg_threads,
                                                                    size_t reg_smem) {
        if (!allow_smem(kernel, reg_smem)) {
          error = "the fused norm backward could not take its shared memory";
          return;
        }
        kernel<<<blocks, reg_threads, reg_smem, stream>>>(
            static_cast<const T*>(dy), static_cast<const T*>(dres), static_cast<const T*>(x),
            static_cast<const T*>(w), mean, rstd, static_cast<T*>(dx), pdw, pdb, rows, hidden);
        error = last_error();
      }))
    return error;
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

int norm_backward_blocks(int dtype, bool rms, bool residual, int64_t rows, int64_t hidden) {
  // As many blocks as are resident at once (one wave: every block strides over the same
  // number of rows, give or take one), from the occupancy of the kernel norm_backward picks
  // (the vectorised one when hidden allows; any count is correct, this one is the fastest).
  int per_sm = 4;
  auto occupancy = [&](auto kernel, int threads, size_t smem) {
    int n = 0;
    if (!allow_smem(kernel, smem) ||
        cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, kernel, threads, smem) != cudaSuccess)
      cudaGetLastError();  // clear it; the default stays
    else if (n > 0)
      per_sm = n < 8 ? n : 8;
  };
  auto pick = [&](auto zero) {
    using scalar_t = decltype(zero);
    constexpr int vec = 16 / sizeof(scalar_t);
    if (hidden > 0 && hidden % vec == 0)
      with_bwd_reg_kernel<scalar_t, vec>(rms, hidden, residual, occupancy);
    else if (hidden > 0)
      with_bwd_reg_kernel<scalar_t, 1>(rms, hidden, residual, occupancy);
  };
  if (dtype == kFloat32) pick(float{});
  else if (dtype == kFloat16) pick(__half{});
  else if (dtype == kBFloat16) pick(__nv_bfloat16{});
  const int64_t most = static_cast<int64_t>(sm_count()) * per_sm;
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
