// Cross-entropy over one chunk of logits: row statistics (logsumexp, target logit) and the
// gradient written back in place, so the full [tokens, vocab] logits never exist.
#include <cfloat>

#include "common.cuh"

namespace neox {
namespace {

// Merges two (max, sum of exp(x - max)) pairs.
__device__ __forceinline__ void merge(float& m, float& s, float m2, float s2) {
  const float mx = fmaxf(m, m2);
  if (mx == -INFINITY) return;  // both empty
  s = s * __expf(m - mx) + s2 * __expf(m2 - mx);
  m = mx;
}

__device__ __forceinline__ float block_logsumexp(float m, float s) {
  __shared__ float sm[32], ss[32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int warps = (blockDim.x + 31) >> 5;
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1)
    merge(m, s, __shfl_xor_sync(0xffffffffu, m, offset), __shfl_xor_sync(0xffffffffu, s, offset));
  if (lane == 0) {
    sm[warp] = m;
    ss[warp] = s;
  }
  __syncthreads();
  m = lane < warps ? sm[lane] : -INFINITY;
  s = lane < warps ? ss[lane] : 0.f;
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1)
    merge(m, s, __shfl_xor_sync(0xffffffffu, m, offset), __shfl_xor_sync(0xffffffffu, s, offset));
  return m + logf(s);
}

// grad = a * exp(x - lse) + (col == target ? b : 0), written over the row.
template <typename T, int VEC>
__device__ __forceinline__ void write_grad(T* row, int64_t packs, float lse, float a, float b,
                                           int64_t target_col) {
  for (int64_t i = threadIdx.x; i < packs; i += blockDim.x) {
    Pack<T, VEC> p = load_pack<T, VEC>(row, i);
#pragma unroll
    for (int k = 0; k < VEC; ++k) {
      float g = a * __expf(to_f(p.v[k]) - lse);
      if (i * VEC + k == target_col) g += b;
      p.v[k] = from_f<T>(g);
    }
    store_pack<T, VEC>(row, i, p);
  }
}

template <typename T, int VEC>
__global__ void ce_fwd_kernel(T* __restrict__ logits, int64_t ld, int64_t vocab,
                              const int64_t* __restrict__ labels, int64_t vocab_start,
                              float* __restrict__ lse_out, float* __restrict__ target_out,
                              const float* __restrict__ row_weight, float z_loss) {
  const int64_t r = blockIdx.x;
  T* row = logits + r * ld;
  const int64_t packs = vocab / VEC;
  float m = -INFINITY, s = 0.f;
  for (int64_t i = threadIdx.x; i < packs; i += blockDim.x) {
    const Pack<T, VEC> p = load_pack<T, VEC>(row, i);
    float pm = -INFINITY;
#pragma unroll
    for (int k = 0; k < VEC; ++k) pm = fmaxf(pm, to_f(p.v[k]));
    float ps = 0.f;
#pragma unroll
    for (int k = 0; k < VEC; ++k) ps += __expf(to_f(p.v[k]) - pm);
    merge(m, s, pm, ps);
  }
  const float lse = block_logsumexp(m, s);
  const int64_t local = labels[r] - vocab_start;
  const bool in_shard = labels[r] >= 0 && local >= 0 && local < vocab;
  if (threadIdx.x == 0) {
    lse_out[r] = lse;
    target_out[r] = in_shard ? to_f(row[local]) : 0.f;
  }
  if (row_weight != nullptr) {
    __syncthreads();  // thread 0 reads row[local] before the row is overwritten
    const float w = row_weight[r];
    write_grad<T, VEC>(row, packs, lse, w * (1.f + 2.f * z_loss * lse), -w,
                       in_shard ? local : -1);
  }
}

template <typename T, int VEC>
__global__ void ce_bwd_kernel(T* __restrict__ logits, int64_t ld, int64_t vocab,
                              const int64_t* __restrict__ labels, int64_t vocab_start,
                              const float* __restrict__ lse, const float* __restrict__ grad_lse,
                              const float* __restrict__ grad_target) {
  const int64_t r = blockIdx.x;
  const int64_t local = labels[r] - vocab_start;
  const bool in_shard = labels[r] >= 0 && local >= 0 && local < vocab;
  write_grad<T, VEC>(logits + r * ld, vocab / VEC, lse[r], grad_lse[r], grad_target[r],
                     in_shard ? local : -1);
}

int ce_threads(int64_t packs) {
  int t = 128;
  while (t < 1024 && t * 8 <= packs) t *= 2;
  return t;
}

template <typename T>
bool ce_vectorizable(const void* logits, int64_t ld, int64_t vocab) {
  constexpr int vec = 16 / sizeof(T);
  return vocab % vec == 0 && ld % vec == 0 && reinterpret_cast<uintptr_t>(logits) % 16 == 0;
}

}  // namespace

const char* cross_entropy_forward(int dtype, void* logits, int64_t ld, int64_t rows,
                                  int64_t vocab, const int64_t* labels, int64_t vocab_start,
                                  float* lse, float* target, const float* row_weight,
                                  float z_loss, void* stream) {
  if (rows == 0) return nullptr;
  if (vocab == 0) return "empty vocabulary shard";
  auto s = static_cast<cudaStream_t>(stream);
  NEOX_DISPATCH_DTYPE(dtype, {
    constexpr int vec = 16 / sizeof(scalar_t);
    auto lp = static_cast<scalar_t*>(logits);
    if (ce_vectorizable<scalar_t>(logits, ld, vocab))
      ce_fwd_kernel<scalar_t, vec><<<static_cast<unsigned>(rows), ce_threads(vocab / vec), 0, s>>>(
          lp, ld, vocab, labels, vocab_start, lse, target, row_weight, z_loss);
    else
      ce_fwd_kernel<scalar_t, 1><<<static_cast<unsigned>(rows), ce_threads(vocab), 0, s>>>(
          lp, ld, vocab, labels, vocab_start, lse, target, row_weight, z_loss);
  });
  return last_error();
}

const char* cross_entropy_backward(int dtype, void* logits, int64_t ld, int64_t rows,
                                   int64_t vocab, const int64_t* labels, int64_t vocab_start,
                                   const float* lse, const float* grad_lse,
                                   const float* grad_target, void* stream) {
  if (rows == 0) return nullptr;
  auto s = static_cast<cudaStream_t>(stream);
  NEOX_DISPATCH_DTYPE(dtype, {
    constexpr int vec = 16 / sizeof(scalar_t);
    auto lp = static_cast<scalar_t*>(logits);
    if (ce_vectorizable<scalar_t>(logits, ld, vocab))
      ce_bwd_kernel<scalar_t, vec><<<static_cast<unsigned>(rows), ce_threads(vocab / vec), 0, s>>>(
          lp, ld, vocab, labels, vocab_start, lse, grad_lse, grad_target);
    else
      ce_bwd_kernel<scalar_t, 1><<<static_cast<unsigned>(rows), ce_threads(vocab), 0, s>>>(
          lp, ld, vocab, labels, vocab_start, lse, grad_lse, grad_target);
  });
  return last_error();
}

}  // namespace neox
