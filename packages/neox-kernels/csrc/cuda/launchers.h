// Host entry points of the fused kernels. Plain C++ types only (no CUDA, no torch headers):
// the pybind11 bindings include this file and pass device pointers and the caller's stream.
// Every launcher returns nullptr on success or a static error string.
#pragma once

#include <cstdint>

namespace neox {

enum DType : int { kFloat32 = 0, kFloat16 = 1, kBFloat16 = 2 };

// RMSNorm (rms=true) or LayerNorm over the last dim of contiguous [rows, hidden] x.
// residual (nullable): x + residual is normalised and written to residual_out.
// weight/bias nullable. mean (LayerNorm only) and rstd: [rows] fp32, saved for backward.
const char* norm_forward(int dtype, bool rms, const void* x, const void* residual,
                         const void* weight, const void* bias, void* out, void* residual_out,
                         float* mean, float* rstd, int64_t rows, int64_t hidden, float eps,
                         void* stream);

// grad_x = d(norm)/d(input) + grad_residual_out (nullable); input is what was normalised.
// partial_dw / partial_db (nullable): [blocks, hidden] fp32 per-block sums, summed by the caller.
const char* norm_backward(int dtype, bool rms, const void* grad_out, const void* grad_residual_out,
                          const void* input, const void* weight, const float* mean,
                          const float* rstd, void* grad_x, float* partial_dw, float* partial_db,
                          int blocks, int64_t rows, int64_t hidden, void* stream);
// Blocks (rows of partial_dw / partial_db) to pass to norm_backward: one resident wave.
int norm_backward_blocks(int dtype, bool rms, bool residual, int64_t rows, int64_t hidden);

// out_a[c] = sum over r of a[r, c] for [partials, cols] fp32 a, rounded once to dtype; b and
// out_b alike (nullable: one array). The weight and bias gradients from the per-block partials.
const char* sum_partials(int dtype, const float* a, void* out_a, const float* b, void* out_b,
                         int partials, int64_t cols, void* stream);

// dst = src * factor[0] over n contiguous elements, src fp32 and dst of dtype (16-byte aligned;
// dst == src in place for fp32); factor is a device fp32 scalar.
const char* scale_cast(int dtype, const float* src, void* dst, const float* factor, int64_t n,
                       void* stream);

// h: [rows, 2*inner] = [up; gate]; out = up * silu(gate), [rows, inner].
const char* swiglu_forward(int dtype, const void* h, void* out, int64_t rows, int64_t inner,
                           void* stream);
const char* swiglu_backward(int dtype, const void* grad_out, const void* h, void* grad_h,
                            int64_t rows, int64_t inner, void* stream);

// out = gelu(x + bias) over [rows, cols]; bias [cols] nullable; tanh form when approximate.
const char* bias_gelu_forward(int dtype, const void* x, const void* bias, void* out, int64_t rows,
                              int64_t cols, bool approximate, void* stream);
// partial_db (nullable): [partials, cols] fp32 column sums of grad_x, summed by the caller into
// the bias gradient; partials must be bias_gelu_backward_partials(...) of the same arguments.
const char* bias_gelu_backward(int dtype, const void* grad_out, const void* x, const void* bias,
                               void* grad_x, float* partial_db, int partials, int64_t rows,
                               int64_t cols, bool approximate, void* stream);
int bias_gelu_backward_partials(int dtype, const void* grad_out, const void* x, const void* bias,
                                const void* grad_x, int64_t rows, int64_t cols);

// dst = src with the first 2*rot_half channels of each query and key head rotated, for
// [tokens, row_stride] tensors: head h of queries starts at column q_offset + h*q_stride (keys
// alike). src == dst rotates in place and touches nothing else; otherwise every other channel
// is copied. Position of token t is (t % seq_len) + position_offset; angle = position *
// inv_freq[i]. inverse=true rotates by the negative angle (the backward).
const char* rotary(int dtype, const void* src, void* dst, int64_t tokens, int64_t seq_len,
                   int64_t row_stride, int num_q, int64_t q_offset, int64_t q_stride, int num_k,
                   int64_t k_offset, int64_t k_stride, int rot_half, const float* inv_freq,
                   int64_t position_offset, bool inverse, void* stream);

// Per row of a logits chunk [rows, vocab] (row stride ld) whose columns are the vocabulary ids
// vocab_start..vocab_start+vocab-1: lse = logsumexp, target = logit of labels[row] (0 when the
// label is outside the shard or ignored). With row_weight (nullable) the chunk is overwritten
// by the gradient of sum_r w_r * (lse_r - target_r + z_loss * lse_r^2).
const char* cross_entropy_forward(int dtype, void* logits, int64_t ld, int64_t rows,
                                  int64_t vocab, const int64_t* labels, int64_t vocab_start,
                                  float* lse, float* target, const float* row_weight,
                                  float z_loss, void* stream);
// Overwrites the chunk by grad_lse[r] * softmax(row; lse[r]) + grad_target[r] * onehot(label).
const char* cross_entropy_backward(int dtype, void* logits, int64_t ld, int64_t rows,
                                   int64_t vocab, const int64_t* labels, int64_t vocab_start,
                                   const float* lse, const float* grad_lse,
                                   const float* grad_target, void* stream);

// One AdamW step (torch.optim.AdamW's fused math, decoupled weight decay) over `count` fp32
// tensors, in place: params[i], grads[i], exp_avgs[i], exp_avg_sqs[i] are device addresses of
// numels[i] contiguous elements; steps[i] is the tensor's fp32 step count (a device scalar),
// read as step + 1 and then incremented. lr_ptr (nullable): a device fp32 learning rate used
// instead of lr. grad_scale (nullable): each gradient is divided by it as read (grads are not
// written). found_inf (nullable): when nonzero, nothing changes, step counts included.
const char* adamw_step(int64_t count, const uintptr_t* params, const uintptr_t* grads,
                       const uintptr_t* exp_avgs, const uintptr_t* exp_avg_sqs,
                       const uintptr_t* steps, const int64_t* numels, double lr,
                       const float* lr_ptr, double beta1, double beta2, double weight_decay,
                       double eps, const float* grad_scale, const float* found_inf,
                       void* stream);

}  // namespace neox
