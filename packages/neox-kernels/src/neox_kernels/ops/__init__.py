"""Fused kernels as PyTorch ops (`torch.ops.neox.*`) with PyTorch reference fallbacks.

Importing this module registers the ops. Each runs the compiled CUDA kernel when its tensors
are on a CUDA device and the package was built with CUDA, and a PyTorch reference of the same
semantics otherwise (CPU, no nvcc at build time, or NEOX_KERNELS_REFERENCE=1). Every op has a
fake implementation and autograd, so `torch.compile` traces through it without graph breaks.
"""

from neox_kernels.ops._backend import cuda_extension, reference_forced
from neox_kernels.ops.activations import bias_gelu, swiglu
from neox_kernels.ops.cross_entropy import linear_cross_entropy, linear_cross_entropy_shard
from neox_kernels.ops.norms import layer_norm, rms_norm
from neox_kernels.ops.rotary import rotary_qkv_, rotary_qkv_grad
from neox_kernels.ops.vocab_parallel import vocab_parallel_linear_cross_entropy

OPS = (
    "norm_fwd",
    "norm_bwd",
    "swiglu_fwd",
    "swiglu_bwd",
    "bias_gelu_fwd",
    "bias_gelu_bwd",
    "rotary_",
    "rotary",
    "linear_cross_entropy",
    "linear_cross_entropy_weight_grad",
    "linear_cross_entropy_stats",
    "linear_cross_entropy_stats_bwd",
)


def cuda_available() -> bool:
    """True when the compiled kernels are present and a CUDA device is visible."""
    ext = cuda_extension()
    return ext is not None and ext.device_count() > 0 and not reference_forced()


__all__ = [
    "OPS",
    "bias_gelu",
    "cuda_available",
    "layer_norm",
    "linear_cross_entropy",
    "linear_cross_entropy_shard",
    "rms_norm",
    "rotary_qkv_",
    "rotary_qkv_grad",
    "swiglu",
    "vocab_parallel_linear_cross_entropy",
]
