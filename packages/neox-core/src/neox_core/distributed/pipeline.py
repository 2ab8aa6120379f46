"""Pipeline parallelism on torch.distributed.pipelining, on the ("pp", "dp", "tp") mesh.

The model is built whole on every rank (as for TP), tensor parallelism is applied to it whole,
then each pipeline rank keeps its stages (`pipeline_partition.stage_splits`) and drops the rest.
A stage is a `PipelineStageModule`: it holds the canonical submodules (`embed`, `layers.<i>` with
the global layer index, `final_norm`, `lm_head`), so parameter names, checkpoint records and
optimizer keys are those of the unsplit model. Activation checkpointing, compile and the ZeRO
stage are applied per stage module; each becomes a `PipelineStage` on mesh["pp"]'s group and a
schedule (GPipe, 1F1B, interleaved 1F1B, interleaved zero-bubble) runs the micro batches: the
step's `gradient_accumulation_steps` micro batches are the pipeline's micro batches.

Tied embeddings: the last stage holds its own copy of `embed` and uses its weight as the head.
Both copies start equal (same seed, same build); after each backward their gradients are summed
over a two-rank group (first and last stage of the same dp/tp coordinates), so the optimizer
keeps them identical. The copy on the last stage is left out of the gradient norm and out of
checkpoints (the first stage's is the one saved; both load it).

Losses live on the last stage; the loop's reductions divide by the ranks that hold one.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.tensor import DTensor

from neox_core.config.schema import NeoxConfig
from neox_core.distributed.pipeline_partition import StageSplit, describe_splits, stage_splits


class StageLayers(nn.ModuleDict):
    """A stage's decoder layers keyed by their global index, so names stay `layers.<i>.*`.

    Iterating yields the layers (as `nn.ModuleList` does), which is what activation
    checkpointing, compile and FSDP2 wrapping expect of `model.layers`.
    """

    def __iter__(self):  # type: ignore[override]
        return iter(self._modules.values())


class PipelineStageModule(nn.Module):
    """One pipeline stage of a `CausalLM`: [embed] -> its layers -> [final norm -> head]."""

    def __init__(self, model: nn.Module, split: StageSplit) -> None:
        super().__init__()
        self.config = model.config
        self.split = split
        self.is_first, self.is_last = split.first, split.last
        tied = model.lm_head is None
        self.embed = model.embed if split.first or (split.last and tied) else None
        self.layers = StageLayers({str(i): model.layers[i] for i in split.layers})
        self.final_norm = model.final_norm if split.last else None
        self.lm_head = model.lm_head if split.last else None

    def head_weight(self) -> torch.Tensor:
        return self.embed.weight if self.lm_head is None else self.lm_head.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.is_first:
            x = self.embed(x)
        for layer in self.layers:
            x = layer(x)
        if not self.is_last:
            return x
        return F.linear(self.final_norm(x), self.head_weight())


class PipelineRankModule(nn.Module):
    """Everything one pipeline rank holds, under canonical names (checkpoints, optimizer).

    It shares the stage modules' submodules (the same objects, so FSDP2's sharded parameters
    show here too); it is not called, the stages are.
    """

    def __init__(self, stages: list[PipelineStageModule]) -> None:
        super().__init__()
        self.config = stages[0].config
        self.stage_modules = stages  # a plain list: not registered twice
        self.embed = next((s.embed for s in stages if s.embed is not None), None)
        self.layers = StageLayers({k: v for s in stages for k, v in s.layers._modules.items()})
        self.final_norm = next((s.final_norm for s in stages if s.final_norm is not None), None)
        self.lm_head = next((s.lm_head for s in stages if s.lm_head is not None), None)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("a pipeline rank's model runs through its schedule, not forward()")


@dataclass
class StageTimes:
    """Wall time of the schedule and of this rank's forward/backward compute, summed."""

    step: float = 0.0
    compute: float = 0.0
    steps: int = 0

    def reset(self) -> None:
        self.step, self.compute, self.steps = 0.0, 0.0, 0


@dataclass
class Pipeline:
    """This rank's part of the pipeline and how a step runs through it."""

    module: PipelineRankModule
    stages: list[Any]  # torch PipelineStage per local stage
    schedule: Any
    eval_schedule: Any
    splits: list[StageSplit]
    pp_rank: int
    pp_size: int
    pp_group: Any
    n_microbatches: int
    precision: str
    device: torch.device
    has_first: bool
    has_last: bool
    tied_group: Any = None
    tied_params: list[nn.Parameter] = field(default_factory=list)
    norm_excluded: set[int] = field(default_factory=set)  # ids of the tied copy (last stage)
    times: StageTimes = field(default_factory=StageTimes)
    scale: float = 1.0
    schedule_name: str = "1f1b"

    # -- a training step -------------------------------------------------------------------

    def _loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        from neox_core.distributed.loss import lm_loss

        return lm_loss(logits, target.clamp(min=0), (target >= 0).float()) * self.scale

    def _inputs(self, micro_batches: list[dict[str, torch.Tensor]]) -> dict[str, Any]:
        from neox_core.training.batch import make_batch

        batches = [make_batch(mb) for mb in micro_batches]
        kw: dict[str, Any] = {}
        if self.has_first:
            kw["arg_mbs"] = [(b.tokens,) for b in batches]
        if self.has_last:
            kw["target_mbs"] = [
                torch.where(b.loss_mask > 0, b.labels, torch.full_like(b.labels, -100))
                for b in batches
            ]
        return kw

    def forward_backward(
        self, micro_batches: list[dict[str, torch.Tensor]], scale: float, ctx: Any
    ) -> list[torch.Tensor]:
        """Run the schedule over the step's micro batches; their (unscaled) losses on the last
        stage, zeros elsewhere. Gradients are those of the mean loss, as in one process."""
        self.scale = scale
        losses: list[torch.Tensor] = []
        _sync(self.device)
        start = time.perf_counter()
        with ctx:
            self.schedule.step(losses=losses, return_outputs=False, **self._inputs(micro_batches))
        _sync(self.device)
        self.times.step += time.perf_counter() - start
        self.times.steps += 1
        self.sync_tied_grads()
        if not self.has_last:
            return [torch.zeros((), device=self.device) for _ in micro_batches]
        return [loss.detach() / scale for loss in losses]

    @torch.no_grad()
    def eval_losses(
        self, micro_batches: list[dict[str, torch.Tensor]], ctx: Any
    ) -> list[torch.Tensor]:
        """Forward only through the pipeline, `n_microbatches` at a time."""
        self.scale = 1.0
        out: list[torch.Tensor] = []
        n = self.n_microbatches
        for i in range(0, len(micro_batches), n):
            chunk = micro_batches[i : i + n]
            losses: list[torch.Tensor] = []
            with ctx:
                self.eval_schedule.eval(losses=losses, **self._inputs(chunk))
            if self.has_last:
                out += [loss.detach() for loss in losses]
            else:
                out += [torch.zeros((), device=self.device) for _ in chunk]
        return out

    def sync_tied_grads(self) -> None:
        """Sum the tied embedding's gradient over its first-stage and last-stage copies."""
        if self.tied_group is None:
            return
        for p in self.tied_params:
            if p.grad is None:
                continue
            if isinstance(p.grad, DTensor):
                if tuple(p.grad.placements) != tuple(p.placements):  # e.g. a replicated grad
                    p.grad = p.grad.redistribute(p.device_mesh, p.placements)
                dist.all_reduce(p.grad.to_local(), group=self.tied_group)
            else:
                dist.all_reduce(p.grad, group=self.tied_group)

    def norm_kwargs(self) -> dict[str, Any]:
        """How the gradient norm sees the whole model: summed over stages, tied copy once."""
        return {"groups": (self.pp_group,), "exclude": self.norm_excluded}

    def take_times(self) -> StageTimes:
        """The times since the last call (the loop logs them every log_interval)."""
        t = StageTimes(self.times.step, self.times.compute, self.times.steps)
        self.times.reset()
        return t

    def theoretical_bubble(self) -> float:
        """(p - 1) / (m + p - 1), divided by the virtual stages for interleaved schedules.

        For zero_bubble this is the interleaved 1F1B bound, which the schedule aims to go below
        (it splits weight gradients off the backward to fill the bubble); logged as "≤"."""
        p, m = self.pp_size, self.n_microbatches
        v = max(1, len(self.splits) // p)
        return (p - 1) / v / (m + (p - 1) / v)

    def describe(self) -> list[str]:
        return describe_splits(self.splits)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(pipeline: Pipeline, fn):
    def run(*args: Any, **kwargs: Any) -> Any:
        _sync(pipeline.device)
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            _sync(pipeline.device)
            pipeline.times.compute += time.perf_counter() - start

    return run


def _make_schedule(name: str, stages: list[Any], n: int, loss_fn):
    from torch.distributed.pipelining import schedules as sch

    if name == "gpipe":
        return sch.ScheduleGPipe(stages[0], n, loss_fn=loss_fn)
    if name == "1f1b":
        return sch.Schedule1F1B(stages[0], n, loss_fn=loss_fn)
    if name == "interleaved_1f1b":
        return sch.ScheduleInterleaved1F1B(stages, n, loss_fn=loss_fn)
    if name == "zero_bubble":
        zb = getattr(sch, "ScheduleInterleavedZeroBubble", None)
        if zb is None:
            raise ValueError("pipe_schedule zero_bubble: this torch has no zero-bubble schedule")
        return zb(stages, n, loss_fn=loss_fn)
    raise ValueError(f"unknown pipe_schedule {name!r}")


def _tied_group(mesh: DeviceMesh) -> Any:
    """The two-rank group (first stage, last stage) of this rank's dp/tp coordinates."""
    ranks = mesh.mesh  # [pp, dp, tp] global ranks
    mine = None
    me = dist.get_rank()
    for d in range(ranks.shape[1]):
        for t in range(ranks.shape[2]):
            pair = [int(ranks[0, d, t]), int(ranks[-1, d, t])]
            group = dist.new_group(pair)  # every rank creates every group, in the same order
            if me in pair:
                mine = group
    return mine


def build_pipeline(
    model: nn.Module, mesh: DeviceMesh, cfg: NeoxConfig, device: torch.device
) -> Pipeline:
    """TP on the whole model, then this rank's stages with checkpointing, compile and ZeRO."""
    from torch.distributed.pipelining import PipelineStage

    from neox_core.distributed.activation_checkpoint import apply_activation_checkpointing
    from neox_core.distributed.compile import apply_compile, compile_enabled
    from neox_core.distributed.data_parallel import apply_data_parallel
    from neox_core.distributed.parallelize import activation_checkpointing_mode

    p = cfg.parallel
    if mesh["tp"].size() > 1:
        from neox_core.distributed.tensor_parallel import apply_tensor_parallel

        apply_tensor_parallel(model, mesh["tp"], sequence_parallel=False)  # type: ignore[arg-type]
    splits = stage_splits(cfg)
    pp_rank, pp_size = mesh.get_local_rank("pp"), mesh["pp"].size()
    mine = [s for s in splits if s.rank == pp_rank]
    stage_modules = [PipelineStageModule(model, s) for s in mine]
    rank_module = PipelineRankModule(stage_modules)
    tied = model.lm_head is None
    n = cfg.training.gradient_accumulation_steps or 1
    pipe = Pipeline(
        module=rank_module,
        stages=[],
        schedule=None,
        eval_schedule=None,
        splits=splits,
        pp_rank=pp_rank,
        pp_size=pp_size,
        pp_group=mesh["pp"].get_group(),
        n_microbatches=n,
        precision=cfg.precision.dtype,
        device=device,
        has_first=any(s.first for s in mine),
        has_last=any(s.last for s in mine),
        schedule_name=p.pipe_schedule,
    )
    mode = activation_checkpointing_mode(cfg)
    for split, sm in zip(mine, stage_modules, strict=True):
        apply_activation_checkpointing(sm, mode)
        if compile_enabled(cfg.training.compile, device):
            apply_compile(sm)
        if p.zero_stage == 0 and mesh["dp"].size() > 1:
            # ZeRO 0: torch's DDP under a pipeline schedule hangs after the first step here
            # (gloo, torch 2.15); the hook-based all-reduce-mean is exact and simple (it
            # averages after every micro batch's backward: more traffic than DDP's once)
            from neox_core.distributed.data_parallel import ReplicatedGradSync

            trained = ReplicatedGradSync(sm, mesh["dp"].get_group())
        else:
            trained = apply_data_parallel(sm, mesh["dp"], p, device)
        stage = PipelineStage(trained, split.stage, len(splits), device, group=pipe.pp_group)
        stage.forward_one_chunk = _timed(pipe, stage.forward_one_chunk)
        stage.backward_one_chunk = _timed(pipe, stage.backward_one_chunk)
        if hasattr(stage, "backward_weight_one_chunk"):
            stage.backward_weight_one_chunk = _timed(pipe, stage.backward_weight_one_chunk)
        pipe.stages.append(stage)
    pipe.schedule = _make_schedule(p.pipe_schedule, pipe.stages, n, pipe._loss)
    # eval: a forward-only schedule of the same kind (GPipe order suffices without backward)
    pipe.eval_schedule = pipe.schedule
    if tied:
        pipe.tied_group = _tied_group(mesh)
        if pipe.tied_group is not None and rank_module.embed is not None:
            pipe.tied_params = [rank_module.embed.weight]
            if pipe.has_last and not pipe.has_first:
                pipe.norm_excluded = {id(rank_module.embed.weight)}
    return pipe


def tied_copy_names(pipe: Pipeline | None) -> set[str]:
    """Parameter names this rank holds only as the tied copy (not saved from here)."""
    if pipe is None or not pipe.tied_params or not (pipe.has_last and not pipe.has_first):
        return set()
    return {"embed.weight"}


def parameters_of(pipe: Pipeline) -> Iterable[nn.Parameter]:
    return pipe.module.parameters()


def log_stage_times(pipe: Pipeline, log: Any, trackers: Any, iteration: int) -> None:
    """Per-stage step time and measured bubble (idle share of the schedule's wall time), with
    the theoretical (p - 1) / (m + p - 1); a collective over the "pp" group."""
    t = pipe.take_times()
    mine = torch.tensor(
        [t.step / max(1, t.steps), t.compute / max(1, t.steps)], dtype=torch.float64
    )
    if dist.get_backend(pipe.pp_group) == "nccl":
        mine = mine.cuda()
    rows = [torch.zeros_like(mine) for _ in range(pipe.pp_size)]
    dist.all_gather(rows, mine, group=pipe.pp_group)
    parts, charts = [], {}
    for rank, row in enumerate(rows):
        step, compute = row.tolist()
        bubble = max(0.0, 1.0 - compute / step) if step > 0 else 0.0
        parts.append(f"stage {rank}: {step * 1000:.1f} ms, bubble {bubble:.1%}")
        charts[f"pipeline/stage{rank}_step_time"] = step
        charts[f"pipeline/stage{rank}_bubble"] = bubble
    theory = pipe.theoretical_bubble()
    bound = "≤ " if pipe.schedule_name == "zero_bubble" else ""
    log(
        f" > pipeline ({pipe.schedule_name}): "
        + "; ".join(parts)
        + f" (theory {bound}{theory:.1%})"
    )
    trackers.log({**charts, "pipeline/bubble_theory": theory}, iteration)
