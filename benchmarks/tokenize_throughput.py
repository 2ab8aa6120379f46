"""Throughput of `neox-data tokenize` against the tokenizer's own `encode_batch`.

Generates a JSONL corpus (200 MB by default, seeded), trains a 32k byte-level BPE on a
sample of it (no network), then measures, each in a fresh process:

- raw `Tokenizer.encode_batch` over the same texts held in memory (one process, the
  library's own thread pool as configured by default, and with it off),
- `neox-data tokenize` with `--workers 1` and `--workers 2` (reading, JSON parsing,
  validation, tokenizing and writing `.bin/.idx` all included).

Prints a table of tokens/s and peak RSS. Run: `uv run python benchmarks/tokenize_throughput.py`.
Timings on a shared machine are noisy; run it on an idle one for numbers to quote.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

WORDS = [
    "the",
    "of",
    "and",
    "to",
    "in",
    "is",
    "that",
    "for",
    "it",
    "as",
    "was",
    "with",
    "be",
    "by",
    "on",
    "not",
    "he",
    "this",
    "are",
    "or",
    "his",
    "from",
    "at",
    "which",
    "but",
    "have",
    "an",
    "they",
    "you",
    "were",
    "her",
    "she",
    "there",
    "one",
    "all",
    "we",
    "their",
    "can",
    "has",
    "been",
    "if",
    "more",
    "when",
    "will",
    "would",
    "who",
    "so",
    "no",
    "time",
    "data",
    "model",
    "training",
    "token",
    "language",
    "learning",
    "network",
    "neural",
    "layer",
    "attention",
    "transformer",
    "gradient",
    "batch",
    "sequence",
    "parallel",
    "memory",
    "compute",
    "distributed",
    "checkpoint",
    "dataset",
    "corpus",
    "preprocessing",
    "throughput",
    "latency",
    "benchmark",
    "café",
    "naïve",
    "東京",
    "数据",
    "Москва",
    "ελληνικά",
    "🙂",
    "1234",
    "56.7",
    "-89",
    "(x)",
    "[y]",
    "{z}",
    '"quoted"',
    "it's",
]


def generate(path: Path, size_mb: int, seed: int = 0) -> int:
    """Zipf-ish word soup in documents of 20..4000 words; returns the document count."""
    rng = random.Random(seed)
    weights = [1.0 / (i + 1) for i in range(len(WORDS))]
    target = size_mb * 2**20
    written = docs = 0
    with open(path, "w", encoding="utf-8") as fh:
        while written < target:
            n = int(min(4000, 20 + rng.expovariate(1 / 400)))
            words = rng.choices(WORDS, weights, k=n)
            for i in range(12, n, rng.randint(8, 20)):
                words[i] += "." if i % 3 else ".\n"
            line = json.dumps({"text": " ".join(words)}, ensure_ascii=False) + "\n"
            fh.write(line)
            written += len(line.encode("utf-8"))
            docs += 1
    return docs


def train_tokenizer(corpus: Path, out: Path, sample_mb: int = 8) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    texts, size = [], 0
    with open(corpus, encoding="utf-8") as fh:
        for line in fh:
            texts.append(json.loads(line)["text"])
            size += len(line)
            if size > sample_mb * 2**20:
                break
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=32000,
        special_tokens=["<|endoftext|>", "<|padding|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(texts, trainer)
    tok.save(str(out))


RAW = r"""
import json, resource, sys, time
from tokenizers import Tokenizer
tok = Tokenizer.from_file(sys.argv[1])
texts = [json.loads(l)["text"] for l in open(sys.argv[2], encoding="utf-8")]
t, c = time.perf_counter(), time.process_time()
n = 0
for i in range(0, len(texts), 512):
    n += sum(len(e.ids) for e in tok.encode_batch(texts[i:i + 512]))
dt, cpu = time.perf_counter() - t, time.process_time() - c
print(json.dumps({"seconds": dt, "tokens": n, "cpu_s": cpu,
                  "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""

CLI = r"""
import json, resource, sys, time, io, contextlib
from neox_data.cli import main
t = time.perf_counter()
buf = io.StringIO()
with contextlib.redirect_stdout(buf):
    rc = main(sys.argv[1:])
dt = time.perf_counter() - t
res = json.loads(buf.getvalue())
me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
rss = max(me.ru_maxrss, kids.ru_maxrss) / 1024
cpu = me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime
print(json.dumps({"seconds": dt, "tokens": res["tokens"]["text"], "rss_mb": rss, "cpu_s": cpu}))
"""


def run(code: str, args: list[str], env_extra: dict[str, str]) -> dict[str, float]:
    env = {**os.environ, **env_extra}
    out = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, check=True
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-mb", type=int, default=200)
    ap.add_argument("--workdir", help="keep the corpus here (default: a temp dir)")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = ap.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="neox-tok-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    corpus, tok = work / f"corpus-{args.size_mb}mb.jsonl", work / "tokenizer.json"
    if not corpus.exists():
        t = time.perf_counter()
        docs = generate(corpus, args.size_mb)
        print(f"generated {corpus} ({docs} docs) in {time.perf_counter() - t:.1f} s")
    if not tok.exists():
        train_tokenizer(corpus, tok)
    rows: list[tuple[str, dict[str, float]]] = []
    rows.append(
        ("encode_batch, 1 process (default threads)", run(RAW, [str(tok), str(corpus)], {}))
    )
    rows.append(
        (
            "encode_batch, 1 process, 1 thread",
            run(RAW, [str(tok), str(corpus)], {"TOKENIZERS_PARALLELISM": "false"}),
        )
    )
    for w in args.workers:
        out = work / f"out-w{w}"
        cli = ["tokenize", "--input", str(corpus), "--output-prefix", str(out)]
        cli += ["--vocab-file", str(tok), "--workers", str(w), "--json"]
        rows.append((f"neox-data tokenize --workers {w}", run(CLI, cli, {})))
        if w == 1:  # the single-core figure that worker scaling is measured against
            rows.append(
                (
                    "neox-data tokenize --workers 1, 1 thread",
                    run(CLI, cli, {"TOKENIZERS_PARALLELISM": "false"}),
                )
            )
    base = rows[0][1]["tokens"] / rows[0][1]["seconds"]
    load = os.getloadavg()[0]
    print(
        f"\ncorpus {corpus.stat().st_size / 2**20:.0f} MB, {os.cpu_count()} CPUs, load average {load:.1f}"
    )
    print("tokens/CPU-s counts every thread and process (CLI: start-up included)")
    head = f"{'run':<43} {'wall s':>7} {'tokens':>12} {'tokens/s':>11} {'vs raw':>6}"
    print(f"{head} {'CPU s':>7} {'tok/CPU-s':>10} {'RSS MB':>7}")
    for name, r in rows:
        tps = r["tokens"] / r["seconds"]
        print(
            f"{name:<43} {r['seconds']:>7.1f} {int(r['tokens']):>12,} {tps:>11,.0f} "
            f"{tps / base:>6.2f} {r['cpu_s']:>7.1f} {r['tokens'] / r['cpu_s']:>10,.0f} "
            f"{r['rss_mb']:>7.0f}"
        )


if __name__ == "__main__":
    main()
