// One AdamW step over many fp32 tensors: torch.optim.AdamW's fused math (decoupled weight
// decay), with GradScaler's grad_scale / found_inf, in one launch for up to kAdamWBatch tensors.
//
// Why not torch's fused AdamW: it launches one kernel per ~110 tensors / 320 chunks of 64K
// elements, each less than a wave of the GPU, and reaches about 2/3 of the copy bandwidth on
// an H200. Here one grid of one resident wave strides over all chunks of all tensors.
//
// Chunk table: the tensors' pointers and sizes travel in the kernel's parameter block
// (`__grid_constant__`, ~29 KB: CUDA >= 12.1 on Volta or newer allows 32,764 bytes), so a step
// needs no host-to-device copy, no device buffer and no host sync, and a CUDA graph captures it
// as it is; more than kAdamWBatch tensors take more launches. Each tensor is cut into chunks of
// kAdamWChunk elements; `first_chunk` holds the prefix sums of the chunk counts, and a block
// finds the tensor of its chunk by binary search (the same index over the block: constant-cache
// broadcasts). Blocks stride over the chunks (block b takes chunks b, b + grid, ...), so
// concurrent blocks work on neighbouring memory and the tail is at most one chunk per block.
//
// Vector width: 16-byte loads and stores (float4, streaming cache hints: nothing is read twice)
// when a tensor's four arrays are 16-byte aligned, two packs per thread per round (eight 16-byte
// loads in flight); a scalar loop for a tensor's last n % 4 elements and for misaligned tensors.
//
// Numerics follow ATen's fused Adam functor (fused_adam_utils.cuh): the moment updates, the
// weight decay and eps are computed in double and rounded to fp32, with the betas taken as fp32
// first (torch 2.11's CUDA kernel does so: with beta2 = 0.999 a double 1 - beta2 left
// exp_avg_sq 1.3e-5 (relative) above torch's on the H200), the rest in fp32; the bias corrections use pow
// in double of the fp32 step + 1. The results agree with torch.optim.AdamW(fused=True) to
// rounding (the gpu tests bound the difference). Differences from torch: the unscaled gradient
// is not written back to `grads` (torch does so when grad_scale is given; that is 4 more bytes
// per parameter), and any nonzero found_inf skips the step (torch skips when it is exactly 1
// and subtracts it from the step).
// The step counts are incremented by a second, one-block kernel after the update (the update
// reads step + 1), unless found_inf is nonzero.
#include <memory>

#include "common.cuh"

namespace neox {
namespace {

constexpr int kAdamWBatch = 512;     // tensors per launch (parameter block ~29 KB)
constexpr int kAdamWThreads = 256;
constexpr int64_t kAdamWChunk = 8192;  // elements; a multiple of 4 * 2 * kAdamWThreads
static_assert(kAdamWChunk % (8 * kAdamWThreads) == 0, "a chunk is whole rounds of packs");

struct AdamWTensor {
  float* p;
  const float* g;
  float* m;  // exp_avg
  float* v;  // exp_avg_sq
  const float* step;  // the count before this step
  int64_t n;
};

struct AdamWBatch {
  AdamWTensor t[kAdamWBatch];
  int64_t first_chunk[kAdamWBatch + 1];  // chunks of tensors [0, i); [count] is the total
  int count;
};

struct AdamWArgs {
  double lr, beta1, beta2, weight_decay, eps;
  const float* lr_ptr;      // nullable: device fp32 learning rate, used instead of lr
  const float* grad_scale;  // nullable: gradients are divided by it
  const float* found_inf;   // nullable: nonzero skips the step
};

struct AdamWSteps {
  float* step[kAdamWBatch];
  int count;
};

static_assert(sizeof(AdamWBatch) + sizeof(AdamWArgs) <= 32764,
              "kernel parameters above the 32,764-byte limit");

// Per tensor constants; what ATen computes per element or per chunk, computed once per block
// while the step count stays the same.
struct AdamWCoef {
  double lr_wd, beta1, one_minus_beta1, beta2, one_minus_beta2, eps;
  float step_size, bc2_sqrt, grad_scale;
};

// kDecay: weight_decay != 0; kScaled: a grad_scale is given (compile-time, so that a round's
// two packs are one branch-free block of arithmetic).
template <bool kDecay, bool kScaled>
__device__ __forceinline__ void adamw_math(float& p, float g, float& m, float& v,
                                           const AdamWCoef& c) {
  // fp32 division rounded once: the same value as ATen's float(double(g) / double(scale))
  if (kScaled) g = g / c.grad_scale;
  if (kDecay) p = static_cast<float>(static_cast<double>(p) - c.lr_wd * static_cast<double>(p));
  const double gd = g;
  m = static_cast<float>(c.beta1 * static_cast<double>(m) + c.one_minus_beta1 * gd);
  v = static_cast<float>(c.beta2 * static_cast<double>(v) + c.one_minus_beta2 * gd * gd);
  const float denom = static_cast<float>(static_cast<double>(sqrtf(v) / c.bc2_sqrt) + c.eps);
  p -= c.step_size * m / denom;
}

template <bool kDecay, bool kScaled>
__device__ __forceinline__ void adamw_pack(float4& p, const float4& g, float4& m, float4& v,
                                           const AdamWCoef& c) {
  adamw_math<kDecay, kScaled>(p.x, g.x, m.x, v.x, c);
  adamw_math<kDecay, kScaled>(p.y, g.y, m.y, v.y, c);
  adamw_math<kDecay, kScaled>(p.z, g.z, m.z, v.z, c);
  adamw_math<kDecay, kScaled>(p.w, g.w, m.w, v.w, c);
}

// The tensor holding global chunk c: the last t with first_chunk[t] <= c (tensors without
// chunks share their successor's first_chunk and are never chosen).
__device__ __forceinline__ int tensor_of_chunk(const AdamWBatch& b, int64_t c) {
  int lo = 0, hi = b.count - 1;
  while (lo < hi) {
    const int mid = (lo + hi + 1) >> 1;
    if (b.first_chunk[mid] <= c)
      lo = mid;
    else
      hi = mid - 1;
  }
  return lo;
}

template <bool kDecay, bool kScaled>
__global__ void __launch_bounds__(kAdamWThreads)
    adamw_kernel(const __grid_constant__ AdamWBatch b, const AdamWArgs a) {
  if (a.found_inf != nullptr && *a.found_inf != 0.f) return;
  const double lr = a.lr_ptr != nullptr ? static_cast<double>(*a.lr_ptr) : a.lr;
  AdamWCoef c;
  c.lr_wd = lr * a.weight_decay;
  // the betas as fp32, as torch's CUDA kernel (torch 2.11) holds them: with beta2 = 0.999 the
  // double 1 - beta2 made exp_avg_sq 1.3e-5 larger than torch's. 1 - b is exact either way.
  c.beta1 = static_cast<float>(a.beta1);
  c.one_minus_beta1 = 1 - c.beta1;
  c.beta2 = static_cast<float>(a.beta2);
  c.one_minus_beta2 = 1 - c.beta2;
  c.eps = a.eps;
  c.grad_scale = kScaled ? *a.grad_scale : 1.f;
  c.step_size = 0.f;
  c.bc2_sqrt = 1.f;
  float coef_step = -1.f;  // the step count c was computed for (counts start at 1)

  const int64_t chunks = b.first_chunk[b.count];
  for (int64_t chunk = blockIdx.x; chunk < chunks; chunk += gridDim.x) {
    const int t = tensor_of_chunk(b, chunk);
    const AdamWTensor& T = b.t[t];
    const float step = *T.step + 1.f;  // fp32, as torch's _foreach_add_(steps, 1)
    if (step != coef_step) {  // all parameters normally share one count: once per block
      coef_step = step;
      const double bc1 = 1 - pow(a.beta1, static_cast<double>(step));
      const double bc2 = 1 - pow(a.beta2, static_cast<double>(step));
      c.step_size = static_cast<float>(lr / static_cast<double>(static_cast<float>(bc1)));
      c.bc2_sqrt = static_cast<float>(sqrt(bc2));
    }
    float* __restrict__ p = T.p;
    const float* __restrict__ g = T.g;
    float* __restrict__ m = T.m;
    float* __restrict__ v = T.v;
    const int64_t begin = (chunk - b.first_chunk[t]) * kAdamWChunk;
    const int64_t end = min(begin + kAdamWChunk, T.n);
    const bool aligned =
        ((reinterpret_cast<uintptr_t>(p) | reinterpret_cast<uintptr_t>(g) |
          reinterpret_cast<uintptr_t>(m) | reinterpret_cast<uintptr_t>(v)) & 15) == 0;
    int64_t scalar_from = begin;
    if (aligned) {
      auto* p4 = reinterpret_cast<float4*>(p);
      auto* g4 = reinterpret_cast<const float4*>(g);
      auto* m4 = reinterpret_cast<float4*>(m);
      auto* v4 = reinterpret_cast<float4*>(v);
      const int64_t last = end / 4;  // packs [begin / 4, last); begin is a multiple of 4
      for (int64_t j = begin / 4 + threadIdx.x; j < last; j += 2 * kAdamWThreads) {
        const int64_t k = j + kAdamWThreads;
        const bool second = k < last;
        float4 pa = __ldcs(p4 + j), ga = __ldcs(g4 + j), ma = __ldcs(m4 + j), va = __ldcs(v4 + j);
        float4 pb, gb, mb, vb;
        if (second) {
          pb = __ldcs(p4 + k);
          gb = __ldcs(g4 + k);
          mb = __ldcs(m4 + k);
          vb = __ldcs(v4 + k);
        }
        adamw_pack<kDecay, kScaled>(pa, ga, ma, va, c);
        __stcs(p4 + j, pa);
        __stcs(m4 + j, ma);
        __stcs(v4 + j, va);
        if (second) {
          adamw_pack<kDecay, kScaled>(pb, gb, mb, vb, c);
          __stcs(p4 + k, pb);
          __stcs(m4 + k, mb);
          __stcs(v4 + k, vb);
        }
      }
      scalar_from = last * 4;  // the tensor's last n % 4 elements, in its last chunk
    }
    for (int64_t i = scalar_from + threadIdx.x; i < end; i += kAdamWThreads) {
      float pv = p[i], mv = m[i], vv = v[i];
      adamw_math<kDecay, kScaled>(pv, g[i], mv, vv, c);
      p[i] = pv;
      m[i] = mv;
      v[i] = vv;
    }
  }
}

// After the update (same stream): step += 1 unless found_inf is nonzero.
__global__ void adamw_count_kernel(const __grid_constant__ AdamWSteps s, const float* found_inf) {
  if (found_inf != nullptr && *found_inf != 0.f) return;
  for (int i = threadIdx.x; i < s.count; i += blockDim.x) *s.step[i] += 1.f;
}

}  // namespace

const char* adamw_step(int64_t count, const uintptr_t* params, const uintptr_t* grads,
                       const uintptr_t* exp_avgs, const uintptr_t* exp_avg_sqs,
                       const uintptr_t* steps, const int64_t* numels, double lr,
                       const float* lr_ptr, double beta1, double beta2, double weight_decay,
                       double eps, const float* grad_scale, const float* found_inf,
                       void* stream) {
  if (count <= 0) return nullptr;
  auto s = static_cast<cudaStream_t>(stream);
  const AdamWArgs args{lr, beta1, beta2, weight_decay, eps, lr_ptr, grad_scale, found_inf};
  using Kernel = void (*)(const AdamWBatch, const AdamWArgs);
  const bool decay = weight_decay != 0, scaled = grad_scale != nullptr;
  const Kernel kernel = decay ? (scaled ? adamw_kernel<true, true> : adamw_kernel<true, false>)
                              : (scaled ? adamw_kernel<false, true> : adamw_kernel<false, false>);
  for (int64_t k = 0; k < count; ++k) {  // before any launch: all tensors or none
    if (numels[k] < 0) return "negative numel";
    if (steps[k] == 0 || (numels[k] > 0 && (params[k] == 0 || grads[k] == 0 ||
                                             exp_avgs[k] == 0 || exp_avg_sqs[k] == 0)))
      return "null tensor pointer";
  }
  int per_sm = 0;  // one resident wave
  const cudaError_t err =
      cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, kAdamWThreads, 0);
  if (err != cudaSuccess) return cudaGetErrorString(err);
  const int max_blocks = sm_count() * (per_sm > 0 ? per_sm : 1);
  // ~33 KB together: on the heap rather than a thread's stack
  auto batch_storage = std::make_unique<AdamWBatch>();
  auto counts_storage = std::make_unique<AdamWSteps>();
  AdamWBatch& batch = *batch_storage;
  AdamWSteps& counts = *counts_storage;
  for (int64_t start = 0; start < count; start += kAdamWBatch) {
    const int n = static_cast<int>(count - start < kAdamWBatch ? count - start : kAdamWBatch);
    int64_t chunks = 0;
    for (int i = 0; i < n; ++i) {
      const int64_t k = start + i;
      batch.t[i] = {reinterpret_cast<float*>(params[k]), reinterpret_cast<const float*>(grads[k]),
                    reinterpret_cast<float*>(exp_avgs[k]), reinterpret_cast<float*>(exp_avg_sqs[k]),
                    reinterpret_cast<const float*>(steps[k]), numels[k]};
      batch.first_chunk[i] = chunks;
      chunks += (numels[k] + kAdamWChunk - 1) / kAdamWChunk;
      counts.step[i] = reinterpret_cast<float*>(steps[k]);
    }
    batch.first_chunk[n] = chunks;
    batch.count = n;
    counts.count = n;
    if (chunks > 0) {
      const int blocks = static_cast<int>(chunks < max_blocks ? chunks : max_blocks);
      kernel<<<blocks, kAdamWThreads, 0, s>>>(batch, args);
    }
    adamw_count_kernel<<<1, 256, 0, s>>>(counts, found_inf);
  }
  return last_error();
}

}  // namespace neox
