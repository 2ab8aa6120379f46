"""Throughput of `neox-data tokenize`: against raw `encode_batch`, and across workers.

Generates a seeded JSONL corpus (word soup over a 40k-word Zipf lexicon, in 8 MiB blocks made
in parallel; the bytes do not depend on the process count) and trains a 32k byte-level BPE
on its head (no network), or takes `--tokenizer`. Then, each run in a fresh process:

Default mode (200 MB): raw `Tokenizer.encode_batch` over the texts in memory (default
threads, and one thread) and `neox-data tokenize --workers 1 2`; tokens/s and peak RSS.

`--scaling N` or `--scaling 1,2,4,8,16` (400 MB or more): `neox-data tokenize` with workers
N, .., 4, 2, 1 (or the listed counts), one tokenizer thread each, wall time with start-up;
tokens/s, speed-up and efficiency against one single-threaded worker, peak memory of the
whole process tree (summed PSS, summed RSS, and the largest single RSS), the per-stage
seconds the CLI reports (with the main process's CPU seconds and the worker count at which
it would saturate), and a digest of the outputs. The hardware ceiling: N copies of the bare
tokenizer encoding one in-memory sample side by side (`--ceiling-mb`, 0 skips it); their
efficiency is what the CPUs allow any pipeline. `--corpus FILE` takes a JSONL corpus
instead of generating one.
`--gpt-neox DIR` runs GPT-NeoX's `tools/datasets/preprocess_data.py` from a checkout
(outside this repo) on the same corpus and tokenizer at N workers (`--gpt-neox-workers`),
and the digests show whether the outputs are byte-identical. `--compare-src DIR` adds an
N-worker run of another `neox_data` source tree (e.g. an older commit). `--budget-s`
bounds the whole run: the narrow runs, slowest last, then share a prefix of the corpus
(the MB column says how much) rather than a row going missing.

    uv run python benchmarks/tokenize_throughput.py
    uv run python benchmarks/tokenize_throughput.py --scaling 1,2,4,8,16 --gpt-neox ../gpt-neox

Timings on a shared machine are noisy; run it on an idle one for numbers to quote.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import multiprocessing as mp
import os
import random
import resource
import subprocess
import sys
import tempfile
import threading
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


SYLLABLES = [c + v for c in "bcdfghjklmnprstvwz" for v in ("a", "e", "i", "o", "u", "ai", "ou")]
BLOCK_BYTES = 8 << 20  # one generator task; the corpus does not depend on the process count


def lexicon(seed: int, size: int = 40000) -> list[str]:
    """WORDS plus `size` pseudo-words of 1-4 syllables: enough variety for a 32k BPE."""
    rng = random.Random(seed)
    words = set(WORDS)
    out = list(WORDS)
    while len(out) < len(WORDS) + size:
        w = "".join(rng.choices(SYLLABLES, k=rng.randint(1, 4)))
        if rng.random() < 0.1:
            w = w.capitalize()
        if w not in words:
            words.add(w)
            out.append(w)
    rng.shuffle(out)
    return out


_LEX: tuple[list[str], list[float]] | None = None


def _block(args: tuple[int, int]) -> tuple[bytes, int]:
    """Block `index` of the corpus: Zipf-weighted word soup in documents of 20..4000 words."""
    global _LEX
    seed, index = args
    if _LEX is None:
        words = lexicon(seed)
        _LEX = (words, list(itertools.accumulate(1.0 / (i + 1) ** 1.05 for i in range(len(words)))))
    words, cum = _LEX
    rng = random.Random(f"{seed}-{index}")
    parts: list[str] = []
    size = docs = 0
    while size < BLOCK_BYTES:
        n = int(min(4000, 20 + rng.expovariate(1 / 400)))
        doc = rng.choices(words, cum_weights=cum, k=n)
        for i in range(12, n, rng.randint(8, 20)):
            doc[i] += "." if i % 3 else ".\n"
        line = json.dumps({"text": " ".join(doc)}, ensure_ascii=False) + "\n"
        parts.append(line)
        size += len(line.encode("utf-8"))
        docs += 1
    return "".join(parts).encode("utf-8"), docs


def generate(path: Path, size_mb: int, seed: int = 0, procs: int | None = None) -> int:
    """A seeded JSONL corpus of at least `size_mb` MiB; returns the document count."""
    blocks = -(-size_mb * 2**20 // BLOCK_BYTES)
    tmp = path.with_name(path.name + ".tmp")
    docs = 0
    with open(tmp, "wb") as fh, mp.Pool(procs or os.cpu_count()) as pool:
        for data, n in pool.imap(_block, [(seed, i) for i in range(blocks)]):
            fh.write(data)
            docs += n
    os.replace(tmp, path)
    return docs


def train_tokenizer(corpus: Path, out: Path, sample_mb: int = 12) -> None:
    """A 32k byte-level BPE (GPT-NeoX's HFTokenizer layout) trained on the corpus's head."""
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
        show_progress=False,
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


CEILING = r"""
import json, sys, time
from tokenizers import Tokenizer
tok = Tokenizer.from_file(sys.argv[1])
with open(sys.argv[2], "rb") as fh:
    data = fh.read(int(sys.argv[3]))
texts = [json.loads(line)["text"] for line in data.split(b"\n")[:-1]]
print("ready", flush=True)
sys.stdin.readline()
t = time.perf_counter()
n = 0
for i in range(0, len(texts), 512):
    n += sum(len(e.ids) for e in tok.encode_batch_fast(texts[i:i + 512]))
print(json.dumps({"seconds": time.perf_counter() - t, "tokens": n}), flush=True)
"""


def ceiling_run(tok: Path, corpus: Path, procs: int, sample_mb: float) -> dict[str, float]:
    """`procs` processes tokenize the same in-memory sample at once, one thread each.

    No reading, no parsing, no hand-off and no writing are timed: the rate is what the
    tokenizer itself gets from the CPUs when `procs` copies run side by side, the ceiling
    of any pipeline. Its efficiency against one process shows what the hardware allows
    (shared caches, memory bandwidth, all-core clock, SMT siblings).
    """
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "RAYON_NUM_THREADS": "1"}
    args = [str(tok), str(corpus), str(int(sample_mb * 2**20))]
    kids = [
        subprocess.Popen(
            [sys.executable, "-c", CEILING, *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        for _ in range(procs)
    ]
    for k in kids:  # every copy has loaded its sample before any starts the clock
        assert k.stdout is not None and k.stdout.readline().strip() == "ready"
    for k in kids:
        assert k.stdin is not None
        k.stdin.write("go\n")
        k.stdin.flush()
    outs = [json.loads(k.communicate()[0].strip().splitlines()[-1]) for k in kids]
    if any(k.returncode for k in kids):
        raise SystemExit("a tokenizer ceiling process failed")
    seconds = max(o["seconds"] for o in outs)
    tokens = sum(o["tokens"] for o in outs)
    return {"seconds": seconds, "tokens": tokens, "per_proc_tps": outs[0]["tokens"] / seconds}


def cpu_topology() -> str:
    """Logical CPUs, physical cores (distinct package/core ids) and the CPUs given to us."""
    cores = set()
    for d in Path("/sys/devices/system/cpu").glob("cpu[0-9]*"):
        try:
            pkg = (d / "topology" / "physical_package_id").read_text().strip()
            core = (d / "topology" / "core_id").read_text().strip()
        except OSError:
            continue
        cores.add((pkg, core))
    try:
        given = len(os.sched_getaffinity(0))
    except AttributeError:
        given = os.cpu_count() or 1
    model = ""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    phys = f"{len(cores)} physical cores" if cores else "physical cores unknown"
    return f"{os.cpu_count()} logical CPUs, {phys}, {given} in this process's affinity; {model}"


def run(code: str, args: list[str], env_extra: dict[str, str]) -> dict[str, float]:
    env = {**os.environ, **env_extra}
    out = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, check=True
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


# -- scaling mode -------------------------------------------------------------------------
def _children(pid: int) -> list[int]:
    out: list[int] = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as fh:
                out.extend(int(c) for c in fh.read().split())
    except OSError:
        pass
    return out


def _memory_kb(pid: int) -> tuple[int, int]:
    """(Pss, Rss) of one process in kB; Pss shares copy-on-write pages out fairly."""
    pss = rss = 0
    try:
        with open(f"/proc/{pid}/smaps_rollup") as fh:
            for line in fh:
                if line.startswith("Pss:"):
                    pss = int(line.split()[1])
                elif line.startswith("Rss:"):
                    rss = int(line.split()[1])
    except OSError:
        pass
    return pss, rss


class TreeMemory(threading.Thread):
    """Samples a process and all its descendants: peak of the summed Pss, peak single Rss."""

    def __init__(self, pid: int, interval: float = 0.2) -> None:
        super().__init__(daemon=True)
        self.pid, self.interval = pid, interval
        self.peak_pss_kb = self.peak_rss_kb = self.peak_rss_sum_kb = self.peak_procs = 0
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.is_set():
            pids, todo = [], [self.pid]
            while todo:
                p = todo.pop()
                pids.append(p)
                todo.extend(_children(p))
            mem = [_memory_kb(p) for p in pids]
            self.peak_pss_kb = max(self.peak_pss_kb, sum(m[0] for m in mem))
            self.peak_rss_kb = max([self.peak_rss_kb, *(m[1] for m in mem)])
            self.peak_rss_sum_kb = max(self.peak_rss_sum_kb, sum(m[1] for m in mem))
            self.peak_procs = max(self.peak_procs, len(pids))
            self._done.wait(self.interval)

    def stop(self) -> None:
        self._done.set()
        self.join()


def measured(cmd: list[str], env: dict[str, str], log: Path) -> dict[str, float]:
    """Wall seconds (start-up included) and peak memory of a command and its children."""
    with open(log, "w") as out:
        cpu = resource.getrusage(resource.RUSAGE_CHILDREN)
        t = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
        mem = TreeMemory(proc.pid)
        mem.start()
        rc = proc.wait()
        dt = time.perf_counter() - t
        mem.stop()
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
    # CPU seconds of the command and every process it waited for (its workers): on a
    # shared machine tokens per CPU-second stays comparable when wall time does not
    cpu_s = (after.ru_utime + after.ru_stime) - (cpu.ru_utime + cpu.ru_stime)
    if rc != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({rc}); see {log}:\n{log.read_text()[-3000:]}")
    return {
        "seconds": dt,
        "peak_pss_mb": mem.peak_pss_kb / 1024,
        "peak_rss_one_mb": mem.peak_rss_kb / 1024,
        "peak_rss_sum_mb": mem.peak_rss_sum_kb / 1024,
        "processes": mem.peak_procs,
        "cpu_s": cpu_s,
    }


def digest(prefix: str) -> str:
    h = hashlib.sha256()
    for ext in ("bin", "idx"):
        with open(f"{prefix}.{ext}", "rb") as fh:
            while block := fh.read(1 << 24):
                h.update(block)
    return h.hexdigest()[:16]


def corpus_prefix(corpus: Path, size_mb: int, out: Path) -> Path:
    """The first `size_mb` MiB of the corpus, cut after a whole line."""
    with open(corpus, "rb") as src, open(out, "wb") as dst:
        dst.write(src.read(size_mb * 2**20))
        dst.write(src.readline())
    return out


def neox_run(
    corpus: Path, tok: Path, work: Path, workers: int, pythonpath: str | None = None
) -> dict[str, object]:
    prefix = work / f"neox-w{workers}{'-alt' if pythonpath else ''}"
    cmd = [sys.executable, "-m", "neox_data.cli", "tokenize", "--input", str(corpus)]
    cmd += ["--output-prefix", str(prefix), "--vocab-file", str(tok)]
    cmd += ["--workers", str(workers), "--json"]
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}  # one thread per worker
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    log = work / f"{prefix.name}.log"
    row: dict[str, object] = dict(measured(cmd, env, log))
    text = log.read_text()
    report = json.loads(text[text.index("{") :])
    row.update(
        tokens=report["tokens"]["text"],
        docs=report["documents"],
        mb=report["input_bytes"] / 2**20,
        stages=report.get("stages_s", {}),
        workers_used=report.get("workers", workers),
        digest=digest(f"{prefix}_text_document"),
    )
    for ext in ("bin", "idx"):
        os.remove(f"{prefix}_text_document.{ext}")
    return row


def gpt_neox_run(
    corpus: Path, tok: Path, work: Path, workers: int, gpt_neox: Path, python: str
) -> dict:
    prefix = work / f"gpt-neox-w{workers}"
    cmd = [python, str(gpt_neox / "tools" / "datasets" / "preprocess_data.py")]
    cmd += ["--input", str(corpus), "--output-prefix", str(prefix)]
    cmd += ["--tokenizer-type", "HFTokenizer", "--vocab-file", str(tok)]
    cmd += ["--workers", str(workers), "--log-interval", "100000"]
    row: dict[str, object] = dict(measured(cmd, dict(os.environ), work / f"{prefix.name}.log"))
    from neox_data.indexed_dataset import MMapIndexedDataset

    with MMapIndexedDataset(f"{prefix}_text_document") as ds:
        row.update(tokens=ds.num_tokens, docs=ds.num_docs)
    row["digest"] = digest(f"{prefix}_text_document")
    for ext in ("bin", "idx"):
        os.remove(f"{prefix}_text_document.{ext}")
    return row


def scaling(args: argparse.Namespace, work: Path, corpus: Path, tok: Path, start: float) -> None:
    """Widest runs first on the whole corpus; under --budget-s the slow narrow runs shrink.

    Each narrow run's time is estimated from the per-worker rate of the run before it; when
    the runs left would overrun the budget they all get the same prefix of the corpus (cut
    at a line; the table's MB column says how much), instead of a row going missing.
    """
    counts = sorted(args.scaling, reverse=True)
    top = counts[0]
    size = corpus.stat().st_size / 2**20
    results = work / "scaling.jsonl"
    rows: list[tuple[str, int, dict]] = []
    rate: float | None = None  # MB/s per worker of the last neox-data run

    def keep(name: str, w: int, row: dict) -> None:
        rows.append((name, w, row))
        with open(results, "a") as fh:
            fh.write(json.dumps({"run": name, "workers": w, **row}) + "\n")
        print(f"{name:<34} w={w:<3} {row['mb']:6.0f} MB {row['seconds']:8.1f} s", flush=True)

    def ours(w: int, narrow: list[int]) -> None:
        nonlocal rate
        src = corpus
        if args.budget_s and rate:
            left = args.budget_s - (time.perf_counter() - start) - 3.0 * len(narrow)
            need = sum(size / (n * rate) for n in narrow)
            if need > left:
                mb = max(16, int(max(left, 0) * rate / sum(1 / n for n in narrow)))
                if mb < size:
                    src = work / f"prefix-{mb}mb.jsonl"
                    if not src.exists():
                        corpus_prefix(corpus, mb, src)
        row = neox_run(src, tok, work, w)
        rate = row["mb"] / row["seconds"] / w
        keep("neox-data", w, row)

    ours(counts[0], counts)
    for path in args.compare_src or []:
        row = neox_run(corpus, tok, work, top, path)
        keep(f"neox-data @ {Path(path).name}", top, row)
    if args.gpt_neox:
        for w in args.gpt_neox_workers or [top]:
            try:
                row = gpt_neox_run(corpus, tok, work, w, args.gpt_neox, args.gpt_neox_python)
            except SystemExit as e:  # a peer that cannot run here costs its row, not the table
                print(f"GPT-NeoX did not run: {e}", flush=True)
                continue
            row["mb"] = size
            keep("GPT-NeoX preprocess_data.py", w, row)
    for i, w in enumerate(counts[1:], start=1):
        ours(w, counts[i:])
    ceiling: dict[int, dict[str, float]] = {}
    if args.ceiling_mb > 0:
        for w in sorted(counts):
            ceiling[w] = ceiling_run(tok, corpus, w, args.ceiling_mb)
            print(f"{'tokenizer ceiling':<34} w={w:<3} {ceiling[w]['seconds']:15.1f} s", flush=True)
    print_scaling(rows, corpus, ceiling, tried_gpt_neox=bool(args.gpt_neox))


def print_scaling(
    rows: list[tuple[str, int, dict]],
    corpus: Path,
    ceiling: dict[int, dict[str, float]],
    tried_gpt_neox: bool = False,
) -> None:
    size = corpus.stat().st_size / 2**20
    ours = sorted(((w, r) for n, w, r in rows if n == "neox-data"), key=lambda x: x[0])
    base = ours[0][1]
    base_tps = base["tokens"] / base["seconds"]
    docs = max(r["docs"] for _, _, r in rows)
    print("\n## Stage profile: worker stages in seconds summed over the workers; main process")
    print("## stages in its own seconds (main wait = idle, waiting on workers); main CPU = CPU")
    print("## seconds of the main process (all threads: hand-out, receiving, writing, start-up)")
    head = f"{'workers':>7} {'MB':>5} {'read':>6} {'parse':>6} {'tokenize':>9} {'pack':>6}"
    print(
        f"{head} {'main read':>9} {'main wait':>9} {'write':>6} {'main CPU':>8} "
        f"{'tokenize MB/s/worker':>20} {'main MB/CPU-s':>13}"
    )
    for w, r in ours:
        st = r["stages"]
        rate = r["mb"] / st["tokenize"] if st.get("tokenize") else 0.0
        main_cpu = st.get("main_cpu")
        cpu_col = f"{main_cpu:>8.2f}" if main_cpu is not None else f"{'-':>8}"
        main_rate = f"{r['mb'] / main_cpu:>13.0f}" if main_cpu else f"{'-':>13}"
        print(
            f"{w:>7} {r['mb']:>5.0f} {st['read']:>6.2f} {st['parse']:>6.2f} "
            f"{st['tokenize']:>9.2f} {st['pack']:>6.2f} {st['main_read']:>9.2f} "
            f"{st['main_wait']:>9.2f} {st['write']:>6.2f} {cpu_col} {rate:>20.2f} {main_rate}"
        )
    w, r = ours[-1]
    st = r["stages"]
    if w > 1 and st.get("main_cpu") and st.get("tokenize"):
        # the main process serves all workers: it caps the run once workers x the per-worker
        # rate reaches what it handles per CPU-second (start-up included, so a lower bound)
        cap = (r["mb"] / st["main_cpu"]) / (r["mb"] / st["tokenize"])
        print(
            f"main process saturates at about {cap:,.0f} workers (its CPU per MB at {w} "
            "workers, start-up included: a lower bound)"
        )
    print(
        f"\n## Scaling: corpus {size:.0f} MB ({docs:,} documents); {cpu_topology()}; "
        f"load average {os.getloadavg()[0]:.1f}; one tokenizer thread per worker; wall time "
        "with start-up"
    )
    print(
        "efficiency = tokens/s / (workers x tokens/s of 1 worker); peak PSS = all processes "
        "(shared pages split fairly); sum RSS = peak of the processes' RSS added up (counts "
        "shared pages once per process); max RSS = the largest single process; tok/CPU-s = "
        "tokens per CPU-second of all its processes (start-up included)"
    )
    if ceiling:
        print(
            "raw effic. = the tokenizer alone, N copies on one in-memory sample side by side "
            "(no pipeline): what the CPUs allow; of raw = neox-data tokens/s / raw tokens/s"
        )
    print(
        f"{'run':<30} {'workers':>7} {'MB':>5} {'seconds':>8} {'tokens/s':>11} {'speed-up':>8} "
        f"{'effic.':>6} {'raw effic.':>10} {'of raw':>6} {'peak PSS MB':>11} {'PSS/worker':>10} "
        f"{'sum RSS MB':>10} {'max RSS MB':>10} {'tok/CPU-s':>10} {'output':>16}"
    )
    raw1 = ceiling[1]["per_proc_tps"] if 1 in ceiling else None
    order = sorted(rows, key=lambda x: (x[0].startswith("GPT"), x[0] != "neox-data", x[1]))
    for name, w, r in order:
        tps = r["tokens"] / r["seconds"]
        raw_eff = of_raw = "-"
        if name == "neox-data" and w in ceiling and raw1:
            raw = ceiling[w]["tokens"] / ceiling[w]["seconds"]
            raw_eff = f"{raw / raw1 / w:.2f}"
            of_raw = f"{tps / raw:.2f}"
        print(
            f"{name:<30} {w:>7} {r['mb']:>5.0f} {r['seconds']:>8.1f} {tps:>11,.0f} "
            f"{tps / base_tps:>7.2f}x {tps / base_tps / w:>6.2f} {raw_eff:>10} {of_raw:>6} "
            f"{r['peak_pss_mb']:>11.0f} {r['peak_pss_mb'] / max(w, 1):>10.0f} "
            f"{r.get('peak_rss_sum_mb', 0):>10.0f} {r['peak_rss_one_mb']:>10.0f} "
            f"{r['tokens'] / max(r.get('cpu_s', 0), 1e-9):>10,.0f} {r['digest']:>16}"
        )
    for name, w, r in rows:
        if r.get("workers_used", w) != w:
            print(f"note: {name} at {w} used fewer workers ({r['workers_used']}): input too small")
    top, top_row = ours[-1]
    for name, w, r in rows:
        if name.startswith("GPT") and w == top:
            ratio = (top_row["tokens"] / top_row["seconds"]) / (r["tokens"] / r["seconds"])
            print(f"\nneox-data vs GPT-NeoX preprocess_data.py at {top} workers: {ratio:.2f}x")
    if not any(name.startswith("GPT") for name, _, _ in rows):
        why = "it failed: see 'GPT-NeoX did not run' above" if tried_gpt_neox else "no --gpt-neox"
        print(f"\nGPT-NeoX preprocess_data.py: not run ({why})")
    full = {r["digest"] for _, _, r in rows if abs(r["mb"] - size) < 0.5}
    print(
        "whole-corpus outputs byte-identical (neox-data any workers, GPT-NeoX):",
        "yes" if len(full) == 1 else f"NO {sorted(full)}",
    )


def worker_counts(value: str) -> list[int]:
    """`N`: 1, 2, 4, .. N (powers of two, and N); `a,b,c`: those counts (1 is added)."""
    if "," in value:
        counts = {int(x) for x in value.split(",") if x}
    else:
        top = int(value)
        counts = {*(2**i for i in range(top.bit_length()) if 2**i <= top), top}
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError(f"worker counts must be at least 1: {value!r}")
    return sorted(counts | {1})  # efficiency is measured against one worker


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-mb", type=int, default=None, help="corpus size (200; 400 scaling)")
    ap.add_argument("--workdir", help="keep the corpus here (default: a temp dir)")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--tokenizer", help="use this tokenizer.json instead of training one")
    ap.add_argument(
        "--scaling",
        type=worker_counts,
        metavar="N|a,b,c",
        help="scaling mode: workers 1, 2, 4, .. N, or the listed counts (e.g. 1,2,4,8,16)",
    )
    ap.add_argument(
        "--corpus", type=Path, help="a JSONL corpus (key text) instead of the generated one"
    )
    ap.add_argument(
        "--ceiling-mb",
        type=float,
        default=8.0,
        help="scaling: MB each raw-tokenizer copy encodes for the hardware ceiling (0: skip)",
    )
    ap.add_argument("--gpt-neox", type=Path, help="a GPT-NeoX checkout to run side by side")
    ap.add_argument("--gpt-neox-workers", type=int, nargs="+", help="default: N")
    ap.add_argument(
        "--gpt-neox-python",
        default=sys.executable,
        help="the Python of GPT-NeoX's environment (torch, deepspeed, lm_dataformat, ftfy); "
        "default: this one",
    )
    ap.add_argument(
        "--compare-src",
        nargs="+",
        help="also run N workers with PYTHONPATH=DIR (another neox_data)",
    )
    ap.add_argument(
        "--budget-s", type=float, help="time for the runs; the 1-worker run shrinks to fit"
    )
    args = ap.parse_args()
    size_mb = args.size_mb or (400 if args.scaling else 200)
    if args.corpus is not None:
        if not args.corpus.is_file():
            raise SystemExit(f"--corpus {args.corpus}: not a file")
        size_mb = int(args.corpus.stat().st_size / 2**20)
    if args.scaling and size_mb < 400:
        print(f"note: a {size_mb} MB corpus is a smoke run; scaling figures need >= 400 MB")
    t_start = time.perf_counter()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="neox-tok-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    corpus = args.corpus or work / f"corpus-{size_mb}mb.jsonl"
    tok = Path(args.tokenizer) if args.tokenizer else work / "tokenizer.json"
    if not corpus.exists():
        t = time.perf_counter()
        docs = generate(corpus, size_mb)
        print(f"generated {corpus} ({docs} docs) in {time.perf_counter() - t:.1f} s", flush=True)
    if not tok.exists():
        t = time.perf_counter()
        train_tokenizer(corpus, tok)
        print(f"trained {tok} in {time.perf_counter() - t:.1f} s", flush=True)
    if args.scaling:
        scaling(args, work, corpus, tok, t_start)
        return
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
