"""`neox-ckpt reshard`: re-split a neox checkpoint's weights to another TP/PP layout.

Driven only by the per-tensor shard records of the format: each tensor is merged from its
pieces and cut again for the new layout, one tensor at a time. The result holds weights only
(optimizer moments are per-rank state tied to the old layout); start from it with `finetune`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from neox_ckpt.errors import ConversionError
from neox_ckpt.neox_reader import NeoxCheckpoint
from neox_ckpt.neox_writer import PlannedTensor, write_checkpoint
from neox_ckpt.output_dir import staged_output
from neox_ckpt.tp_rules import check_tp_degree


@dataclass
class ReshardResult:
    step_dir: Path
    source: tuple[int, int]
    target: tuple[int, int]
    dropped: list[str]  # parts of the source checkpoint not carried over


def reshard(
    input_dir: str | Path,
    output_dir: str | Path,
    *,
    tp: int,
    pp: int | None = None,
    iteration: int | None = None,
    force: bool = False,
) -> ReshardResult:
    from neox_core.checkpoint import layout

    ck = NeoxCheckpoint(input_dir, iteration)
    pp = ck.pp if pp is None else pp
    if tp < 1 or pp < 1:
        raise ConversionError(f"--tp and --pp must be at least 1 (got {tp}, {pp})")
    plan = [
        PlannedTensor(t.name, t.dtype, t.full_shape, t.tp_dim, t.tp_blocks)
        for t in ck.tensors.values()
    ]
    config = ck.config()
    if config is not None:
        parallel = config.setdefault("parallel", {})
        parallel["tensor_parallel_size"], parallel["pipe_parallel_size"] = tp, pp
        sources = config.setdefault("sources", {})
        sources["parallel.tensor_parallel_size"] = "neox-ckpt reshard"
        sources["parallel.pipe_parallel_size"] = "neox-ckpt reshard"
        model = config.get("model", {})
        if "num_attention_heads" in model:
            check_tp_degree(model, tp, str(ck.dir))
        padded = model.get("padded_vocab_size")
        if padded is not None and padded % tp:
            raise ConversionError(
                f"{ck.dir}: the vocabulary ({padded} rows) does not divide by --tp {tp}"
            )
    config_files = {
        p.name: p.read_text(encoding="utf-8")
        for p in sorted((ck.dir / layout.CONFIGS_DIR).glob("*"))
        if p.is_file()
    }
    extra = {
        str(p.relative_to(ck.dir)): p.read_bytes()
        for p in sorted((ck.dir / "hf").glob("*"))
        if p.is_file()
    }
    dropped = [k for k in ("optimizer", "rng", "trainer_state") if ck.manifest["contents"].get(k)]
    with staged_output(output_dir, force=force) as tmp:
        step = write_checkpoint(
            tmp,
            ck.iteration,
            plan,
            ((t.name, ck.read_full(t.name)) for t in ck.tensors.values()),
            tp=tp,
            pp=pp,
            config=config,
            config_files=config_files,
            extra_files=extra,
            desc=f"reshard tp{ck.tp} pp{ck.pp} -> tp{tp} pp{pp}",
        )
    return ReshardResult(Path(output_dir) / step.name, (ck.tp, ck.pp), (tp, pp), dropped)


def describe(r: ReshardResult) -> str:
    line = (
        f"wrote {r.step_dir}: tp {r.source[0]} pp {r.source[1]} -> tp {r.target[0]} "
        f"pp {r.target[1]} (weights)"
    )
    if r.dropped:
        line += f"\nnote: not carried over: {', '.join(r.dropped)} (layout-specific state)"
    return line
