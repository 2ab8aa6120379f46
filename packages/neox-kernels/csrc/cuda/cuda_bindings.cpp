// pybind11 bindings of the fused CUDA kernels. They take raw device pointers (Python ints),
// sizes and the caller's CUDA stream, and include no torch header: the extension does not
// depend on the ABI of the torch it runs under (neox_kernels/ops/*.py registers the torch ops).
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cuda_runtime.h>

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "launchers.h"

namespace py = pybind11;

namespace {

template <typename T = void>
T* ptr(std::uintptr_t address) {
  return reinterpret_cast<T*>(address);
}

void* stream_of(std::uintptr_t s) { return reinterpret_cast<void*>(s); }

void check(const char* error, const char* what) {
  if (error != nullptr) throw std::runtime_error(std::string("neox_kernels.") + what + ": " + error);
}

void use_device(int device) {
  int current = -1;
  if (cudaGetDevice(&current) != cudaSuccess || current != device) {
    if (cudaSetDevice(device) != cudaSuccess)
      throw std::runtime_error("neox_kernels: cannot select CUDA device " + std::to_string(device));
  }
}

py::dict build_info() {
  py::dict info;
  int runtime = 0;
  cudaRuntimeGetVersion(&runtime);
  info["cuda_runtime"] = runtime;
  info["cuda_compiler"] = NEOX_CUDA_COMPILER_VERSION;
  info["cuda_architectures"] = NEOX_CUDA_ARCHITECTURES;
  return info;
}

}  // namespace

PYBIND11_MODULE(_cuda, m) {
  m.doc() = "Fused sm_90 kernels of neox, called through neox_kernels.ops (device pointers in).";
  m.def("build_info", &build_info);
  m.def("device_count", []() {
    int n = 0;
    return cudaGetDeviceCount(&n) == cudaSuccess ? n : 0;
  });

  m.def("norm_forward", [](int device, int dtype, bool rms, std::uintptr_t x, std::uintptr_t res,
                           std::uintptr_t w, std::uintptr_t b, std::uintptr_t out,
                           std::uintptr_t res_out, std::uintptr_t mean, std::uintptr_t rstd,
                           int64_t rows, int64_t hidden, float eps, std::uintptr_t stream) {
    use_device(device);
    check(neox::norm_forward(dtype, rms, ptr(x), ptr(res), ptr(w), ptr(b), ptr(out), ptr(res_out),
                             ptr<float>(mean), ptr<float>(rstd), rows, hidden, eps,
                             stream_of(stream)),
          "norm_forward");
  });
  m.def("norm_backward_blocks", &neox::norm_backward_blocks);
  m.def("norm_backward",
        [](int device, int dtype, bool rms, std::uintptr_t dy, std::uintptr_t dres,
           std::uintptr_t x, std::uintptr_t w, std::uintptr_t mean, std::uintptr_t rstd,
           std::uintptr_t dx, std::uintptr_t pdw, std::uintptr_t pdb, int blocks, int64_t rows,
           int64_t hidden, std::uintptr_t stream) {
          use_device(device);
          check(neox::norm_backward(dtype, rms, ptr(dy), ptr(dres), ptr(x), ptr(w),
                                    ptr<const float>(mean), ptr<const float>(rstd), ptr(dx),
                                    ptr<float>(pdw), ptr<float>(pdb), blocks, rows, hidden,
                                    stream_of(stream)),
                "norm_backward");
        });

  m.def("sum_partials", [](int device, int dtype, std::uintptr_t a, std::uintptr_t out_a,
                           std::uintptr_t b, std::uintptr_t out_b, int partials, int64_t cols,
                           std::uintptr_t stream) {
    use_device(device);
    check(neox::sum_partials(dtype, ptr<const float>(a), ptr(out_a), ptr<const float>(b),
                             ptr(out_b), partials, cols, stream_of(stream)),
          "sum_partials");
  });

  m.def("scale_cast", [](int device, int dtype, std::uintptr_t src, std::uintptr_t dst,
                         std::uintptr_t factor, int64_t n, std::uintptr_t stream) {
    use_device(device);
    check(neox::scale_cast(dtype, ptr<const float>(src), ptr(dst), ptr<const float>(factor), n,
                           stream_of(stream)),
          "scale_cast");
  });

  m.def("swiglu_forward", [](int device, int dtype, std::uintptr_t h, std::uintptr_t out,
                             int64_t rows, int64_t inner, std::uintptr_t stream) {
    use_device(device);
    check(neox::swiglu_forward(dtype, ptr(h), ptr(out), rows, inner, stream_of(stream)),
          "swiglu_forward");
  });
  m.def("swiglu_backward", [](int device, int dtype, std::uintptr_t g, std::uintptr_t h,
                              std::uintptr_t dh, int64_t rows, int64_t inner,
                              std::uintptr_t stream) {
    use_device(device);
    check(neox::swiglu_backward(dtype, ptr(g), ptr(h), ptr(dh), rows, inner, stream_of(stream)),
          "swiglu_backward");
  });
  m.def("bias_gelu_forward", [](int device, int dtype, std::uintptr_t x, std::uintptr_t bias,
                                std::uintptr_t out, int64_t rows, int64_t cols, bool approximate,
                                std::uintptr_t stream) {
    use_device(device);
    check(neox::bias_gelu_forward(dtype, ptr(x), ptr(bias), ptr(out), rows, cols, approximate,
                                  stream_of(stream)),
          "bias_gelu_forward");
  });
  m.def("bias_gelu_backward_partials", [](int device, int dtype, std::uintptr_t g,
                                          std::uintptr_t x, std::uintptr_t bias, std::uintptr_t dx,
                                          int64_t rows, int64_t cols) {
    use_device(device);  // the grid follows this device's SM count
    return neox::bias_gelu_backward_partials(dtype, ptr(g), ptr(x), ptr(bias), ptr(dx), rows,
                                             cols);
  });
  m.def("bias_gelu_backward", [](int device, int dtype, std::uintptr_t g, std::uintptr_t x,
                                 std::uintptr_t bias, std::uintptr_t dx, std::uintptr_t pdb,
                                 int partials, int64_t rows, int64_t cols, bool approximate,
                                 std::uintptr_t stream) {
    use_device(device);
    check(neox::bias_gelu_backward(dtype, ptr(g), ptr(x), ptr(bias), ptr(dx), ptr<float>(pdb),
                                   partials, rows, cols, approximate, stream_of(stream)),
          "bias_gelu_backward");
  });
  m.def("rotary",
        [](int device, int dtype, std::uintptr_t src, std::uintptr_t dst, int64_t tokens,
           int64_t seq_len, int64_t row_stride, int num_q, int64_t q_offset, int64_t q_stride,
           int num_k, int64_t k_offset, int64_t k_stride, int rot_half, std::uintptr_t inv_freq,
           int64_t position_offset, bool inverse, std::uintptr_t stream) {
          use_device(device);
          check(neox::rotary(dtype, ptr(src), ptr(dst), tokens, seq_len, row_stride, num_q,
                             q_offset, q_stride, num_k, k_offset, k_stride, rot_half,
                             ptr<const float>(inv_freq), position_offset, inverse,
                             stream_of(stream)),
                "rotary");
        });
  m.def("cross_entropy_forward",
        [](int device, int dtype, std::uintptr_t logits, int64_t ld, int64_t rows, int64_t vocab,
           std::uintptr_t labels, int64_t vocab_start, std::uintptr_t lse, std::uintptr_t target,
           std::uintptr_t row_weight, float z_loss, std::uintptr_t stream) {
          use_device(device);
          check(neox::cross_entropy_forward(dtype, ptr(logits), ld, rows, vocab,
                                            ptr<const int64_t>(labels), vocab_start,
                                            ptr<float>(lse), ptr<float>(target),
                                            ptr<const float>(row_weight), z_loss,
                                            stream_of(stream)),
                "cross_entropy_forward");
        });
  m.def("cross_entropy_backward",
        [](int device, int dtype, std::uintptr_t logits, int64_t ld, int64_t rows, int64_t vocab,
           std::uintptr_t labels, int64_t vocab_start, std::uintptr_t lse,
           std::uintptr_t grad_lse, std::uintptr_t grad_target, std::uintptr_t stream) {
          use_device(device);
          check(neox::cross_entropy_backward(dtype, ptr(logits), ld, rows, vocab,
                                             ptr<const int64_t>(labels), vocab_start,
                                             ptr<const float>(lse), ptr<const float>(grad_lse),
                                             ptr<const float>(grad_target), stream_of(stream)),
                "cross_entropy_backward");
        });
  // One AdamW step over many fp32 tensors (lists of device addresses, one entry per tensor).
  m.def("adamw_step",
        [](int device, const std::vector<std::uintptr_t>& params,
           const std::vector<std::uintptr_t>& grads, const std::vector<std::uintptr_t>& exp_avgs,
           const std::vector<std::uintptr_t>& exp_avg_sqs,
           const std::vector<std::uintptr_t>& steps, const std::vector<int64_t>& numels,
           double lr, std::uintptr_t lr_ptr, double beta1, double beta2, double weight_decay,
           double eps, std::uintptr_t grad_scale, std::uintptr_t found_inf,
           std::uintptr_t stream) {
          const size_t n = params.size();
          if (grads.size() != n || exp_avgs.size() != n || exp_avg_sqs.size() != n ||
              steps.size() != n || numels.size() != n)
            throw std::invalid_argument("neox_kernels.adamw_step: lists of different lengths");
          use_device(device);
          check(neox::adamw_step(static_cast<int64_t>(n), params.data(), grads.data(),
                                 exp_avgs.data(), exp_avg_sqs.data(), steps.data(),
                                 numels.data(), lr, ptr<const float>(lr_ptr), beta1, beta2,
                                 weight_decay, eps, ptr<const float>(grad_scale),
                                 ptr<const float>(found_inf), stream_of(stream)),
                "adamw_step");
        });
}
