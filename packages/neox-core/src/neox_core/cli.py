"""`neox-train`: Train a neox model from GPT-NeoX-style YAML configs."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

from neox_core import __version__

if TYPE_CHECKING:
    from neox_core.config.schema import NeoxConfig


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="neox-train",
        description="Train a neox model from GPT-NeoX-style YAML configs. Several files are "
        "merged in order; a key in a later file overrides the same key in an earlier one.",
    )
    parser.add_argument("--version", action="version", version=f"neox-train {__version__}")
    parser.add_argument("configs", nargs="+", metavar="CFG", help="GPT-NeoX YAML config files")
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="print the resolved config with the source of every value, the parameter count "
        "and FLOPs per token, then exit without touching data or GPUs",
    )
    return parser


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)) and len(value) > 8:
        shown = ", ".join(str(v) for v in value[:8])
        return f"[{shown}, ... {len(value)} items]"
    return str(value)


def format_dry_run(cfg: NeoxConfig, paths: list[str], *, memory: bool = True) -> str:
    """The dry-run report: grouped values with sources, parameters, FLOPs and the layout.

    `memory` adds the per-rank memory estimate, which sizes a model on the meta device and so
    is the one part of the dry run that imports torch (nothing is allocated, no GPU touched).
    """
    import dataclasses

    from neox_core.config.schema import GROUPS
    from neox_core.flops import (
        forward_flops_per_token,
        parameter_breakdown,
        training_flops_per_token,
    )

    lines = [f"neox-train {__version__} dry run: {len(paths)} config file(s), merged in order"]
    lines += [f"  {p}" for p in paths]
    for group in GROUPS:
        lines.append("")
        lines.append(f"[{group}]")
        for f in dataclasses.fields(getattr(cfg, group)):
            value = _fmt(getattr(getattr(cfg, group), f.name))
            source = cfg.sources.get(f"{group}.{f.name}", "default")
            lines.append(f"  {f.name:<30} {value:<28} {source}")
    if cfg.ignored:
        lines.append("")
        lines.append("[accepted GPT-NeoX keys without effect in neox]")
        for key, why in sorted(cfg.ignored.items()):
            lines.append(f"  {key:<30} {why}")
    b = parameter_breakdown(cfg.model)
    head = "tied to the embedding" if b.head == 0 else f"{b.head:,}"
    seq = cfg.data.seq_length
    fwd = forward_flops_per_token(cfg.model, seq)
    train = training_flops_per_token(cfg.model, seq)
    recompute = " incl. activation recomputation" if cfg.model.checkpoint_activations else ""
    lines += [
        "",
        f"parameters: {b.total:,}",
        f"  embedding {b.embedding:,}; {cfg.model.num_layers} layers x {b.per_layer:,} = "
        f"{b.layers:,}; final norm {b.final_norm:,}; head {head}",
        f"FLOPs per token at seq_length {seq}: forward {fwd:,}; training {train:,}{recompute}",
        f"tokens per step: {cfg.training.train_batch_size * seq:,} "
        f"(train_batch_size {cfg.training.train_batch_size} x seq_length {seq})",
    ]
    lines += _layout_lines(cfg, memory)
    return "\n".join(lines)


def _layout_lines(cfg: NeoxConfig, memory: bool) -> list[str]:
    """The parallel layout the config implies (world = DP x TP) and what each ZeRO stage shards."""
    p = cfg.parallel
    world = p.data_parallel_size * p.tensor_parallel_size * p.pipe_parallel_size
    shards = {0: "nothing (DDP)", 1: "optimizer state", 2: "optimizer state, gradients"}
    what = shards.get(p.zero_stage, "optimizer state, gradients, parameters")
    offload = [
        n for n, on in (("optimizer", p.offload_optimizer), ("params", p.offload_param)) if on
    ]
    pipe = f" x pipeline-parallel {p.pipe_parallel_size}" if p.pipe_parallel_size > 1 else ""
    lines = [
        f"layout: world {world} = data-parallel {p.data_parallel_size} x tensor-parallel "
        f"{p.tensor_parallel_size}{' (sequence parallel)' if p.sequence_parallel else ''}{pipe}; "
        f"ZeRO stage {p.zero_stage} shards {what} over data-parallel ranks"
        + (f"; CPU offload: {', '.join(offload)}" if offload else ""),
    ]
    if p.pipe_parallel_size > 1:
        from neox_core.distributed.pipeline_partition import describe_splits, stage_splits

        lines.append(
            f"pipeline: pipe_schedule {p.pipe_schedule}, pipe_partition_method "
            f"{p.pipe_partition_method}, pipe_virtual_stages {p.pipe_virtual_stages}, "
            f"{cfg.training.gradient_accumulation_steps} micro batches per step"
        )
        lines += describe_splits(stage_splits(cfg))
    if not memory:
        return lines
    try:
        from neox_core import memory_estimate
    except ImportError:  # the estimate ships with the multi-rank checkpoint work
        return lines
    from neox_core.distributed.parallel_dims import ParallelDims

    dims = ParallelDims(dp=p.data_parallel_size, tp=p.tensor_parallel_size, pp=p.pipe_parallel_size)
    lines += ["", *memory_estimate.format_memory_estimate(cfg, dims).splitlines()]
    return lines


def _run_training(cfg: NeoxConfig, args: argparse.Namespace) -> int:
    import importlib
    import inspect

    try:
        run = importlib.import_module("neox_core.training.run")
    except ModuleNotFoundError as exc:
        if exc.name not in ("neox_core.training.run", "neox_core.training"):
            raise
        print(
            "neox-train: error: training is not available in this build "
            "(neox_core.training.run is missing); use --dry-run to check a config",
            file=sys.stderr,
        )
        return 2
    main_train = getattr(run, "main_train", None)
    if main_train is None:
        print("neox-train: error: neox_core.training.run has no main_train", file=sys.stderr)
        return 2
    takes_args = len(inspect.signature(main_train).parameters) >= 2
    result = main_train(cfg, args) if takes_args else main_train(cfg)
    return int(result or 0)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from neox_core.config import ConfigError, load_config

    try:
        cfg = load_config(args.configs)
    except ConfigError as exc:
        print(f"neox-train: error: {exc}", file=sys.stderr)
        return 2
    if args.dry_run:
        print(format_dry_run(cfg, args.configs))
        return 0
    return _run_training(cfg, args)


if __name__ == "__main__":
    raise SystemExit(main())
