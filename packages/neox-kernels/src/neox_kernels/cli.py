"""`neox-kernels`: build information, self-checks and a quick benchmark of the compiled core."""

from __future__ import annotations

import argparse
import json
import sys

from neox_kernels import __version__


def _build_info() -> dict:
    """The index extension's build, and what the fused kernels were compiled for."""
    from neox_kernels import _index

    info = dict(_index.build_info())
    try:
        from neox_kernels import _cuda
    except ImportError:
        info["cuda"] = {"compiled": False}
    else:
        info["cuda"] = {
            "compiled": True,
            **dict(_cuda.build_info()),
            "devices": _cuda.device_count(),
        }
    try:
        import torch
    except ImportError:
        info["torch"] = None
    else:
        from neox_kernels.ops import OPS, cuda_available

        info["torch"] = torch.__version__
        info["ops"] = {f"neox::{op}": "cuda" if cuda_available() else "reference" for op in OPS}
        from neox_kernels.optim import kernel_available

        # FusedAdamW's step: the neox kernel, or torch.optim.AdamW's own
        info["optimizers"] = {"FusedAdamW": "cuda" if kernel_available() else "torch"}
    return info


def _self_check(args: argparse.Namespace) -> int:
    from neox_kernels.self_check import run_self_check

    results = run_self_check(seed=args.seed)
    for result in results:
        print(f"{'ok  ' if result.passed else 'FAIL'}  {result.name}: {result.detail}")
    failed = sum(not r.passed for r in results)
    print(f"{len(results) - failed}/{len(results)} checks passed")
    return 1 if failed else 0


def _bench(args: argparse.Namespace) -> int:
    from neox_kernels.bench import run_bench

    rows = run_bench(
        args.docs,
        args.mean_tokens,
        args.seq_length,
        args.epochs,
        args.blend_samples,
        args.blend_datasets,
    )
    print(f"{'step':<40} {'seconds':>9} {'output MB':>10}")
    for row in rows:
        print(f"{row.name:<40} {row.seconds:>9.3f} {row.output_mb:>10.1f}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="neox-kernels", description="Inspect and check neox's compiled kernels."
    )
    parser.add_argument("--version", action="version", version=f"neox-kernels {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help="print how the extensions were built and what each op runs (JSON)")
    check = sub.add_parser(
        "self-check",
        help="check the index builders and, on a GPU, the fused kernels (exit 1 on failure)",
    )
    check.add_argument("--seed", type=int, default=0, help="seed of the random corpora")
    bench = sub.add_parser("bench", help="time the index builders on a synthetic corpus")
    bench.add_argument("--docs", type=int, default=1_000_000, help="documents in the corpus")
    bench.add_argument("--mean-tokens", type=int, default=1000, help="mean tokens per document")
    bench.add_argument("--seq-length", type=int, default=2048)
    bench.add_argument("--epochs", type=int, default=1)
    bench.add_argument("--blend-samples", type=int, default=10_000_000)
    bench.add_argument("--blend-datasets", type=int, default=5)
    args = parser.parse_args(argv)

    if args.command == "info":
        json.dump(_build_info(), sys.stdout, indent=2)
        print()
        return 0
    if args.command == "self-check":
        return _self_check(args)
    return _bench(args)


if __name__ == "__main__":
    raise SystemExit(main())
