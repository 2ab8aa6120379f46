"""Which decoder layers each pipeline stage holds (GPT-NeoX's `pipe_partition_method`), no torch.

The model is the sequence [embedding, layer 0, ..., layer N-1, final norm + head]; stage s holds
a contiguous run of it. The embedding is always on the first stage and the final norm, head and
loss on the last (with tied embeddings the last stage holds a copy of the embedding, see
`pipeline.py`). Methods, as GPT-NeoX/DeepSpeed name them:

    type:transformer  (default) the decoder layers split as evenly as possible; where they do
                      not divide, the first stages take one more
    uniform           DeepSpeed's `partition_uniform` over all N + 2 items (embedding and head
                      count as one item each, so the first and last stage can hold fewer
                      layers; a stage left without a layer is an error)
    parameters        contiguous split minimising the largest stage's parameter count, the
                      embedding and the head counted with their parameters

With virtual stages (interleaved schedules) the split is into `pp x virtual` stages; stage
`v * pp + r` runs on pipeline rank r. Every stage must hold at least one decoder layer.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import TYPE_CHECKING

from neox_core.config.errors import ConfigError

if TYPE_CHECKING:
    from neox_core.config.schema import ModelConfig, NeoxConfig

PARTITION_METHODS = ("type:transformer", "uniform", "parameters")
SCHEDULES = ("gpipe", "1f1b", "interleaved_1f1b", "zero_bubble")


@dataclass(frozen=True)
class StageSplit:
    stage: int  # global stage index (0 .. pp x virtual - 1)
    rank: int  # pipeline rank that runs it
    start: int  # first decoder layer
    stop: int  # one past the last decoder layer
    first: bool  # holds the embedding
    last: bool  # holds final norm, head and loss
    parameters: int  # parameters this stage holds (a tied embedding copy counted again)

    @property
    def layers(self) -> range:
        return range(self.start, self.stop)


def _uniform(num_items: int, num_parts: int) -> list[int]:
    """DeepSpeed's partition_uniform: boundaries, the first `residual` parts one larger."""
    chunk, residual = divmod(num_items, num_parts)
    bounds = [0]
    for i in range(num_parts):
        bounds.append(bounds[-1] + chunk + (1 if i < residual else 0))
    return bounds


def _balanced(weights: list[int], num_parts: int) -> list[int]:
    """Contiguous boundaries minimising the heaviest part (exact, by dynamic programming)."""
    n = len(weights)
    prefix = [0]
    for w in weights:
        prefix.append(prefix[-1] + w)
    inf = float("inf")
    # best[k][i]: smallest max-part weight splitting the first i items into k parts
    best = [[inf] * (n + 1) for _ in range(num_parts + 1)]
    cut = [[0] * (n + 1) for _ in range(num_parts + 1)]
    best[0][0] = 0
    for k in range(1, num_parts + 1):
        for i in range(k, n + 1):
            for j in range(k - 1, i):
                cost = max(best[k - 1][j], prefix[i] - prefix[j])
                if cost < best[k][i]:
                    best[k][i], cut[k][i] = cost, j
    bounds, i = [n], n
    for k in range(num_parts, 0, -1):
        i = cut[k][i]
        bounds.append(i)
    return bounds[::-1]


def partition_layers(
    model: ModelConfig, num_stages: int, method: str = "type:transformer"
) -> list[tuple[int, int]]:
    """(start, stop) decoder layers of each of `num_stages` stages; ConfigError if impossible."""
    n = model.num_layers
    if num_stages > n:
        raise ConfigError(
            f"pipeline: {num_stages} stages (pipe_parallel_size x pipe_virtual_stages) but only "
            f"num_layers = {n} decoder layers: every stage needs at least one layer"
        )
    if method == "type:transformer":
        bounds = _uniform(n, num_stages)
        return list(itertools.pairwise(bounds))
    if method == "uniform":
        items = _uniform(n + 2, num_stages)  # item 0 embedding, 1..n layers, n+1 head
    elif method == "parameters":
        from neox_core.flops import parameter_breakdown

        b = parameter_breakdown(model)
        head = b.final_norm + (b.head or b.embedding)
        items = _balanced([b.embedding] + [b.per_layer] * n + [head], num_stages)
    else:
        raise ConfigError(
            f"pipe_partition_method = {method!r}: expected one of {', '.join(PARTITION_METHODS)}"
        )
    # item boundaries -> layer boundaries (item i >= 1 is layer i - 1)
    spans = []
    for lo, hi in itertools.pairwise(items):
        spans.append((max(lo - 1, 0), min(hi - 1, n)))
    for s, (lo, hi) in enumerate(spans):
        if hi <= lo:
            raise ConfigError(
                f"pipe_partition_method = {method!r} leaves pipeline stage {s} of {num_stages} "
                f"without a decoder layer (num_layers = {n}); use type:transformer or fewer stages"
            )
    return spans


def stage_splits(cfg: NeoxConfig) -> list[StageSplit]:
    """Every stage of the configured pipeline, with its layers and parameter count."""
    from neox_core.flops import parameter_breakdown

    p, m = cfg.parallel, cfg.model
    pp, virtual = p.pipe_parallel_size, max(1, p.pipe_virtual_stages)
    total = pp * virtual
    spans = partition_layers(m, total, p.pipe_partition_method)
    b = parameter_breakdown(m)
    out = []
    for s, (lo, hi) in enumerate(spans):
        first, last = s == 0, s == total - 1
        params = b.per_layer * (hi - lo)
        if first:
            params += b.embedding
        if last:
            params += b.final_norm + (b.head or b.embedding)
        out.append(StageSplit(s, s % pp, lo, hi, first, last, params))
    return out


def describe_splits(splits: list[StageSplit]) -> list[str]:
    """One line per stage: its rank, layers and parameters (dry run and training log)."""
    lines = []
    for sp in splits:
        parts = (["embedding"] if sp.first else []) + [
            f"layers {sp.start}-{sp.stop - 1}" if sp.stop - sp.start > 1 else f"layer {sp.start}"
        ]
        if sp.last:
            parts.append("final norm, head, loss")
        lines.append(
            f"pipeline stage {sp.stage} (pipe rank {sp.rank}): {', '.join(parts)}; "
            f"{sp.parameters:,} parameters"
        )
    return lines


def check_pipeline(cfg: NeoxConfig, keys: dict[str, str] | None = None) -> None:
    """Layout rules of the pipeline that need no world size; ConfigError names the keys."""
    p = cfg.parallel
    if p.pipe_parallel_size <= 1:
        return
    if p.pipe_schedule not in SCHEDULES:
        raise ConfigError(f"pipe_schedule = {p.pipe_schedule!r}: expected one of {SCHEDULES}")
    virtual = max(1, p.pipe_virtual_stages)
    interleaved = p.pipe_schedule in ("interleaved_1f1b", "zero_bubble")
    if virtual > 1 and not interleaved:
        raise ConfigError(
            f"pipe_virtual_stages = {virtual} needs pipe_schedule interleaved_1f1b or "
            f"zero_bubble (pipe_schedule is {p.pipe_schedule})"
        )
    stage_splits(cfg)  # more stages than layers, an empty stage
    gas = cfg.training.gradient_accumulation_steps or 1
    pp = p.pipe_parallel_size
    if p.pipe_schedule != "gpipe" and gas < pp:
        raise ConfigError(
            f"pipe_schedule {p.pipe_schedule} with pipe_parallel_size = {pp} needs at least "
            f"{pp} micro batches per step (gradient_accumulation_steps = {gas}); raise "
            "gradient_accumulation_steps or use pipe_schedule gpipe"
        )
    if interleaved and gas % pp:
        raise ConfigError(
            f"pipe_schedule {p.pipe_schedule} needs gradient_accumulation_steps ({gas}) to be a "
            f"multiple of pipe_parallel_size ({pp})"
        )
    if p.sequence_parallel:
        raise ConfigError(
            "sequence_parallel with pipe_parallel_size > 1 is not yet supported (activations "
            "between stages are sent whole); set sequence_parallel: false"
        )
    if cfg.evaluation.eval_tasks:
        raise ConfigError(
            "eval_tasks (lm-evaluation-harness during training) with pipe_parallel_size > 1 is "
            "not yet supported (the harness runs the whole model on rank 0); unset eval_tasks "
            "and run neox-eval on a saved checkpoint instead"
        )
    if cfg.posttrain.train_impl not in ("normal", None):
        raise ConfigError(
            f"train_impl {cfg.posttrain.train_impl} with pipe_parallel_size > 1 is not yet "
            "supported"
        )
