// Rotary position embedding applied in place to the query and key heads of a fused QKV
// activation (GPT-NeoX's rotate-half layout; partial rotary; grouped-query layouts).
#include "common.cuh"

namespace neox {
namespace {

template <typename T>
__global__ void rotary_kernel(T* __restrict__ qkv, int64_t tokens, int64_t seq_len,
                              int64_t row_stride, int num_q, int64_t q_offset, int64_t q_stride,
                              int num_k, int64_t k_offset, int64_t k_stride, int rot_half,
                              const float* __restrict__ inv_freq, int64_t position_offset,
                              float sign) {
  const int heads = num_q + num_k;
  const int64_t per_token = int64_t(heads) * rot_half, total = tokens * per_token;
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < total;
       e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t t = e / per_token;
    const int64_t rem = e - t * per_token;
    const int head = static_cast<int>(rem / rot_half);
    const int i = static_cast<int>(rem - int64_t(head) * rot_half);
    const int64_t col = head < num_q ? q_offset + head * q_stride
                                     : k_offset + (head - num_q) * k_stride;
    T* p = qkv + t * row_stride + col;
    // the same fp32 product as torch.outer(positions, inv_freq) in the reference
    const float angle = static_cast<float>(t % seq_len + position_offset) * inv_freq[i];
    float s, c;
    sincosf(angle, &s, &c);
    s *= sign;
    const float x1 = to_f(p[i]), x2 = to_f(p[i + rot_half]);
    p[i] = from_f<T>(x1 * c - x2 * s);
    p[i + rot_half] = from_f<T>(x2 * c + x1 * s);
  }
}

}  // namespace

const char* rotary_inplace(int dtype, void* qkv, int64_t tokens, int64_t seq_len,
                           int64_t row_stride, int num_q, int64_t q_offset, int64_t q_stride,
                           int num_k, int64_t k_offset, int64_t k_stride, int rot_half,
                           const float* inv_freq, int64_t position_offset, bool inverse,
                           void* stream) {
  const int64_t total = tokens * (num_q + num_k) * int64_t(rot_half);
  if (total == 0) return nullptr;
  if (seq_len <= 0) return "seq_len must be positive";
  auto s = static_cast<cudaStream_t>(stream);
  const int threads = 256;
  const int blocks = grid_for(total, threads, sm_count() * 16);
  NEOX_DISPATCH_DTYPE(dtype, {
    rotary_kernel<scalar_t><<<blocks, threads, 0, s>>>(
        static_cast<scalar_t*>(qkv), tokens, seq_len, row_stride, num_q, q_offset, q_stride,
        num_k, k_offset, k_stride, rot_half, inv_freq, position_offset, inverse ? -1.f : 1.f);
  });
  return last_error();
}

}  // namespace neox
