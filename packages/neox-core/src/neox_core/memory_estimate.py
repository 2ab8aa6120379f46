"""Per-rank memory of a training run at the configured layout, before queueing it.

What `neox-train --dry-run` prints so a user can pick TP / ZeRO / micro batch size:

- parameters, gradients, optimizer state: exact element counts of this rank's pieces. The
  model is built on the meta device (no memory) and each parameter is classified by the same
  rules the checkpoint and tensor parallelism use (`checkpoint/sharding.py`): split ones hold
  1/TP, norms and row-parallel biases are whole. ZeRO 1-3 (FSDP2, see
  `distributed/data_parallel.py`) cut each TP-local tensor along dim 0 into DP chunks of
  ceil(rows / DP) rows (FSDP2 pads every chunk to that size). Parameters are fp32 under every
  precision (bf16/fp16 run under autocast: the fp32 parameters are the master weights), so
  gradients are fp32 and AdamW keeps `exp_avg` + `exp_avg_sq` in fp32, 8 bytes per element.
  ZeRO 1 with more than one micro batch per step sums the gradients unsharded until the last
  micro batch (it reduces at the accumulation boundary, as DeepSpeed's stage 1): its
  gradients are counted at full TP-local size.
- parameters gathered for compute (transient): ZeRO 1/2 keep every layer's parameters gathered
  from its forward to its backward (the whole TP-local model at the forward/backward turn);
  ZeRO 3 holds about two layers at a time (the current one and the prefetched next). 4 bytes
  per element, 2 for the decoder layers' with `zero_gather_dtype: bf16`.
- activations of one micro batch: the bytes autograd saves for the backward, counted from the
  model's own code per token (see `activation_bytes_per_token`): fused SDPA (no s x s score
  matrix), bf16/fp16 copies under autocast, the fp32 residual stream and norms, the fp32
  log-probabilities of the loss. With activation checkpointing a layer keeps only its input,
  and one layer's activations are rebuilt at a time in the backward.

Not counted: the CUDA context and allocator caching/fragmentation (typically 1-3 GiB on a
GPU), communication buffers, and the autocast weight cache (bf16 copies of the weights used in
one forward, 2 bytes per gathered parameter element at most).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

GIB = 1024**3


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes per rank (the largest rank: rank 0 holds the biggest FSDP2 chunks)."""

    param_elements: int  # this rank's stored parameter elements
    total_param_elements: int  # the whole model's
    parameters: int
    gradients: int
    optimizer: int
    gathered_parameters: int  # transient, ZeRO 1-3
    activations: int  # one micro batch, without activation checkpointing
    activations_checkpointed: int  # one micro batch, with it
    offloaded: bool  # parameters/gradients/optimizer state live in CPU memory
    checkpoint_activations: bool  # what the config asks for

    @property
    def persistent(self) -> int:
        return 0 if self.offloaded else self.parameters + self.gradients + self.optimizer

    @property
    def peak(self) -> int:
        """Persistent state + gathered parameters + the configured activations."""
        act = self.activations_checkpointed if self.checkpoint_activations else self.activations
        return self.persistent + self.gathered_parameters + act


def _local_elements(shape: tuple[int, ...], tp_dim: int | None, tp: int, dp: int) -> int:
    """Elements of rank 0's piece: 1/TP along `tp_dim`, then ceil(rows/DP) of dim 0."""
    dims = list(shape)
    if tp_dim is not None and tp > 1:
        dims[tp_dim] //= tp
    if dp > 1 and dims:
        dims[0] = math.ceil(dims[0] / dp)
    return math.prod(dims)


def parameter_elements(model_cfg: Any, tp: int, dp_shards: int) -> tuple[int, int, int]:
    """(rank 0's elements, the model's elements, largest layer's TP-local elements)."""
    import torch

    from neox_core.checkpoint.sharding import tp_split_dim
    from neox_core.models import build_model

    with torch.device("meta"):
        model = build_model(model_cfg, seed=None, device="meta")
    local = total = 0
    per_layer: dict[str, int] = {}
    for name, p in model.named_parameters():
        dim = tp_split_dim(name, p.ndim)
        local += _local_elements(tuple(p.shape), dim, tp, dp_shards)
        total += p.numel()
        layer = name.split(".")[1] if name.startswith("layers.") else name
        per_layer[layer] = per_layer.get(layer, 0) + _local_elements(tuple(p.shape), dim, tp, 1)
    return local, total, max(per_layer.values())


def activation_bytes_per_token(
    model_cfg: Any, precision: str, tp: int, sequence_parallel: bool
) -> tuple[int, int, int]:
    """(per layer, per layer with activation checkpointing, embedding + head + loss) bytes of
    one token on one rank: what autograd saves for the backward, from the model's own code.

    `e` is the compute element size (4 in fp32, 2 under bf16/fp16 autocast), `h` hidden,
    `I` intermediate, `H` heads, `V` the padded vocabulary, `t` TP:
    - norms keep the fp32 residual stream: LayerNorm its input (4h) and mean/rstd (8),
      RMSNorm its input and normalised input (8h) and rstd (4); a parallel-residual layer's two
      norms share their input; sequence parallelism divides these by t;
    - each column-parallel linear saves its (gathered, full) input in the compute dtype: e*h
      for the QKV and MLP input projections;
    - attention, / t: SDPA saves q, k, v and its output plus a 4-byte logsumexp per head;
      multi-head q/k come out of rotary as new tensors, v is copied to a contiguous tensor and
      the whole QKV output (3 e h) stays alive through v's view of it: 6 e h; grouped-query
      k/v are repeated to every head (new tensors): 4 e h;
      the output projection saves its input (e h);
    - MLP, / t: GELU keeps the fc_in output and the GELU output (2 e I); SwiGLU the fused
      [up; gate] output, silu(gate) and the product (4 e I);
    - dropout masks (1 byte per element) where `hidden_dropout` > 0;
    - embedding: the token ids (8); head: the final norm, the head's input (e h) and the loss's
      fp32 log-probabilities over the local vocabulary (4 V / t) plus 4 bytes.
    With activation checkpointing a layer keeps only its input, the fp32 residual (4 h / sp).
    """
    h = model_cfg.hidden_size
    inter = model_cfg.intermediate_size
    heads = model_cfg.num_attention_heads
    kv = model_cfg.num_kv_heads or heads
    vocab = model_cfg.padded_vocab_size
    e = 4 if precision == "fp32" else 2
    sp = tp if sequence_parallel else 1
    rms = model_cfg.norm == "rmsnorm"
    norm_stream, norm_stats = (8 * h, 4) if rms else (4 * h, 8)
    if model_cfg.gpt_j_residual and not rms:
        norms = (norm_stream + 2 * norm_stats) // sp  # both read (and save) the same x
    else:
        norms = 2 * (norm_stream + norm_stats) // sp
    linear_inputs = 2 * e * h
    qkv_saved = 6 * e * h if kv == heads else 4 * e * h
    attention = (qkv_saved + e * h + 4 * heads) // tp
    mlp = (4 if model_cfg.activation == "swiglu" else 2) * e * inter // tp
    dropout = 2 * h // sp if model_cfg.hidden_dropout > 0 else 0
    per_layer = norms + linear_inputs + attention + mlp + dropout
    checkpointed = 4 * h // sp
    head = 8 + (norm_stream + norm_stats) // sp + e * h + 4 * vocab // tp + 4
    return per_layer, checkpointed, head


def _summed(cfg: Any, dims: Any) -> bool:
    """Whether ZeRO 1 keeps full-size gradients here (see the module docstring)."""
    p = cfg.parallel
    offloaded = bool(p.offload_param or p.offload_optimizer)
    gas = cfg.training.gradient_accumulation_steps or 1
    return p.zero_stage == 1 and dims.dp > 1 and gas > 1 and not offloaded


def estimate_memory(cfg: Any, dims: Any) -> MemoryEstimate:
    """The per-rank estimate for `cfg` (a NeoxConfig) at `dims` (ParallelDims)."""
    p, m = cfg.parallel, cfg.model
    tp, dp = dims.tp, dims.dp
    zero = p.zero_stage
    shard_dp = dp if zero >= 1 else 1
    local, total, layer_max = parameter_elements(m, tp, shard_dp)
    unsharded, _, _ = parameter_elements(m, tp, 1)
    gathered = 0
    layer_bytes = 2 if p.zero_gather_dtype == "bf16" else 4  # the root always gathers fp32
    if zero in (1, 2) and dp > 1:
        rest = unsharded - local  # the other ranks' pieces, gathered here
        gathered = 4 * rest
        if layer_bytes != 4:  # the decoder layers' share of it at 2 bytes
            layers = min(unsharded, m.num_layers * layer_max)
            gathered = round(rest * (4 - (4 - layer_bytes) * layers / unsharded))
    elif zero == 3 and dp > 1:
        gathered = layer_bytes * 2 * layer_max
    tokens = cfg.training.micro_batch_size * cfg.data.seq_length
    per_layer, ckpt_layer, head = activation_bytes_per_token(
        m, cfg.precision.dtype, tp, p.sequence_parallel
    )
    full = tokens * (m.num_layers * per_layer + head)
    recomputed = tokens * (m.num_layers * ckpt_layer + per_layer + head)
    offloaded = bool(p.offload_param or p.offload_optimizer) and zero >= 1
    return MemoryEstimate(
        param_elements=local,
        total_param_elements=total,
        parameters=4 * local,
        gradients=4 * (unsharded if _summed(cfg, dims) else local),
        optimizer=8 * local,
        gathered_parameters=gathered,
        activations=full,
        activations_checkpointed=recomputed,
        offloaded=offloaded,
        checkpoint_activations=bool(m.checkpoint_activations),
    )


def _gib(n: int) -> str:
    return f"{n / GIB:8.2f} GiB"


def format_memory_estimate(cfg: Any, dims: Any) -> str:
    """The dry run's memory section (see the module docstring for what is counted)."""
    est = estimate_memory(cfg, dims)
    p = cfg.parallel
    where = " (in CPU memory: offload)" if est.offloaded else ""
    ckpt = "on" if est.checkpoint_activations else "off"
    mb, seq = cfg.training.micro_batch_size, cfg.data.seq_length
    lines = [
        f"memory per rank (estimate; TP {dims.tp} x DP {dims.dp}, ZeRO {p.zero_stage}, "
        f"{cfg.precision.dtype}, fp32 parameters and AdamW state):",
        f"  parameters        {_gib(est.parameters)}  "
        f"({est.param_elements:,} of {est.total_param_elements:,} elements){where}",
        f"  gradients         {_gib(est.gradients)}{where}"
        + ("  (full size: ZeRO 1 sums them over the micro batches)" if _summed(cfg, dims) else ""),
        f"  optimizer state   {_gib(est.optimizer)}  (exp_avg + exp_avg_sq){where}",
    ]
    if est.gathered_parameters:
        kind = "every layer, forward to backward" if p.zero_stage < 3 else "~2 layers at a time"
        kind += ", layers in bf16" if p.zero_gather_dtype == "bf16" else ""
        lines.append(f"  gathered params   {_gib(est.gathered_parameters)}  transient ({kind})")
    lines += [
        f"  activations       {_gib(est.activations)}  per micro batch ({mb} x {seq} tokens), "
        "without activation checkpointing",
        f"                    {_gib(est.activations_checkpointed)}  with activation "
        "checkpointing (one layer recomputed at a time)",
        f"  peak              {_gib(est.peak)}  (activation checkpointing {ckpt}; plus the "
        "CUDA context and allocator cache, typically 1-3 GiB)",
    ]
    return "\n".join(lines)
