// Rotary position embedding of the query and key heads of a fused QKV activation (GPT-NeoX's
// rotate-half layout; partial rotary; grouped-query layouts), in place (the forward) or into a
// new tensor (the backward, whose incoming gradient must stay as it is: rotary_copy_kernel).
#include <algorithm>

#include "common.cuh"

namespace neox {
namespace {

// Whether column c lies in the rotated channels (the first 2*rot_half) of one of n heads
// that start at off + h * stride.
template <typename I>
__device__ __forceinline__ bool in_rotated(I c, I off, I stride, int n, int rot_half) {
  if (c < off || n <= 0 || rot_half <= 0) return false;
  const I h = (c - off) / stride;
  return h < n && c - off - h * stride < 2 * I(rot_half);
}

// Work items of a token: with a separate destination, first one per pack of the row that
// copies it unless it is rotated; then one per head and VEC consecutive pairs (i, i + rot_half).
// In place (src == dst) there are only the latter. Every load and store is a VEC-wide pack;
// every element is read once and written once. One pair of packs a thread, its sin/cos its own
// (they used to be shared by four heads a thread): the in-place rotation is bound by how the
// memory system takes the 16-64 byte pieces it touches in each head, and independent threads
// keep more of them in flight. H100, bf16, 16,384 tokens (2026-12-06): benchmarks/kernels.py's
// forward at rotary 0.25, d128, 0.062-0.063 -> 0.057-0.058 ms. A scratch kernel that only loads
// and stores the same bytes in place, L2 flushed before each call, took 0.039 / 0.042 / 0.057
// ms at Pythia-410M's d64 with 16 rotated channels / d128 with 32 / LLaMA's grouped d64 with
// 64: 28 / 52 / 88 % of a copy's bandwidth, the access pattern's own limit; the old kernel
// took 0.045 / 0.047 / 0.061 ms there, a scratch one-pair-a-thread kernel 2 % over the limit
// at the first two.
template <typename T, int VEC, typename I>
__global__ void rotary_kernel(const T* src, T* dst, int64_t tokens, int64_t seq_len,
                              int64_t row_stride, int num_q, int64_t q_offset, int64_t q_stride,
                              int num_k, int64_t k_offset, int64_t k_stride, int rot_half,
                              const float* __restrict__ inv_freq, int64_t position_offset,
                              float sign) {
  const int packs = rot_half / VEC;
  const int copies = src == dst ? 0 : static_cast<int>(row_stride / VEC);
  const I per_token = copies + I(num_q + num_k) * packs, total = I(tokens) * per_token;
  for (I e = blockIdx.x * I(blockDim.x) + threadIdx.x; e < total; e += I(gridDim.x) * blockDim.x) {
    const I t = e / per_token;
    int rem = static_cast<int>(e - t * per_token);
    const T* srow = src + int64_t(t) * row_stride;
    T* drow = dst + int64_t(t) * row_stride;
    if (rem < copies) {
      const I c = I(rem) * VEC;
      if (!in_rotated<I>(c, I(q_offset), I(q_stride), num_q, rot_half) &&
          !in_rotated<I>(c, I(k_offset), I(k_stride), num_k, rot_half))
        store_pack<T, VEC>(drow, rem, load_pack<T, VEC>(srow, rem));
      continue;
    }
    rem -= copies;
    const int head = rem / packs;
    const int i0 = (rem - head * packs) * VEC;
    const int64_t col = (head < num_q ? q_offset + head * q_stride
                                      : k_offset + (head - num_q) * k_stride) + i0;
    Pack<T, VEC> a = load_pack<T, VEC>(srow + col, 0),
                 b = load_pack<T, VEC>(srow + col + rot_half, 0);
    // the same fp32 product as torch.outer(positions, inv_freq) in the reference
    const float position = static_cast<float>(int64_t(t % I(seq_len)) + position_offset);
#pragma unroll
    for (int k = 0; k < VEC; ++k) {
      float s, c;
      sincosf(position * inv_freq[i0 + k], &s, &c);
      s *= sign;
      const float x1 = to_f(a.v[k]), x2 = to_f(b.v[k]);
      a.v[k] = from_f<T>(x1 * c - x2 * s);
      b.v[k] = from_f<T>(x2 * c + x1 * s);
    }
    store_pack<T, VEC>(drow + col, 0, a);
    store_pack<T, VEC>(drow + col + rot_half, 0, b);
  }
}

// The out-of-place rotation (the backward's, whose incoming gradient must stay as it is): each
// block takes whole rows; per row its threads put the row's cos/sin in shared memory once, then
// stream the row pack by pack as a copy does, rotating the packs that lie in a query or key
// head's rotated channels. Such a pack also reads its partner pack, rot_half channels away,
// which a neighbouring thread loads as its own (a cache hit). Loads and stores stay
// consecutive across a warp; int32 column arithmetic (the host checks that it fits).
template <typename T, int VEC>
__global__ void rotary_copy_kernel(const T* __restrict__ src, T* __restrict__ dst, int64_t tokens,
                                   int64_t seq_len, int row_stride, int num_q, int q_offset,
                                   int q_stride, int num_k, int k_offset, int k_stride,
                                   int rot_half, const float* __restrict__ inv_freq,
                                   int64_t position_offset, float sign) {
  extern __shared__ float angles[];  // cos of the row's rot_half angles, then sign * sin
  float* cos_a = angles;
  float* sin_a = angles + rot_half;
  const int packs = row_stride / VEC;
  for (int64_t t = blockIdx.x; t < tokens; t += gridDim.x) {
    // the same fp32 product as torch.outer(positions, inv_freq) in the reference
    const float position = static_cast<float>(t % seq_len + position_offset);
    __syncthreads();  // every thread is done with the previous row's angles
    for (int i = threadIdx.x; i < rot_half; i += blockDim.x) {
      float sn, cs;
      sincosf(position * inv_freq[i], &sn, &cs);
      cos_a[i] = cs;
      sin_a[i] = sn * sign;
    }
    __syncthreads();
    const T* srow = src + t * row_stride;
    T* drow = dst + t * row_stride;
#pragma unroll 4
    for (int p = threadIdx.x; p < packs; p += blockDim.x) {
      const int col = p * VEC;
      int j = -1;  // the column's channel in its head's rotated channels, or -1
      if (num_q > 0 && col >= q_offset) {
        const int h = (col - q_offset) / q_stride, r = col - q_offset - h * q_stride;
        if (h < num_q && r < 2 * rot_half) j = r;
      }
      if (j < 0 && num_k > 0 && col >= k_offset) {
        const int h = (col - k_offset) / k_stride, r = col - k_offset - h * k_stride;
        if (h < num_k && r < 2 * rot_half) j = r;
      }
      Pack<T, VEC> a = load_pack<T, VEC>(srow, p);
      if (j >= 0) {
        const bool first = j < rot_half;  // x1 (rotated with the x2 after it) or x2
        const int i = first ? j : j - rot_half;
        const Pack<T, VEC> b =
            load_pack<T, VEC>(srow + (first ? col + rot_half : col - rot_half), 0);
#pragma unroll
        for (int k = 0; k < VEC; ++k) {
          const float x = to_f(a.v[k]), y = to_f(b.v[k]);
          // x1' = x1 cos - x2 sin, x2' = x2 cos + x1 sin (sin carries the inverse's sign)
          a.v[k] = from_f<T>(first ? x * cos_a[i + k] - y * sin_a[i + k]
                                   : x * cos_a[i + k] + y * sin_a[i + k]);
        }
      }
      store_pack<T, VEC>(drow, p, a);
    }
  }
}

template <typename T, int VEC>
void launch_rotary(const T* src, T* dst, int64_t tokens, int64_t seq_len, int64_t row_stride,
                   int num_q, int64_t q_offset, int64_t q_stride, int num_k, int64_t k_offset,
                   int64_t k_stride, int rot_half, const float* inv_freq,
                   int64_t position_offset, float sign, cudaStream_t s) {
  const int64_t fits = INT32_MAX / 2;  // columns, offsets and strides in int32, with room
  if (src != dst && row_stride < fits && q_offset < fits && q_stride < fits &&
      k_offset < fits && k_stride < fits) {
    const int threads = row_stride / VEC >= 256 ? 256 : 128;
    const int blocks = static_cast<int>(std::min<int64_t>(tokens, int64_t(sm_count()) * 8));
    const size_t smem = sizeof(float) * 2 * std::max(rot_half, 1);
    rotary_copy_kernel<T, VEC><<<blocks, threads, smem, s>>>(
        src, dst, tokens, seq_len, static_cast<int>(row_stride), num_q,
        static_cast<int>(q_offset), static_cast<int>(q_stride), num_k,
        static_cast<int>(k_offset), static_cast<int>(k_stride), rot_half, inv_freq,
        position_offset, sign);
    return;
  }
  const int64_t copies = src == dst ? 0 : row_stride / VEC;
  const int64_t total = tokens * (copies + int64_t(num_q + num_k) * (rot_half / VEC));
  const int threads = 256;
  const int blocks = grid_for(total, threads, sm_count() * 32);
  // 32-bit index arithmetic (its divisions are several times cheaper) wherever every work
  // index and column fits; the grid-stride loop's last step stays below 2^31 as well
  const int64_t step = int64_t(blocks) * threads;
  if (total + step < INT32_MAX && row_stride < INT32_MAX && seq_len < INT32_MAX) {
    rotary_kernel<T, VEC, int32_t><<<blocks, threads, 0, s>>>(
        src, dst, tokens, seq_len, row_stride, num_q, q_offset, q_stride, num_k, k_offset,
        k_stride, rot_half, inv_freq, position_offset, sign);
  } else {
    rotary_kernel<T, VEC, int64_t><<<blocks, threads, 0, s>>>(
        src, dst, tokens, seq_len, row_stride, num_q, q_offset, q_stride, num_k, k_offset,
        k_stride, rot_half, inv_freq, position_offset, sign);
  }
}

}  // namespace

const char* rotary(int dtype, const void* src, void* dst, int64_t tokens, int64_t seq_len,
                   int64_t row_stride, int num_q, int64_t q_offset, int64_t q_stride, int num_k,
                   int64_t k_offset, int64_t k_stride, int rot_half, const float* inv_freq,
                   int64_t position_offset, bool inverse, void* stream) {
  if (tokens == 0) return nullptr;
  if (seq_len <= 0) return "seq_len must be positive";
  if (src != dst && row_stride > 0) {
    const int64_t rot = 2 * int64_t(rot_half);
    if ((num_q > 0 && q_stride < rot) || (num_k > 0 && k_stride < rot))
      return "head strides must cover the rotated channels";
  } else if ((num_q + num_k) * int64_t(rot_half) == 0) {
    return nullptr;
  }
  auto s = static_cast<cudaStream_t>(stream);
  const float sign = inverse ? -1.f : 1.f;
  NEOX_DISPATCH_DTYPE(dtype, {
    constexpr int vec = 16 / sizeof(scalar_t);
    // packs need every offset, stride and half-width in whole packs and 16-byte bases
    const bool packed = rot_half % vec == 0 && row_stride % vec == 0 && q_offset % vec == 0 &&
                        q_stride % vec == 0 && k_offset % vec == 0 && k_stride % vec == 0 &&
                        reinterpret_cast<uintptr_t>(src) % 16 == 0 &&
                        reinterpret_cast<uintptr_t>(dst) % 16 == 0;
    auto* x = static_cast<const scalar_t*>(src);
    auto* y = static_cast<scalar_t*>(dst);
    if (packed) {
      launch_rotary<scalar_t, vec>(x, y, tokens, seq_len, row_stride, num_q, q_offset, q_stride,
                                   num_k, k_offset, k_stride, rot_half, inv_freq,
                                   position_offset, sign, s);
    } else {
      launch_rotary<scalar_t, 1>(x, y, tokens, seq_len, row_stride, num_q, q_offset, q_stride,
                                 num_k, k_offset, k_stride, rot_half, inv_freq, position_offset,
                                 sign, s);
    }
  });
  return last_error();
}

}  // namespace neox
