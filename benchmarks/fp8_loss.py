"""Does `precision: fp8` train as well as bf16? Two real `neox-train` runs on the same text.

Issue 15's FP8 check: LLaMA-1.1B (benchmarks/configs/llama-1.1B.yml) trained for 300 steps
with `precision: bf16` and again with `precision: fp8`, same seed, same data in the same order;
fp8's loss after the last steps should be within 1 % of bf16's.

The data is real text, not random tokens (whose loss cannot fall below log(vocab), so any
two precisions "agree"): by default the Python standard library's source files, which every
machine with Python has (the H200 image's Python 3.12: 571 files, 2.6M tokens, which 300 steps
of micro batch 8 at seq 2048 read about twice; `--corpus` takes more folders). The pipeline is
the product's: a byte-level BPE of the config's vocabulary size is trained on the corpus with
HF tokenizers, `neox-data tokenize` writes the .bin/.idx, `neox-train` trains (each run in its
own process) and its GPT-NeoX log lines are read back. `--seeds` repeats the pair at other
seeds (other initial weights and data order), to see whether fp8's difference holds beyond
one seed (losses of different seeds are not compared with each other: at one log interval
they differ mostly by which batches were drawn). `--repeats` runs each pair again with the same
seed: GPU kernels are not bitwise deterministic (atomics in attention's backward, GEMM
reductions), so a repeated bf16 run shows how far bf16 drifts from itself, the noise floor
any fp8 difference must be read against (`--precisions bf16,fp8,bf16` gets it for one run
fewer than `--repeats 2`).

    python3 benchmarks/fp8_loss.py                    # on a GPU with float8 (sm_89+), torchao
    python3 benchmarks/fp8_loss.py --iters 20 --corpus /some/text/folder
    python3 benchmarks/fp8_loss.py --lr config            # the config's own learning rate

Each run ends with a validation pass over a held-out part of the corpus (`--val-percent`,
`--eval-iters` batches, the same batches for every run), which is the loss the check compares:
one model state on fixed data, where a training interval's loss averages ten states on ten
batches. The learning rate defaults to 1e-4, not the config's 4e-4: that was set for
TinyLlama's batch of about 2M tokens, and at this check's 16k tokens a step it made training
so noisy that two bf16 runs of one seed ended 4 % apart (H200, session 9).

Prints, per run, the validation loss, the loss of the last log interval and the mean of the
last five, the tokens/s and MFU that neox-train logged, and the relative differences to the
first bf16 run at its seed.
Runs from a plain checkout as benchmarks/train_step.py does (the packages' source folders are
put on the path where they are not installed; neox-kernels' dataset index must be built).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import sysconfig
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from train_step import child_env, import_paths

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "benchmarks" / "configs" / "llama-1.1B.yml"
TRAIN = "import sys; from neox_core.cli import main; sys.exit(main(sys.argv[1:]))"


def _text_files(folders: list[Path]) -> Iterator[Path]:
    """The .py/.txt/.md/.rst files under each folder, sorted; installed packages below a folder
    (site-packages, dist-packages) skipped."""
    for folder in folders:
        for path in sorted(folder.rglob("*")):
            inner = path.relative_to(folder).parts
            if path.suffix not in (".py", ".txt", ".md", ".rst") or not path.is_file():
                continue
            if "site-packages" not in inner and "dist-packages" not in inner:
                yield path


def corpus_files(folders: list[Path], max_bytes: int) -> list[Path]:
    """The folders' text files (`_text_files`) in order, up to max_bytes in all."""
    files, total = [], 0
    for path in _text_files(folders):
        size = path.stat().st_size
        if total + size > max_bytes:
            break
        files.append(path)
        total += size
    if not files:
        raise SystemExit(f"fp8_loss: no .py/.txt/.md/.rst files under {folders} within "
                         f"{max_bytes:,} bytes")  # fmt: skip
    return files


def write_jsonl(files: list[Path], out: Path) -> int:
    """One document per file; files that are not UTF-8 are skipped. Returns the document count."""
    n = 0
    tmp = out.with_suffix(".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for path in files:
            try:
                text = path.read_text(encoding="utf-8")
            except (UnicodeDecodeError, OSError):
                continue
            if text.strip():
                f.write(json.dumps({"text": text}) + "\n")
                n += 1
    tmp.replace(out)
    return n


def train_tokenizer(jsonl: Path, vocab_size: int, out: Path) -> None:
    """A byte-level BPE of at most vocab_size entries (id 0 `<|endoftext|>`) on the corpus."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    def texts():
        with jsonl.open(encoding="utf-8") as f:
            for line in f:
                yield json.loads(line)["text"]

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts(), trainer)
    tok.save(str(out))


def prepare(args: argparse.Namespace, vocab_size: int) -> Path:
    """Corpus -> tokenizer.json -> <work>/corpus_text_document.bin/.idx; returns the prefix.

    A work folder's data is reused only when it was made from the same corpus folders, size
    limit and vocabulary (its `data.json`, written last); otherwise it is made again.
    """
    from neox_data.cli import main as neox_data

    work = Path(args.work)
    prefix = work / "corpus_text_document"
    made_from = {"corpus": [str(Path(c).resolve()) for c in args.corpus],
                 "max_mb": args.max_mb, "vocab_size": vocab_size}  # fmt: skip
    manifest = work / "data.json"
    if manifest.exists() and json.loads(manifest.read_text()) == made_from:
        print(f"data: reusing {prefix}.bin/.idx", flush=True)
        return prefix
    manifest.unlink(missing_ok=True)
    t = time.perf_counter()
    files = corpus_files([Path(c) for c in args.corpus], int(args.max_mb * 2**20))
    docs = write_jsonl(files, work / "corpus.jsonl")
    train_tokenizer(work / "corpus.jsonl", vocab_size, work / "tokenizer.json")
    rc = neox_data(
        ["tokenize", "--input", str(work / "corpus.jsonl"), "--output-prefix", str(work / "corpus"),
         "--tokenizer-path", str(work / "tokenizer.json"), "--append-eod",
         "--workers", str(min(8, os.cpu_count() or 1))]
    )  # fmt: skip
    if rc:
        raise SystemExit(f"fp8_loss: neox-data tokenize failed ({rc})")
    manifest.write_text(json.dumps(made_from) + "\n")
    print(f"data: {docs} documents from {args.corpus}, tokenizer and .bin/.idx in "
          f"{time.perf_counter() - t:.0f} s", flush=True)  # fmt: skip
    return prefix


def run_config(args: argparse.Namespace, prefix: Path, precision: str, seed: int) -> Path:
    """The run's overrides on top of the model config: data, length, schedule, precision."""
    path = Path(args.work) / f"run_{precision}_{seed}.yml"  # the same for every repeat
    val = args.val_percent if args.eval_iters else 0
    settings = {
        "data_path": str(prefix),
        "split": f"{100 - val},{val},0",
        "precision": precision,
        "train_micro_batch_size_per_gpu": args.micro_batch,
        "train_iters": args.iters,
        "lr_decay_iters": args.iters,
        "warmup": args.warmup,
        "seed": seed,
        "log_interval": args.log_interval,
        "eval_interval": args.iters if args.eval_iters else 10**9,  # once, after the last step
        "eval_iters": args.eval_iters,
        "num_workers": 2,
        "checkpoint_activations": False,
    }
    if args.lr != "config":
        settings["optimizer"] = optimizer_with_lr(Path(args.config), float(args.lr))
    path.write_text(json.dumps(settings, indent=2) + "\n")
    return path


def optimizer_with_lr(config: Path, lr: float) -> dict:
    """The config's optimizer block with another learning rate (a later file's block replaces
    an earlier one whole, as in GPT-NeoX, so the rest of it is carried over)."""
    import yaml

    block = dict((yaml.safe_load(config.read_text()) or {}).get("optimizer") or {"type": "Adam"})
    block["params"] = {**(block.get("params") or {}), "lr": lr}
    return block


def train(
    args: argparse.Namespace, prefix: Path, precision: str, seed: int, repeat: int = 1
) -> dict:
    """One neox-train run; its logged losses and last speed, or the error."""
    log = Path(args.work) / f"train_{precision}_{seed}{f'_run{repeat}' if repeat > 1 else ''}.log"
    config = run_config(args, prefix, precision, seed)
    cmd = [sys.executable, "-c", TRAIN, str(args.config), str(config)]
    t = time.perf_counter()
    with log.open("w") as f:
        try:
            rc = subprocess.run(
                cmd, stdout=f, stderr=subprocess.STDOUT, timeout=args.timeout, env=child_env()
            ).returncode
        except subprocess.TimeoutExpired:
            rc = "timeout"
    text = log.read_text(errors="replace")
    from neox_core.training.log_line import parse_eval_lines, parse_train_lines

    lines = list(parse_train_lines(text))
    losses = {line.iteration: line.losses["lm_loss"] for line in lines}
    speed = (lines[-1].tokens_per_sec, lines[-1].mfu_percent) if lines else None
    val = [e.values["lm_loss"] for e in parse_eval_lines(text)
           if e.chart == "validation" and e.iteration == args.iters and "lm_loss" in e.values]  # fmt: skip
    result = {"precision": precision, "seed": seed, "repeat": repeat, "rc": rc, "log": str(log),
              "losses": losses, "val": val[-1] if val else None,
              "seconds": time.perf_counter() - t, "speed": speed}  # fmt: skip
    if rc != 0:
        tail = [ln for ln in text.splitlines() if ln.strip()][-3:]
        result["error"] = " / ".join(tail)
    print(f"{precision} seed {seed} run {repeat}: exit {rc} after {result['seconds']:.0f} s, "
          f"{len(losses)} log lines", flush=True)  # fmt: skip
    return result


def summary(losses: dict[int, float], its: list[int] | None = None) -> tuple[int, float, float]:
    """(last iteration, its loss, the mean of the last five) over `its` (default: all logged)."""
    its = sorted(losses) if its is None else its
    return its[-1], losses[its[-1]], sum(losses[i] for i in its[-5:]) / len(its[-5:])


def table(results: list[dict], tolerance: float) -> list[str]:
    """A row per run, each against the first bf16 run of its seed (a repeated bf16 run too).

    The verdict is on the validation loss after the last step where both runs have one; else
    on the last training interval, at the iterations both logged (a run cut short is compared
    where it stopped)."""
    lines = ["precision | seed | run | last iter | val loss | loss (last interval) | "
             "mean of last 5 | tokens/s | MFU | against | rel diff (val) | rel diff (last) | "
             "rel diff (last 5)"]  # fmt: skip
    bf16: dict[int, dict] = {}
    for r in results:
        if r["losses"] and r["precision"] == "bf16":
            bf16.setdefault(r["seed"], r)

    def verdict(rel: float) -> str:
        return f"{100 * rel:+.2f} % ({'within' if abs(rel) <= tolerance else 'outside'} " \
               f"{100 * tolerance:g} %)"  # fmt: skip

    for r in results:
        run = f"{r.get('repeat', 1)}" + (f" (exit {r['rc']})" if r["rc"] != 0 else "")
        head = f"{r['precision']} | {r['seed']} | {run}"
        if not r["losses"]:
            lines.append(f"{head} | failed: {r.get('error', r['rc'])}")
            continue
        it, last, mean5 = summary(r["losses"])
        tok, mfu = r["speed"] or (float("nan"), float("nan"))
        val = r.get("val")
        val_cell = "" if val is None else f"{val:.4f}"
        row = f"{head} | {it} | {val_cell} | {last:.4f} | {mean5:.4f} | {tok:,.0f} | {mfu:.2f} %"
        base = bf16.get(r["seed"])
        common = sorted(set(r["losses"]) & set(base["losses"])) if base is not None else []
        if base is r or not common:
            lines.append(row + " | | | |")
            continue
        at, last, mean5 = summary(r["losses"], common)
        _, b_last, b_mean5 = summary(base["losses"], common)
        rel, rel5 = last / b_last - 1, mean5 / b_mean5 - 1
        where = f" at {at}" if at != it or at != max(base["losses"]) else ""
        has_val = val is not None and base.get("val") is not None
        val_diff = verdict(val / base["val"] - 1) if has_val else ""
        last_diff = f"{100 * rel:+.2f} %" if has_val else verdict(rel)
        lines.append(f"{row} | bf16 seed {base['seed']} run {base.get('repeat', 1)}{where} | "
                     f"{val_diff} | {last_diff} | {100 * rel5:+.2f} %")  # fmt: skip
    return lines


def _ints(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a comma list of integers, got {text!r}"
        ) from None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default=str(CONFIG), help="the model's GPT-NeoX config")
    p.add_argument("--corpus", nargs="+", default=[sysconfig.get_paths()["stdlib"]],
                   help="folders of text files (default: Python's standard library)")  # fmt: skip
    p.add_argument("--max-mb", type=float, default=40.0, help="at most this much corpus text")
    p.add_argument("--work", default="/tmp/neox-fp8-loss", help="data, configs and logs")
    p.add_argument("--precisions", default="bf16,fp8",
                   help="run in this order per seed; one named twice runs twice")  # fmt: skip
    p.add_argument("--iters", type=int, default=300)
    p.add_argument("--micro-batch", type=int, default=8)
    p.add_argument("--warmup", type=float, default=0.1, help="warm-up fraction of the iterations")
    p.add_argument(
        "--seeds", type=_ints, default=[1234], help="comma list: each precision runs each seed"
    )
    p.add_argument("--repeats", type=int, default=1, help="runs of each precision and seed")
    p.add_argument("--log-interval", type=int, default=10)
    p.add_argument("--tolerance", type=float, default=0.01)
    p.add_argument("--lr", default="1e-4",
                   help="learning rate, or 'config' for the config's own (see above)")  # fmt: skip
    p.add_argument("--eval-iters", type=int, default=16,
                   help="validation batches after the last step (0: none)")  # fmt: skip
    p.add_argument("--val-percent", type=int, default=10, help="of the corpus, held out")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds per neox-train run")
    args = p.parse_args(argv)
    for name in ("iters", "micro_batch", "repeats", "log_interval"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')}: must be at least 1, got {getattr(args, name)}")
    if args.eval_iters < 0 or not 0 < args.val_percent < 100:
        p.error("--eval-iters must be at least 0 and --val-percent between 1 and 99")
    if args.lr != "config":
        try:
            float(args.lr)
        except ValueError:
            p.error(f"--lr: a number or 'config', got {args.lr!r}")
    Path(args.work).mkdir(parents=True, exist_ok=True)
    import_paths()  # a plain checkout: the packages' source folders (children get child_env)

    from neox_core.config.loader import load_config

    vocab = load_config([args.config]).model.vocab_size
    prefix = prepare(args, vocab)
    results = []
    for seed in args.seeds:
        runs: Counter[str] = Counter()  # a precision named twice runs twice: run 1, run 2
        for _ in range(args.repeats):
            for precision in args.precisions.split(","):
                runs[precision] += 1
                results.append(train(args, prefix, precision, seed, runs[precision]))
    print()
    print(f"config {Path(args.config).name}, {args.iters} iterations, micro batch {args.micro_batch}, "
          f"lr {args.lr}, warm-up {args.warmup:g}, validation {args.eval_iters} batches of "
          f"{args.val_percent} % held out, corpus {' '.join(args.corpus)}")  # fmt: skip
    for line in table(results, args.tolerance):
        print(line)
    return 0 if all(r["rc"] == 0 for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
