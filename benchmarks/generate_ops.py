"""Ops dispatched per eager decode step of neox generation (CPU; a proxy for kernel launches).

Counts every aten op the dispatcher sees while `generate` continues one prompt by N+1 tokens
and by 1 token, and prints (ops(N+1) - ops(1)) / N: the cost of one decode step, prefill
left out. Views (view, transpose, slice, ...) are counted apart: they launch no kernel. The
model is benchmarks/generate.py's tiny Pythia shape with `--layers` layers (16 = Pythia-1B's).

    uv run python benchmarks/generate_ops.py --layers 16
"""

from __future__ import annotations

import argparse
import collections
import sys
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
import generate as bench  # benchmarks/generate.py: models and package paths

VIEWS = {
    "aten.view", "aten._unsafe_view", "aten.slice", "aten.select", "aten.t", "aten.transpose",
    "aten.unsqueeze", "aten.expand", "aten.split", "aten.split_with_sizes", "aten.detach",
    "aten.alias", "aten.unbind", "aten.permute", "aten.squeeze", "aten.lift_fresh",
    "aten.as_strided",
}  # fmt: skip


class _Count(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.ops: collections.Counter[str] = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops[str(func.overloadpacket)] += 1
        return func(*args, **(kwargs or {}))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--layers", type=int, default=16)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args(argv)
    from neox_core.generation.generate import generate

    shape = dict(bench.TINY, num_hidden_layers=args.layers)
    _, neox = bench.build_models(shape, torch.device("cpu"), torch.float32)
    prompts = [list(range(2, 10))]

    def count(new: int) -> collections.Counter[str]:
        generate(neox, prompts, max_new_tokens=new)  # warm-up
        with _Count() as c:
            generate(neox, prompts, max_new_tokens=new)
        return c.ops

    full, one = count(args.steps + 1), count(1)
    per_step = {k: (full[k] - one[k]) / args.steps for k in full if full[k] != one[k]}
    kernels = sum(v for k, v in per_step.items() if k not in VIEWS)
    print(
        f"{args.layers} layers: {sum(per_step.values()):.0f} ops per decode step, "
        f"{kernels:.0f} of them not views"
    )
    for name, n in sorted(per_step.items(), key=lambda kv: -kv[1]):
        print(f"  {name}: {n:g}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
