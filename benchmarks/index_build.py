"""Benchmark: the C++ index builders against the NumPy reference, time and peak memory.

    uv run python benchmarks/index_build.py            # full size: ~10B tokens, 100M blend
    uv run python benchmarks/index_build.py --quick    # a 1/20 scale smoke run

Each measurement runs in a fresh subprocess pinned to one CPU core. The inputs (document
sizes, doc_idx) are built first; then the kernel's peak-RSS counter is reset
(/proc/self/clear_refs) and the step runs, so "peak MB" is the high-water mark of resident
memory above what the process held before the step — C++ and NumPy allocations alike.
"output MB" is the size of the arrays the step returns. References that would take minutes
(the pure-Python loops) run on a prefix and are extrapolated linearly; their rows say so.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "neox-kernels"))


def _status_kb(field: str) -> int:
    text = Path("/proc/self/status").read_text()
    return int(re.search(rf"^{field}:\s+(\d+) kB", text, re.MULTILINE).group(1))


def _reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def _corpus(num_docs: int, mean_tokens: int) -> np.ndarray:
    from neox_kernels.bench import synthetic_sizes

    return synthetic_sizes(num_docs, mean_tokens, seed=0)


def _doc_idx(sizes: np.ndarray, epochs: int) -> np.ndarray:
    from neox_kernels import index

    return index.build_doc_idx(
        np.arange(sizes.size, dtype=np.int32), epochs, np.random.RandomState(1234)
    )


def _step(spec: dict):
    """Set up the inputs of one measurement and return the step to time (a no-arg callable)."""
    from kernels_reference import (
        blending_loop,
        doc_idx_neox,
        sample_idx_loop,
        sample_idx_vectorised,
    )

    from neox_kernels import index

    task, impl = spec["task"], spec["impl"]
    if task == "blend":
        weights = [0.4, 0.25, 0.15, 0.12, 0.08]
        size = spec["size"]
        if impl == "cxx":
            return lambda: tuple(index.build_blending_indices(weights, size))
        return lambda: blending_loop(weights, size)
    sizes = _corpus(spec["docs"], spec["mean_tokens"])
    epochs, seq = spec["epochs"], spec["seq_length"]
    tokens = int(sizes.sum(dtype=np.int64))
    if task == "doc_idx":
        docs = np.arange(sizes.size, dtype=np.int32)
        if impl == "cxx":
            return lambda: index.build_doc_idx(docs, epochs, np.random.RandomState(1234))
        return lambda: doc_idx_neox(docs, epochs, np.random.RandomState(1234))
    if task == "packed":
        docs = np.arange(sizes.size, dtype=np.int32)
        wanted = index.num_samples(epochs, tokens, seq)
        return lambda: index.build_packed_index(docs, sizes, wanted, seq, 1234)
    doc_idx = _doc_idx(sizes, epochs)
    if impl == "cxx":
        return lambda: index.build_sample_idx(sizes, doc_idx, seq, epochs, tokens)
    if impl == "numpy":
        return lambda: sample_idx_vectorised(sizes, doc_idx, seq, epochs, tokens)
    # The Python loop on the first `prefix` documents' worth of tokens.
    prefix_tokens = int(np.cumsum(sizes[doc_idx[: spec["prefix_docs"]]], dtype=np.int64)[-1])
    return lambda: sample_idx_loop(sizes, doc_idx, seq, 1, prefix_tokens)


def _arrays(result) -> list[np.ndarray]:
    if isinstance(result, np.ndarray):
        return [result]
    if isinstance(result, tuple):
        return [a for a in result if isinstance(a, np.ndarray)]
    return [result.doc_idx, result.sample_idx, result.shuffle_idx]  # IndexMaps


def worker(spec: dict) -> dict:
    """Run one measurement in this process and describe it."""
    cpus = sorted(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpus[-1]})
    step = _step(spec)
    gc.collect()
    measured = _reset_peak()
    base_kb = _status_kb("VmRSS")
    start = time.perf_counter()
    result = step()
    seconds = time.perf_counter() - start
    peak_kb = _status_kb("VmHWM") - base_kb if measured else None
    output = sum(a.nbytes for a in _arrays(result))
    return {
        "seconds": seconds,
        "peak_mb": None if peak_kb is None else peak_kb / 1024,
        "output_mb": output / 2**20,
        "rows": int(
            _arrays(result)[-1].shape[0] if spec["task"] != "blend" else _arrays(result)[0].shape[0]
        ),
    }


def _run(spec: dict) -> dict:
    # A fixed mmap threshold makes every large array fresh pages returned on free; glibc's
    # adaptive threshold would otherwise recycle memory the setup left resident and hide it.
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(1 << 20)}
    out = subprocess.run(
        [sys.executable, __file__, "--worker", json.dumps(spec)],
        capture_output=True,
        text=True,
        check=False,
        env=env,
    )
    if out.returncode != 0:
        raise RuntimeError(f"measurement {spec} failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


@dataclass(frozen=True)
class Measurement:
    step: str  # what is built (rows of one step are compared with each other)
    impl: str
    spec: dict  # what the worker builds
    factor: float = 1.0  # extrapolation from the measured prefix to the full size
    ours: bool = False  # the implementation the others are compared against
    cxx_target: bool = True  # counts toward "C++ >= 20x the reference"


def _plan(args: argparse.Namespace) -> list[Measurement]:
    corpus = {"docs": args.docs, "mean_tokens": args.mean_tokens, "seq_length": args.seq_length}
    plan = []
    for epochs in (1, 3):
        step = f"sample_idx, {epochs} epoch{'s' if epochs > 1 else ''}"
        base = {"task": "sample_idx", "epochs": epochs, **corpus}
        prefix = max(1, args.docs * epochs // args.loop_fraction)
        plan += [
            Measurement(step, "C++", {**base, "impl": "cxx"}, ours=True),
            Measurement(step, "NumPy vectorised", {**base, "impl": "numpy"}),
            Measurement(
                step,
                f"Python loop (GPT-NeoX's), 1/{args.loop_fraction} run, extrap.",
                {**base, "impl": "loop", "prefix_docs": prefix},
                args.docs * epochs / prefix,
            ),
        ]
    doc = {"task": "doc_idx", "epochs": 3, **corpus}
    step = "doc_idx, 3 epochs (NumPy shuffle)"
    plan += [
        Measurement(step, "ours (int32 fill)", {**doc, "impl": "cxx"}, ours=True),
        Measurement(step, "GPT-NeoX mgrid", {**doc, "impl": "neox"}, cxx_target=False),
        Measurement(
            "packed index (doc+sample+shuffle), 3 ep",
            "C++ API",
            {"task": "packed", "epochs": 3, "impl": "cxx", **corpus},
            ours=True,
        ),
    ]
    step = f"blend, 5 datasets, {args.blend_samples / 1e6:g}M samples"
    ref_size = min(args.blend_samples, args.reference_blend_samples)
    plan += [
        Measurement(
            step, "C++", {"task": "blend", "impl": "cxx", "size": args.blend_samples}, ours=True
        ),
        Measurement(
            step,
            f"Python loop, {ref_size / 1e6:g}M run, extrapolated",
            {"task": "blend", "impl": "loop", "size": ref_size},
            args.blend_samples / ref_size,
        ),
    ]
    return plan


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--docs", type=int, default=10_000_000)
    parser.add_argument("--mean-tokens", type=int, default=1000)
    parser.add_argument("--seq-length", type=int, default=2048)
    parser.add_argument("--blend-samples", type=int, default=100_000_000)
    parser.add_argument("--reference-blend-samples", type=int, default=1_000_000)
    parser.add_argument(
        "--loop-fraction", type=int, default=100, help="Python loop runs on 1/N of the documents"
    )
    parser.add_argument("--quick", action="store_true", help="1/20 of the sizes")
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return 0
    if args.quick:
        args.docs //= 20
        args.blend_samples //= 20
        args.reference_blend_samples //= 20

    print(
        f"corpus: {args.docs:,} documents, mean {args.mean_tokens} tokens "
        f"(~{args.docs * args.mean_tokens / 1e9:.1f}B tokens/epoch), seq_length {args.seq_length}; "
        f"one core per measurement, load average {os.getloadavg()[0]:.1f} at start"
    )
    header = (
        f"{'step':<40} {'implementation':<44} {'rows':>12} {'time s':>9} {'peak MB':>8} "
        f"{'out MB':>7} {'peak/out':>8} {'speedup':>8}"
    )
    print(header)
    print("-" * len(header))
    ours: dict[str, dict] = {}
    speedups: list[tuple[str, str, float]] = []
    for m in _plan(args):
        result = _run(m.spec)
        seconds = result["seconds"] * m.factor
        # A prefix's peak says little about the full run's: extrapolated rows show none.
        peak = None if result["peak_mb"] is None or m.factor != 1.0 else result["peak_mb"]
        output = result["output_mb"] * m.factor
        rows = int(result["rows"] * m.factor)
        if m.ours:
            ours[m.step] = {"seconds": seconds, "peak": peak, "output": output}
        speedup = ""
        if not m.ours and m.step in ours:
            factor = seconds / ours[m.step]["seconds"]
            speedup = f"{factor:.0f}x"
            if m.cxx_target:
                speedups.append((m.step, m.impl, factor))
        mark = "~" if m.factor != 1.0 else " "
        peak_text = "-" if peak is None else f"{peak:.0f}"
        ratio = "" if peak is None or output == 0 else f"{peak / output:.2f}"
        print(
            f"{m.step:<40} {m.impl:<44} {mark}{rows:>11,} {mark}{seconds:>8.2f} {peak_text:>8} "
            f"{output:>7.0f} {ratio:>8} {speedup:>8}"
        )
    print(
        "~ extrapolated linearly from the measured part (no peak shown); "
        "speedup = its time / ours (first row of the step)"
    )
    print()
    print("targets:")
    one_epoch = ours["sample_idx, 1 epoch"]["seconds"]
    print(f"  10B-token sample index < 10 s on one core: {one_epoch:.2f} s")
    for step, impl, factor in speedups:
        verdict = "met" if factor >= 20 else "NOT met"
        print(f"  C++ >= 20x {impl} ({step}): {factor:.0f}x, {verdict}")
    for step, row in ours.items():
        if row["peak"] is not None and row["output"] > 0:
            ratio = row["peak"] / row["output"]
            verdict = "met" if ratio <= 1.5 else "NOT met"
            print(f"  peak <= 1.5x outputs ({step}): {ratio:.2f}x, {verdict}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
