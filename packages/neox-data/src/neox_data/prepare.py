"""`neox-data prepare`: one HF dataset to counted, exported and tokenized files, with a record.

Stages: load -> detect the field (`text` or `messages`) -> export `dataset.jsonl` ->
tokenize -> `pipeline_results.json` (counts, timings per stage, tool versions). The token
count is read off the tokenized dataset; only `--count-only` (or `--skip-tokenize`) runs a
separate counting pass that writes nothing. Every file is written under a temporary name and
renamed when complete.
"""

from __future__ import annotations

import json
import os
import platform
import re
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np

from neox_data.chat import ChatOptions
from neox_data.encoding import EncodeConfig
from neox_data.indexed_dataset import MMapIndexedDataset
from neox_data.readers import InputError, load_hf_dataset
from neox_data.stats import document_lengths, length_stats
from neox_data.tokenize import OnError, tokenize
from neox_data.tokenizer import TokenizerSpec

RESULTS_FILE = "pipeline_results.json"
EXPORT_FILE = "dataset.jsonl"
FIELDS = ("messages", "text")  # checked in this order


@dataclass
class PrepareOptions:
    dataset: str
    tokenizer: TokenizerSpec
    subset: str | None = None
    split: str = "train"
    output_dir: str = "."
    count_only: bool = False
    skip_count: bool = False
    skip_tokenize: bool = False
    num_proc: int = 1
    tokenize_workers: int | None = None  # None: the CPUs the job was given
    on_error: OnError = "fail"
    append_eod: bool = False
    chat_template: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def dataset_slug(dataset: str, subset: str | None, split: str) -> str:
    """Folder name: `<dataset>[--<subset>]--<split>`, `/` in hub names becoming `__`."""
    path = Path(dataset)
    base = path.name if path.exists() else dataset.replace("/", "__")
    parts = [base, *([subset] if subset else []), split]
    return "--".join(re.sub(r"[^A-Za-z0-9._-]+", "_", p) for p in parts)


def detect_field(columns: list[str]) -> str:
    for f in FIELDS:
        if f in columns:
            return f
    raise InputError(f"dataset has neither a 'messages' nor a 'text' column (columns: {columns})")


def tool_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for pkg in ("neox-data", "tokenizers", "transformers", "datasets", "numpy", "pyarrow"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def _write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=2, ensure_ascii=False)
        fh.write("\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _export_jsonl(ds: Any, key: str, path: Path) -> int:
    """Write the field as JSONL, one record per row; returns the bytes written."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as fh:
            for batch in ds.select_columns([key]).iter(batch_size=1024):
                lines = (json.dumps({key: v}, ensure_ascii=False) + "\n" for v in batch[key])
                fh.write("".join(lines).encode("utf-8"))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path.stat().st_size


def _count_from_dataset(prefix: str, skipped: int) -> dict[str, Any]:
    with MMapIndexedDataset(prefix) as ds:
        stats = length_stats(document_lengths(ds))
    stats["skipped"] = skipped
    return stats


def prepare(opts: PrepareOptions) -> dict[str, Any]:
    slug = dataset_slug(opts.dataset, opts.subset, opts.split)
    out_dir = Path(opts.output_dir) / slug
    out_dir.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    results: dict[str, Any] = {
        "dataset": opts.dataset,
        "subset": opts.subset,
        "split": opts.split,
        "output_dir": str(out_dir),
        "tokenizer": asdict(opts.tokenizer),
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "versions": tool_versions(),
        "timings_s": timings,
    }

    t = time.monotonic()
    ds = load_hf_dataset(opts.dataset, opts.subset, opts.split, num_proc=opts.num_proc)
    timings["load"] = round(time.monotonic() - t, 3)
    key = detect_field(list(ds.column_names))
    mode = "chat" if key == "messages" else "text"
    results.update({"field": key, "mode": mode, "rows": len(ds)})
    config = EncodeConfig(
        tokenizer=opts.tokenizer,
        keys=(key,),
        mode=mode,
        append_eod=opts.append_eod and mode == "text",  # chats end with EOS already
        chat=ChatOptions(chat_template_file=opts.chat_template),
    )

    tokenizing = not opts.count_only and not opts.skip_tokenize
    if not opts.skip_count and not tokenizing:
        # counting alone: a tokenize pass that writes nothing
        t = time.monotonic()
        lengths: list[np.ndarray] = []
        counted = tokenize(
            [opts.dataset],
            "",
            config,
            workers=opts.tokenize_workers,
            on_error=opts.on_error,
            subset=opts.subset,
            split=opts.split,
            quiet=True,
            write=False,
            lengths_out=lengths,
        )
        stats = length_stats(np.concatenate(lengths) if lengths else np.zeros(0, np.int64))
        stats["skipped"] = counted.skipped
        results["count"] = stats
        timings["count"] = round(time.monotonic() - t, 3)

    if not opts.count_only:
        t = time.monotonic()
        export = out_dir / EXPORT_FILE
        results["export"] = {
            "path": str(export),
            "bytes": _export_jsonl(ds, key, export),
        }
        timings["export"] = round(time.monotonic() - t, 3)
        if tokenizing:
            t = time.monotonic()
            res = tokenize(
                [str(export)],
                str(out_dir / slug),
                config,
                workers=opts.tokenize_workers,
                on_error=opts.on_error,
                num_docs=len(ds),
            )
            results["tokenize"] = res.as_dict()
            timings["tokenize"] = round(time.monotonic() - t, 3)
            if not opts.skip_count:
                # the written dataset holds the same documents a count pass would tokenize,
                # so its index gives the count without tokenizing everything twice
                t = time.monotonic()
                results["count"] = _count_from_dataset(res.outputs[key], res.skipped)
                timings["count"] = round(time.monotonic() - t, 3)

    results["finished_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    _write_json_atomic(out_dir / RESULTS_FILE, results)
    return results
