"""Exact resume and reshard-on-load of the real `neox-train` under torchrun, on GPUs (issue 20).

The first layout trains `--iters` iterations from scratch and saves half-way (and at the end).
Every layout, the first included, then loads that half-way checkpoint (its weights and AdamW
moments resharded to its own TP and DP) and trains to the end on the same global batches. The
losses after the resume are compared with the uninterrupted run's, iteration by iteration.

    python benchmarks/resume_check.py                      # 4 GPUs: TP 2 x DP 2, then 2x2, 1x1
    python benchmarks/resume_check.py --layouts 2x2,1x1    # 2 GPUs
    python benchmarks/resume_check.py --smoke              # tiny model, CPU + gloo, seconds

A layout is PROCESSESxTP (data parallel = PROCESSES / TP). The model is Pythia-160M
(examples/configs/pythia/160M.yml) in bf16 at `--seq` tokens, on synthetic tokens written to a
scratch folder; `--smoke` takes a 2-layer model in fp32. Prints a table last; exits 1 when a
layout fails or its largest relative loss difference exceeds `--rtol`.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from train_step import child_env, import_paths

ROOT = Path(__file__).resolve().parents[1]
LOADED = re.compile(r"\(saved at (TP \d+ x DP \d+), loaded at (TP \d+ x DP \d+)\)")
# "RuntimeError: ...", or a CLI's own "neox-train: error: ..."
EXCEPTION = re.compile(r"[A-Za-z_.]*(Error|Exception)\b.*:|[\w-]+: error: ")
SMOKE_MODEL = {
    "num_layers": 2, "hidden_size": 32, "num_attention_heads": 4, "seq_length": 32,
    "max_position_embeddings": 32, "pos_emb": "rotary", "rotary_pct": 0.5,
    "no_weight_tying": True, "gpt_j_residual": True, "make_vocab_size_divisible_by": 64,
    "optimizer": {"type": "Adam", "params": {"lr": 0.003, "betas": [0.9, 0.95], "eps": 1e-8}},
}  # fmt: skip


@dataclass
class Row:
    layout: str
    loaded: str = ""  # "saved at TP a x DP b -> loaded at TP c x DP d"
    compared: int = 0  # iterations compared with the uninterrupted run
    max_rel: float = float("nan")
    error: str = ""


def parse_layout(text: str) -> tuple[int, int]:
    procs, _, tp = text.partition("x")
    if not (procs.isdigit() and tp.isdigit()) or int(tp) < 1 or int(procs) % int(tp):
        raise argparse.ArgumentTypeError(f"layout {text!r}: expected PROCESSESxTP, TP dividing it")
    return int(procs), int(tp)


def write_data(folder: Path, vocab: int, tokens: int) -> Path:
    import numpy as np

    from neox_data.indexed_dataset import write_dataset

    rng = np.random.default_rng(0)
    docs, total = [], 0
    while total < tokens:
        doc = rng.integers(0, vocab, int(rng.integers(64, 4096)), dtype=np.uint16)
        docs.append(doc)
        total += len(doc)
    prefix = folder / "synthetic_text_document"
    write_dataset(prefix, docs, np.uint16)
    return prefix


def vocab_divisor(vocab: int, tp_sizes: set[int], largest: int = 128) -> int:
    """The largest `make_vocab_size_divisible_by` (a power of two up to `largest`) at which
    every TP size pads `vocab` to the same size: GPT-NeoX pads to a multiple of it x TP, and
    neox-train refuses a checkpoint whose padded vocabulary differs from the model's."""
    from neox_core.config.derive import pad_vocab_size

    divisor = largest
    while divisor > 1 and len({pad_vocab_size(vocab, divisor, tp) for tp in tp_sizes}) > 1:
        divisor //= 2
    return divisor


def base_config(
    args: argparse.Namespace, data: Path, folder: Path, tp_sizes: set[int]
) -> list[Path]:
    """The model config (smoke: none) and the run's overrides, as files for `neox-train`."""
    run = {
        "data_path": str(data), "split": "100,0,0", "num_workers": 0,
        "train_iters": args.iters, "lr_decay_iters": args.iters, "seed": 1234,
        "train_batch_size": args.global_batch, "train_micro_batch_size_per_gpu": args.micro_batch,
        "checkpoint_factor": args.iters // 2, "log_interval": 1,
        "eval_interval": 100_000, "eval_iters": 0, "hidden_dropout": 0.0, "attention_dropout": 0.0,
        "zero_optimization": {"stage": args.zero}, "compile": args.compile,
    }  # fmt: skip
    if args.smoke:
        run.update(SMOKE_MODEL, vocab_size=96, precision="fp32")
        files = []
    else:
        # bf16 (the config's own fp16 block is switched off), at --seq tokens
        run.update(vocab_size=50277, fp16={"enabled": False}, bf16={"enabled": True},
                   seq_length=args.seq, max_position_embeddings=args.seq,
                   make_vocab_size_divisible_by=vocab_divisor(50277, tp_sizes))  # fmt: skip
        files = [ROOT / "examples" / "configs" / "pythia" / "160M.yml"]
    path = folder / "run.yml"
    path.write_text(json.dumps(run, indent=1), encoding="utf-8")
    return [*files, path]


def train(configs: list[Path], procs: int, tp: int, extra: dict, folder: Path, name: str,
          timeout: int, env: dict[str, str]) -> tuple[dict[int, float], str, str]:  # fmt: skip
    """One `neox-train` under torchrun: (losses by iteration, load line, error or "")."""
    layout = folder / f"{name}.yml"
    layout.write_text(json.dumps({"model_parallel_size": tp, **extra}), encoding="utf-8")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
           str(procs), "-m", "neox_core.cli", *map(str, configs), str(layout)]  # fmt: skip
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return {}, "", f"timed out after {timeout} s"
    (folder / f"{name}.log").write_text(proc.stdout + proc.stderr, encoding="utf-8")
    from neox_core.training.log_line import parse_train_lines

    losses = {t.iteration: t.losses["lm_loss"] for t in parse_train_lines(proc.stdout)}
    found = LOADED.search(proc.stdout)
    loaded = f"{found.group(1)} -> {found.group(2)}" if found else ""
    if proc.returncode != 0:
        return losses, loaded, f"exit {proc.returncode}: {failure(proc.stdout + proc.stderr)}"[:300]
    return losses, loaded, ""


def failure(log: str) -> str:
    """The line that says why a run failed: the last exception line any rank printed (torchrun's
    own summary ends the log and names no cause), else the log's last two lines."""
    lines = log.strip().splitlines()
    for line in reversed(lines):
        text = line.split("]:", 1)[-1].strip()  # torchrun's "[rank0]:" prefix
        if EXCEPTION.match(text) and "ChildFailedError" not in text:
            return text
    return " / ".join(lines[-2:])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--layouts", type=lambda s: [parse_layout(x) for x in s.split(",")],
                   default=None, help="PROCESSESxTP, comma separated; the first saves "
                   "(default 4x2,2x2,1x1)")  # fmt: skip
    p.add_argument("--iters", type=int, default=20, help="iterations; saved at half of them")
    p.add_argument("--seq", type=int, default=2048, help="sequence length (not with --smoke)")
    p.add_argument("--global-batch", type=int, default=16, help="sequences per iteration")
    p.add_argument("--micro-batch", type=int, default=4, help="sequences per GPU and pass")
    p.add_argument("--zero", type=int, default=1, choices=(0, 1, 2, 3), help="ZeRO stage")
    p.add_argument("--compile", default="auto", help="neox-train's compile key")
    p.add_argument("--rtol", type=float, default=None,
                   help="largest relative loss difference allowed (default 1e-5 with --smoke, "
                   "5e-3 on GPUs: bf16 sums in another order under another layout)")  # fmt: skip
    p.add_argument("--timeout", type=int, default=600, help="seconds per neox-train run")
    p.add_argument("--keep", help="keep checkpoints and logs in this folder (without a ckpt/)")
    p.add_argument("--smoke", action="store_true", help="tiny model, fp32, CPU + gloo")
    args = p.parse_args(argv)
    layouts = args.layouts or [(4, 2), (2, 2), (1, 1)]
    if args.smoke:
        args.micro_batch, args.global_batch = 1, 4
        os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
        os.environ.setdefault("OMP_NUM_THREADS", "1")
    if args.iters < 2 or args.iters % 2:
        p.error("--iters must be even and at least 2 (the checkpoint is taken half-way)")
    for procs, tp in layouts:
        if args.global_batch % (args.micro_batch * (procs // tp)):
            p.error(f"--global-batch {args.global_batch} is not a multiple of micro batch x "
                    f"data parallel ({args.micro_batch} x {procs // tp}) at {procs}x{tp}")  # fmt: skip
    if args.keep and (Path(args.keep) / "ckpt").exists():
        p.error(f"--keep {args.keep}: holds a ckpt/ from an earlier run; give a new folder")
    rtol = args.rtol if args.rtol is not None else (1e-5 if args.smoke else 5e-3)
    env = child_env()  # before import_paths, which makes the source folders importable here
    import_paths()  # this process writes the data with neox-data

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(args.keep or tmp)
        folder.mkdir(parents=True, exist_ok=True)
        vocab = 96 if args.smoke else 50277
        seq = 32 if args.smoke else args.seq
        data = write_data(folder, vocab, 2 * args.iters * args.global_batch * (seq + 1))
        configs = base_config(args, data, folder, {tp for _, tp in layouts})
        procs, tp = layouts[0]
        first = f"{procs}x{tp}"
        print(f"uninterrupted run at {first} ({args.iters} iterations, saved at {args.iters // 2})",
              flush=True)  # fmt: skip
        ckpt = folder / "ckpt"
        full, _, error = train(configs, procs, tp, {"save": str(ckpt), "load": None}, folder,
                               "full", args.timeout, env)  # fmt: skip
        if error or sorted(full) != list(range(1, args.iters + 1)):
            print(f"the uninterrupted run failed: {error or sorted(full)}")
            return 1
        rows = []
        for procs, tp in layouts:
            name = f"{procs}x{tp}"
            print(f"resume at {name}", flush=True)
            extra = {"save": None, "load": str(ckpt), "iteration": args.iters // 2}
            losses, loaded, error = train(configs, procs, tp, extra, folder, f"resume_{name}",
                                          args.timeout, env)  # fmt: skip
            row = Row(name, loaded, error=error)
            after = list(range(args.iters // 2 + 1, args.iters + 1))
            if not error and sorted(losses) != after:
                row.error = f"logged iterations {sorted(losses)}, expected {after}"
            if not row.error:
                row.compared = len(after)
                row.max_rel = max(abs(losses[i] - full[i]) / abs(full[i]) for i in after)
            rows.append(row)
        print()
        print(f"saved at {first} at iteration {args.iters // 2}; rtol {rtol:g}")
        print(f"{'layout':<7} | {'checkpoint':<36} | {'iters':>5} | {'max rel diff':>12} | result")
        failed = False
        for r in rows:
            ok = not r.error and r.max_rel <= rtol
            failed |= not ok
            verdict = r.error or ("ok" if ok else "loss differs")
            print(
                f"{r.layout:<7} | {r.loaded:<36} | {r.compared:>5} | {r.max_rel:>12.3g} | {verdict}"
            )
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
