"""Megatron tensor (and sequence) parallelism for neox's `CausalLM`, applied from outside.

Every parameter becomes a DTensor on the TP mesh; its local piece on TP rank r is exactly the
checkpoint's TP shard r (see `tp_layout`). The plan, per decoder layer:

    input_norm / post_attention_norm   replicated params; with sequence parallelism they run on
                                       sequence shards (Shard(1)) between the TP regions
    attention.qkv                      column-parallel by head group: rank r holds [q_r; k_r; v_r]
    attention.out                      row-parallel (all-reduce, or reduce-scatter under SP)
    mlp.fc_in                          column-parallel; SwiGLU keeps [up_r; gate_r] per rank
    mlp.fc_out                         row-parallel
    embed / lm_head (tied or not)      vocabulary-parallel; logits stay sharded on the vocab
                                       (a DTensor Shard(-1)) for distributed/loss.py

DTensor's parallel styles do the work where they fit. Three places need more. Each region's
input (attention, MLP, LM head) is cast to autocast's dtype before it crosses the TP boundary
(`_region_input`), so the boundary's collectives carry bf16 under neox-train's bf16 regime,
not the fp32 residual stream. The LM head is applied in `CausalLM.forward` as
`F.linear(x, head_weight())` (no module call for a style to hook), so the final norm's output
is made a replicated DTensor and DTensor's own linear keeps the vocab sharded. And
grouped-query attention with more TP ranks than kv heads, where Megatron
replicates kv heads. Here the k/v rows stay cut contiguously (one copy of every parameter, so
the gradient norm and the checkpoint are as at TP 1) and each rank all-gathers the k/v rows of
the weight in its forward (reduce-scatter in backward) to get its whole kv head.

The model files are untouched: `Attention` already reads `num_heads`/`num_kv_heads` from its own
attributes, which are set here to the per-rank counts.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributed._functional_collectives import AsyncCollectiveTensor
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.tensor import DTensor, Replicate, Shard, distribute_module, distribute_tensor
from torch.distributed.tensor.parallel import (
    ColwiseParallel,
    RowwiseParallel,
    SequenceParallel,
    parallelize_module,
)
from torch.distributed.tensor.parallel.style import ParallelStyle

from neox_core.config.schema import ModelConfig
from neox_core.distributed.tp_layout import canonical_to_tp_global, tp_param_layout
from neox_core.models.decoder import CausalLM


class _AllGatherRows(torch.autograd.Function):
    """All-gather along dim 0 whose backward reduce-scatters (sums) the gradient.

    Written here rather than taken from torch's private functional collectives, whose
    autograd all-gather is missing from older torch releases (2.11 on the GPU image).
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, group) -> torch.Tensor:  # type: ignore[override]
        ctx.group = group
        world = torch.distributed.get_world_size(group)
        out = x.new_empty((x.shape[0] * world, *x.shape[1:]))
        torch.distributed.all_gather_into_tensor(out, x, group=group)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        world = torch.distributed.get_world_size(ctx.group)
        out = grad.new_empty((grad.shape[0] // world, *grad.shape[1:]))
        torch.distributed.reduce_scatter_tensor(out, grad.contiguous(), group=ctx.group)
        return out, None


def _all_gather_rows(x: torch.Tensor, group) -> torch.Tensor:
    return _AllGatherRows.apply(x, group)


class TensorParallelError(ValueError):
    """The model cannot be split over this many tensor-parallel ranks."""


def check_tensor_parallel_layout(cfg: ModelConfig, tp: int) -> None:
    """Raise with the config keys and numbers when `cfg` cannot be split `tp` ways."""
    heads = cfg.num_attention_heads
    kv = cfg.num_kv_heads or heads
    head_dim = cfg.hidden_size // heads
    problems = []
    if heads % tp:
        problems.append(f"num_attention_heads {heads} is not divisible by model_parallel_size {tp}")
    if kv % tp and tp % kv:
        problems.append(
            f"num_kv_heads {kv} must divide or be a multiple of model_parallel_size {tp}"
        )
    elif tp > kv and (kv * head_dim) % tp:
        problems.append(
            f"kv rows num_kv_heads x head_dim = {kv * head_dim} not divisible by "
            f"model_parallel_size {tp}"
        )
    if cfg.intermediate_size is not None and cfg.intermediate_size % tp:
        problems.append(
            f"intermediate_size {cfg.intermediate_size} is not divisible by model_parallel_size {tp}"
        )
    if cfg.padded_vocab_size is not None and cfg.padded_vocab_size % tp:
        problems.append(
            f"padded vocabulary {cfg.padded_vocab_size} is not divisible by model_parallel_size "
            f"{tp} (set make_vocab_size_divisible_by)"
        )
    if problems:
        raise TensorParallelError("tensor parallelism: " + "; ".join(problems))


class _ReplicateParallel(ParallelStyle):
    """Replicated params and a replicated DTensor in/out (norms when there is no SP).

    Keeping them DTensors (rather than plain tensors) lets every parameter of the model be a
    DTensor, which gradient clipping and FSDP2 on a 2-D mesh need.
    """

    def _apply(self, module: nn.Module, device_mesh: DeviceMesh) -> nn.Module:
        def inputs(mod: nn.Module, args: tuple, mesh: DeviceMesh) -> tuple:
            x = args[0]
            if not isinstance(x, DTensor):
                x = DTensor.from_local(x, mesh, [Replicate()], run_check=False)
            return (x, *args[1:])

        def partition(name: str, mod: nn.Module, mesh: DeviceMesh) -> None:
            for p_name, p in list(mod.named_parameters(recurse=False)):
                dt = DTensor.from_local(p.data, mesh, [Replicate()], run_check=False)
                mod.register_parameter(p_name, nn.Parameter(dt, requires_grad=p.requires_grad))

        return distribute_module(module, device_mesh, partition, inputs)  # type: ignore[arg-type]


class KVReplicatingQKV(nn.Module):
    """Fused QKV when TP exceeds the kv heads: rank r computes its query heads and kv head r*kv//tp.

    `weight`/`bias` are DTensors Shard(0) whose local rows are [q_r; k_r; v_r], k_r and v_r being
    contiguous 1/tp cuts of all k and v rows (the checkpoint's shard, one copy of each value).
    The forward all-gathers the k and v rows and keeps this rank's kv head.
    """

    def __init__(
        self, linear: nn.Linear, mesh: DeviceMesh, q_rows: int, kv_rows: int, head_dim: int
    ):
        super().__init__()
        self.mesh = mesh
        self.tp = mesh.size()
        self.q_rows_local = q_rows // self.tp
        self.kv_rows_local = kv_rows // self.tp
        self.head_dim = head_dim
        kv_heads = kv_rows // head_dim
        self.kv_head = mesh.get_local_rank() * kv_heads // self.tp
        for name in ("weight", "bias"):
            p = getattr(linear, name)
            if p is None:
                self.register_parameter(name, None)
                continue
            dt = distribute_tensor(p.data, mesh, [Shard(0)])
            self.register_parameter(name, nn.Parameter(dt, requires_grad=p.requires_grad))

    def _local_rows(self, p: DTensor) -> DTensor:
        """This rank's [q_r; k_head; v_head] rows, as a Shard(0) DTensor of the expanded weight."""
        local = p.to_local()
        kvl = self.kv_rows_local
        q, k, v = local.split((self.q_rows_local, kvl, kvl), dim=0)
        group = self.mesh.get_group()
        lo, hi = self.kv_head * self.head_dim, (self.kv_head + 1) * self.head_dim
        k = _all_gather_rows(k.contiguous(), group)[lo:hi]
        v = _all_gather_rows(v.contiguous(), group)[lo:hi]
        rows = torch.cat((q, k, v), dim=0)
        return DTensor.from_local(rows, self.mesh, [Shard(0)], run_check=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # as ColwiseParallel: a replicated DTensor input, whose gradient DTensor sums over ranks
        if isinstance(x, DTensor):
            x = x.redistribute(placements=[Replicate()])
        else:
            x = DTensor.from_local(x, self.mesh, [Replicate()], run_check=False)
        bias = None if self.bias is None else self._local_rows(self.bias)
        return F.linear(x, self._local_rows(self.weight), bias).to_local()


def _permute_fused_rows(model: CausalLM, tp: int) -> None:
    """Reorder fused tensors so that the contiguous Shard(0) chunk r is checkpoint shard r."""
    layout = tp_param_layout(model.config)
    with torch.no_grad():
        for name, p in model.named_parameters():
            tp_dim, blocks = layout[name]
            if blocks is not None:
                p.copy_(canonical_to_tp_global(p.detach().clone(), tp_dim, tp, blocks))


def _autocast_dtype(t: torch.Tensor) -> torch.dtype | None:
    """The dtype autocast would cast `t` to in a matmul, or None when it leaves it as it is."""
    device = t.device.type
    if not t.is_floating_point() or not torch.is_autocast_enabled(device):
        return None
    dtype = torch.get_autocast_dtype(device)
    return dtype if t.dtype.itemsize > dtype.itemsize else None


def _region_input(x: torch.Tensor, mesh: DeviceMesh, layout) -> DTensor:
    """The input of a column-parallel region (attention, MLP, LM head): replicated over the TP
    group, in the dtype its matmuls take, with its gradient summed over the group right here.

    Under autocast the fp32 residual stream would otherwise cross the TP boundary in fp32:
    sequence parallelism all-gathered it and reduce-scattered its gradient in fp32, and
    without SP DTensor carried the partial gradient through the norm's backward and summed it
    in fp32 afterwards, leaving the norm weights' gradients partial (one more all-reduce per
    norm weight in the gradient norm and in every optimizer op). Casting first, as autocast
    would at the matmul (the same values forward), and leaving DTensor at `from_local`,
    whose backward sums the partial gradient in the compute dtype (bf16, as Megatron's), halves
    those bytes and hands the norms a summed gradient.
    """
    placements = x.placements if isinstance(x, DTensor) else (layout,)
    local = x.to_local() if isinstance(x, DTensor) else x
    dtype = _autocast_dtype(local)
    if dtype is not None:
        local = local.to(dtype)
    x = DTensor.from_local(local, mesh, placements, run_check=False)
    return x.redistribute(placements=[Replicate()])  # SP: all-gather, backward reduce-scatter


class _RegionInput(ParallelStyle):
    """`_region_input` on a module's first input (the attention and MLP blocks)."""

    def __init__(self, layout) -> None:
        self.layout = layout

    def _apply(self, module: nn.Module, device_mesh: DeviceMesh) -> nn.Module:
        def hook(mod: nn.Module, args: tuple) -> tuple:
            return (_region_input(args[0], device_mesh, self.layout), *args[1:])

        module.register_forward_pre_hook(hook)
        return module


def _head_input(mesh: DeviceMesh, layout):
    """final_norm output -> `_region_input`, so F.linear with the Shard(0) head gives Shard(-1)."""

    def hook(mod: nn.Module, args: tuple, out: torch.Tensor) -> DTensor:
        return _region_input(out, mesh, layout)

    return hook


class _RankDropoutRng:
    """Hooks that give dropout inside a module its own random stream per TP rank.

    Dropout on activations that are sharded over TP ranks (attention heads; the hidden states
    between regions under SP) must draw different masks on every rank, while dropout on
    replicated activations must draw the same; Megatron keeps a separate "model-parallel" CUDA
    RNG state for the former. Here the pre-hook draws one seed from the default generator
    (the same draw on every rank, so the default streams stay in step), seeds the generators
    with it and the TP rank, and the post-hook restores the default state. The stream is a
    function of the default state, so activation checkpointing (which restores that state
    before recomputing) replays the same masks.
    """

    def __init__(self, tp_rank: int) -> None:
        self.tp_rank = tp_rank
        self.saved: list[tuple[torch.Tensor, list[torch.Tensor] | None]] = []

    def pre(self, mod: nn.Module, args: tuple) -> None:
        if not mod.training:
            return
        cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None
        seed = int(torch.randint(0, 2**62, (1,)).item())
        self.saved.append((torch.get_rng_state(), cuda))
        torch.manual_seed(seed + 104729 * (self.tp_rank + 1))

    def post(self, mod: nn.Module, args: tuple, out: object) -> None:
        if not mod.training:
            return
        cpu, cuda = self.saved.pop()
        torch.set_rng_state(cpu)
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)

    def attach(self, module: nn.Module) -> None:
        module.register_forward_pre_hook(self.pre)
        module.register_forward_hook(self.post)


def _waited(mod: nn.Module, args: tuple, out: torch.Tensor) -> torch.Tensor:
    """The embedding's output as a plain tensor, not an AsyncCollectiveTensor.

    RowwiseParallel returns the result of its all-reduce (reduce-scatter under SP) as
    torch's AsyncCollectiveTensor, waited on at first use. Eager that is fine, but as the input
    of a compiled layer (`compile: true`) its backward reaches DTensor's redistribute as a
    plain tensor and fails ("'Tensor' object has no attribute '_local_tensor'", torch 2.15).
    A clone waits for it with autograd intact, once per forward (one [B, S, H] copy); the
    layers' outputs are sums, which wait already.
    """
    return out.clone() if isinstance(out, AsyncCollectiveTensor) else out


def _check_sequence_length(tp: int):
    def hook(mod: nn.Module, args: tuple) -> None:
        seq = args[0].shape[1]
        if seq % tp:
            raise TensorParallelError(
                f"sequence_parallel: sequence length {seq} is not divisible by "
                f"model_parallel_size {tp}"
            )

    return hook


def apply_tensor_parallel(model: CausalLM, tp_mesh: DeviceMesh, *, sequence_parallel: bool) -> None:
    """Split `model` in place over the 1-D mesh `tp_mesh` (Megatron TP, optionally with SP).

    Call before data parallelism and before building the optimizer. Afterwards `model(tokens)`
    returns logits as a DTensor sharded on the vocabulary; compute the loss with
    `neox_core.distributed.loss.lm_loss`. `parallelize()` calls it only for TP > 1; on a 1-rank
    mesh it still converts the model (the DTensor code paths on one GPU, under NCCL).
    """
    cfg = model.config
    tp = tp_mesh.size()
    check_tensor_parallel_layout(cfg, tp)
    heads = cfg.num_attention_heads
    kv_heads = cfg.num_kv_heads or heads
    head_dim = cfg.hidden_size // heads
    _permute_fused_rows(model, tp)

    sp = sequence_parallel
    rng = _RankDropoutRng(tp_mesh.get_local_rank())
    norm_style: ParallelStyle = SequenceParallel() if sp else _ReplicateParallel()
    region_out = Shard(1) if sp else Replicate()
    parallelize_module(
        model,
        tp_mesh,
        {
            "embed": RowwiseParallel(input_layouts=Replicate(), output_layouts=region_out),
            "final_norm": SequenceParallel() if sp else _ReplicateParallel(),
        },
    )
    model.embed.register_forward_hook(_waited)
    model.final_norm.register_forward_hook(_head_input(tp_mesh, region_out))
    if sp:
        model.register_forward_pre_hook(_check_sequence_length(tp))
    if model.lm_head is not None:  # applied by F.linear in CausalLM.forward, not called
        w = model.lm_head.weight
        model.lm_head.weight = nn.Parameter(distribute_tensor(w.data, tp_mesh, [Shard(0)]))

    for layer in model.layers:
        plan: dict[str, ParallelStyle] = {
            "input_norm": norm_style,
            "post_attention_norm": norm_style,
            "attention.out": RowwiseParallel(output_layouts=region_out),
            "mlp.fc_in": ColwiseParallel(),
            "mlp.fc_out": RowwiseParallel(output_layouts=region_out),
            # replicated (under SP: the sequence gathered once per region) in the compute dtype
            "attention": _RegionInput(region_out),
            "mlp": _RegionInput(region_out),
        }
        if tp <= kv_heads:
            plan["attention.qkv"] = ColwiseParallel()
        parallelize_module(layer, tp_mesh, plan)
        attn = layer.attention
        if tp > kv_heads:
            attn.qkv = KVReplicatingQKV(
                attn.qkv, tp_mesh, heads * head_dim, kv_heads * head_dim, head_dim
            )
        attn.num_heads = heads // tp
        attn.num_kv_heads = max(kv_heads // tp, 1)
        # the projection's local output is `to_local`'s view, which autograd guards against
        # in-place writes: the fused rotary rotates a copy (the norms, fed DTensors, take the
        # plain code by themselves; the activation and the loss have their fused ops)
        attn.rotary_on_copy = True
        if cfg.attention_dropout > 0:  # dropout on this rank's heads
            rng.attach(attn)
        if sp and cfg.hidden_dropout > 0:  # dropout on this rank's sequence shard
            rng.attach(layer.hidden_dropout)
