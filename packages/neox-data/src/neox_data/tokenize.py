"""The tokenization pipeline: inputs -> ordered worker results -> `.bin/.idx` per output.

Chunks are handed to a pool with a bounded window of outstanding work and collected in
submission order, so memory stays flat in the input size and the output does not depend on
the worker count. For uncompressed JSONL a chunk is only a byte range: each worker reads,
splits, decodes and tokenizes its range and sends back numpy token arrays, so the main
process does no per-document work and only appends arrays to the outputs. Workers run the
tokenizer single-threaded when they cover the CPUs; fewer workers share the CPUs out as
tokenizer threads. Outputs go through `IndexedDatasetWriter`, so a failure or Ctrl-C leaves
no half-written pair.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import resource
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from neox_data.cpus import allocated_cpus
from neox_data.encoding import STAGES, ChunkResult, EncodeConfig, Encoder
from neox_data.indexed_dataset import IndexedDatasetWriter
from neox_data.progress import Progress
from neox_data.readers import Chunk, iter_input, task_bound

OnError = Literal["fail", "skip"]
MAX_REPORTED_ERRORS = 20


class BadInputError(ValueError):
    """A bad record under `--on-error fail`; the message names file and line."""


@dataclass
class TokenizeResult:
    outputs: dict[str, str]  # output name -> prefix of the written pair
    documents: int
    tokens: dict[str, int]
    skipped: int
    errors: list[str] = field(default_factory=list)  # the first few skipped records
    input_bytes: int = 0
    seconds: float = 0.0
    workers: int = 1
    # seconds per stage: read/parse/tokenize/pack summed over workers; main_read (chunks
    # the main process reads itself), main_wait (waiting on workers) and write in the main;
    # main_cpu: CPU seconds of the main process, all its threads (with workers, the cost of
    # handing out ranges, receiving results and writing: what caps very wide runs)
    stages: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "outputs": self.outputs,
            "documents": self.documents,
            "tokens": self.tokens,
            "skipped": self.skipped,
            "errors": self.errors,
            "input_bytes": self.input_bytes,
            "seconds": round(self.seconds, 3),
            "workers": self.workers,
            "stages_s": {k: round(v, 3) for k, v in self.stages.items()},
        }


def _cpu_seconds() -> float:
    """User and system CPU seconds of this process (every thread, no child processes)."""
    use = resource.getrusage(resource.RUSAGE_SELF)
    return use.ru_utime + use.ru_stime


def output_prefix_for(prefix: str, name: str) -> str:
    return f"{prefix}_{name}_document"


# -- worker side -------------------------------------------------------------------------
_WORKER: Encoder | None = None


def _init_worker(config: EncodeConfig, threads: int) -> None:
    global _WORKER
    # Workers times threads = the CPUs: with a worker per CPU the tokenizer's own pool off,
    # else a share each. The pool is built at first use, after these are set. A user's
    # TOKENIZERS_PARALLELISM=false is kept.
    if threads <= 1 or os.environ.get("TOKENIZERS_PARALLELISM", "").lower() in ("false", "0"):
        os.environ["TOKENIZERS_PARALLELISM"] = "false"
    else:
        os.environ["TOKENIZERS_PARALLELISM"] = "true"
        os.environ["RAYON_NUM_THREADS"] = str(threads)
    _WORKER = Encoder(config)


def _work(chunk: Chunk) -> ChunkResult:
    assert _WORKER is not None
    return _WORKER.encode_chunk(chunk)


def _ordered_results(
    chunks: Iterator[Chunk],
    config: EncodeConfig,
    encoder: Encoder,
    workers: int,
    clock: dict[str, float],
) -> Iterator[ChunkResult]:
    """Results in chunk order; `clock` gets the main process's read and wait seconds."""

    def next_chunk() -> Chunk | None:
        t = time.perf_counter()
        chunk = next(chunks, None)
        clock["main_read"] += time.perf_counter() - t
        return chunk

    if workers <= 1:
        while (chunk := next_chunk()) is not None:
            yield encoder.encode_chunk(chunk)
        return
    threads = max(1, allocated_cpus() // workers)
    # fork: workers start in milliseconds and need no `__main__` guard in callers' scripts.
    method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
    pool = ProcessPoolExecutor(
        workers,
        mp_context=mp.get_context(method),
        initializer=_init_worker,
        initargs=(config, threads),
    )

    def take(window: deque[Future[ChunkResult]]) -> ChunkResult:
        t = time.perf_counter()
        res = window.popleft().result()
        clock["main_wait"] += time.perf_counter() - t
        return res

    try:
        window: deque[Future[ChunkResult]] = deque()
        while (chunk := next_chunk()) is not None:
            window.append(pool.submit(_work, chunk))
            if len(window) >= 4 * workers:
                yield take(window)
        while window:
            yield take(window)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _all_chunks(
    inputs: list[str], keys: list[str], subset: str | None, split: str | None
) -> Iterator[Chunk]:
    for spec in inputs:
        yield from iter_input(spec, keys, subset, split)


def tokenize(
    inputs: list[str],
    output_prefix: str,
    config: EncodeConfig,
    workers: int | None = 1,
    on_error: OnError = "fail",
    num_docs: int | None = None,
    subset: str | None = None,
    split: str | None = None,
    log_interval_s: float = 30.0,
    quiet: bool = False,
    write: bool = True,
    lengths_out: list[Any] | None = None,
) -> TokenizeResult:
    """Tokenize `inputs` into `<output_prefix>_<name>_document.bin/.idx`, one per output.

    `workers=None` takes the CPUs the job was given (see `allocated_cpus`); no more workers
    start than the inputs have chunks. With `write=False` nothing is written (token
    counting); `lengths_out` then collects the per-document token counts of the first
    output, chunk by chunk.
    """
    start = time.monotonic()
    cpu_start = _cpu_seconds()
    if workers is None:
        workers = allocated_cpus()
    if workers < 1:
        raise ValueError(f"--workers must be at least 1, got {workers}")
    bound = task_bound(inputs)
    if bound is not None:
        workers = max(1, min(workers, bound))
    encoder = Encoder(config)
    names = encoder.names
    prefixes = {n: output_prefix_for(output_prefix, n) for n in names}
    writers: dict[str, IndexedDatasetWriter] = {}
    if write:
        Path(output_prefix).parent.mkdir(parents=True, exist_ok=True)
        writers = {n: IndexedDatasetWriter(p, encoder.dtype) for n, p in prefixes.items()}
    progress = Progress(num_docs, log_interval_s) if not quiet else None
    tokens = dict.fromkeys(names, 0)
    docs = skipped = nbytes = 0
    errors: list[str] = []
    chunks = _all_chunks(inputs, list(config.keys), subset, split)
    stages = dict.fromkeys((*STAGES, "main_read", "main_wait", "write"), 0.0)
    results = _ordered_results(chunks, config, encoder, workers, stages)
    line_base: dict[str, int] = {}  # lines of each source before the next byte range
    try:
        for res in results:
            for k, v in res.seconds.items():
                stages[k] += v
            if res.relative_lines is not None:
                res.relocate(line_base.get(res.source, 0))
            line_base[res.source] = line_base.get(res.source, 0) + res.lines
            if res.errors:
                if on_error == "fail":
                    loc, msg = res.errors[0]
                    raise BadInputError(f"{loc}: {msg} (use --on-error skip to skip such records)")
                skipped += len(res.errors)
                room = MAX_REPORTED_ERRORS - len(errors)
                errors.extend(f"{loc}: {msg}" for loc, msg in res.errors[: max(room, 0)])
            t = time.perf_counter()
            for n in names:
                if write:
                    writers[n].add_documents(res.arrays[n], res.lengths[n])
                tokens[n] += int(res.arrays[n].size)
            stages["write"] += time.perf_counter() - t
            if lengths_out is not None:
                lengths_out.append(res.lengths[names[0]].astype(np.int32))
            docs += res.docs
            nbytes += res.nbytes
            if progress is not None:
                progress.update(res.docs, int(res.arrays[names[0]].size), res.nbytes)
        t = time.perf_counter()
        for w in writers.values():
            w.finalize()
        stages["write"] += time.perf_counter() - t
    except BaseException:
        for w in writers.values():
            w.abort()
        raise
    finally:
        results.close()  # stops the worker pool at once on failure
        if progress is not None:
            progress.close()
    stages["main_cpu"] = _cpu_seconds() - cpu_start
    return TokenizeResult(
        outputs=prefixes if write else {},
        documents=docs,
        tokens=tokens,
        skipped=skipped,
        errors=errors,
        input_bytes=nbytes,
        seconds=time.monotonic() - start,
        workers=workers,
        stages=stages,
    )
