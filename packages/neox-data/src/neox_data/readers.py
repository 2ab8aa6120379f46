"""Input sources cut into chunks of documents that workers decode, validate and tokenize.

Chunks depend only on the input (never on the worker count), which is what makes the
output byte-identical whatever `--workers` is. An uncompressed JSONL file is cut into byte
ranges that the workers read, split and decode themselves, so the main process never touches
its bytes: a range holds the lines that *start* inside it, and a range's line numbers are
made absolute by the caller from the line counts of the ranges before it. Compressed JSONL,
JSON arrays, Parquet and HF datasets are read in the main process; their lines or records
travel to the workers, still undecoded where possible.
"""

from __future__ import annotations

import gzip
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Literal

CHUNK_DOCS = 512
CHUNK_BYTES = 4 << 20
RANGE_BYTES = 1 << 20  # bytes of an uncompressed JSONL file per worker task

ChunkKind = Literal["jsonl", "text", "records"]


class InputError(ValueError):
    """An input that cannot be opened or read at all."""


@dataclass
class Chunk:
    """Documents from one source; `locations[i]` names document i for error messages.

    With `byte_range` set the chunk is a pointer, not data: the lines of `source` that start
    in `[start, end)`, which `load_range` reads where the chunk is processed. Its items are
    then located by `line_numbers`, counted from the start of the range (1-based).
    """

    source: str
    kind: ChunkKind
    items: list[Any]
    locations: list[str]
    nbytes: int = 0
    meta: dict[str, Any] = field(default_factory=dict)
    byte_range: tuple[int, int] | None = None
    line_numbers: list[int] | None = None
    lines: int = 0  # newlines in a loaded range: where the next range's numbering starts

    def location(self, i: int) -> str:
        if self.line_numbers is not None:
            return f"{self.source}:{self.line_numbers[i]}"
        return self.locations[i]


def read_range(path: str, start: int, end: int) -> bytes:
    """The bytes of the lines of `path` that start in `[start, end)`, whole."""
    with open(path, "rb") as fh:
        if start > 0:
            fh.seek(start - 1)
            if fh.read(1) != b"\n":
                fh.readline()  # the tail of a line that started in an earlier range
        pos = fh.tell()
        if pos >= end:
            return b""
        data = fh.read(end - pos)
        if data and not data.endswith(b"\n"):
            data += fh.readline()  # the last line started here, so it is ours to the end
    return data


def load_range(chunk: Chunk) -> Chunk:
    """A byte-range chunk made into a JSONL chunk of its non-blank lines."""
    assert chunk.byte_range is not None
    data = read_range(chunk.source, *chunk.byte_range)
    lines = data.split(b"\n")
    if lines and not lines[-1]:
        lines.pop()  # the final newline ends a line, it does not start one
    items: list[bytes] = []
    numbers: list[int] = []
    for lineno, raw in enumerate(lines, start=1):
        if raw.strip():  # blank lines separate nothing in JSONL
            items.append(raw)
            numbers.append(lineno)
    return Chunk(
        chunk.source,
        "jsonl",
        items,
        [],
        len(data),
        line_numbers=numbers,
        lines=data.count(b"\n"),
    )


def iter_jsonl_ranges(path: Path) -> Iterator[Chunk]:
    """Byte-range pointers covering an uncompressed JSONL file."""
    size = path.stat().st_size
    for start in range(0, size, RANGE_BYTES):
        end = min(start + RANGE_BYTES, size)
        yield Chunk(str(path), "jsonl", [], [], end - start, byte_range=(start, end))


def is_compressed(path: Path) -> bool:
    return path.name.lower().endswith((".gz", ".zst", ".zstd"))


def _open_binary(path: Path) -> BinaryIO:
    name = path.name.lower()
    if name.endswith(".gz"):
        return gzip.open(path, "rb")  # type: ignore[return-value]
    if name.endswith(".zst") or name.endswith(".zstd"):
        import zstandard

        fh = open(path, "rb")  # noqa: SIM115 - closed with the reader
        reader = zstandard.ZstdDecompressor().stream_reader(fh, closefd=True)
        return io.BufferedReader(reader, buffer_size=1 << 20)  # type: ignore[arg-type]
    return open(path, "rb", buffering=1 << 20)


def _base_suffix(path: Path) -> str:
    name = path.name.lower()
    for comp in (".gz", ".zst", ".zstd"):
        if name.endswith(comp):
            name = name[: -len(comp)]
    return Path(name).suffix


def is_hf_saved_dataset(path: Path) -> bool:
    return path.is_dir() and any(
        (path / f).is_file() for f in ("dataset_info.json", "state.json", "dataset_dict.json")
    )


def iter_jsonl(path: Path) -> Iterator[Chunk]:
    lines: list[bytes] = []
    locs: list[str] = []
    nbytes = 0
    with _open_binary(path) as fh:
        for lineno, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue  # blank lines separate nothing in JSONL
            lines.append(raw)
            locs.append(f"{path}:{lineno}")
            nbytes += len(raw)
            if len(lines) >= CHUNK_DOCS or nbytes >= CHUNK_BYTES:
                yield Chunk(str(path), "jsonl", lines, locs, nbytes)
                lines, locs, nbytes = [], [], 0
    if lines:
        yield Chunk(str(path), "jsonl", lines, locs, nbytes)


def iter_json_array(path: Path) -> Iterator[Chunk]:
    with _open_binary(path) as fh:
        raw = fh.read()
    try:
        data = json.loads(raw)
    except UnicodeDecodeError as e:
        raise InputError(f"{path}: invalid UTF-8 at byte {e.start}") from e
    except json.JSONDecodeError as e:
        raise InputError(f"{path}:{e.lineno}: malformed JSON: {e.msg}") from e
    if not isinstance(data, list):
        raise InputError(f"{path}: a .json input must hold an array of objects")
    yield from _record_chunks(str(path), data, "element")


def iter_text_file(path: Path) -> Iterator[Chunk]:
    """A text file is one document (key `text`)."""
    with _open_binary(path) as fh:
        raw = fh.read()
    yield Chunk(str(path), "text", [raw], [f"{path}:1"], len(raw))


def iter_parquet(path: Path, keys: list[str]) -> Iterator[Chunk]:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except Exception as e:
        raise InputError(f"{path}: not a readable Parquet file: {e}") from e
    columns = [k for k in keys if k in pf.schema_arrow.names]
    if not columns:
        raise InputError(
            f"{path}: has none of the keys {keys} (columns: {', '.join(pf.schema_arrow.names)})"
        )
    row = 0
    for batch in pf.iter_batches(batch_size=CHUNK_DOCS, columns=columns):
        records = batch.to_pylist()
        locs = [f"{path}: row {row + i + 1}" for i in range(len(records))]
        row += len(records)
        yield Chunk(str(path), "records", records, locs, batch.nbytes)


def _record_chunks(source: str, records: Any, unit: str, start: int = 0) -> Iterator[Chunk]:
    batch: list[Any] = []
    locs: list[str] = []
    for i, rec in enumerate(records, start=start + 1):
        batch.append(rec)
        locs.append(f"{source}: {unit} {i}")
        if len(batch) >= CHUNK_DOCS:
            yield Chunk(source, "records", batch, locs)
            batch, locs = [], []
    if batch:
        yield Chunk(source, "records", batch, locs)


def iter_hf_dataset(
    name_or_path: str, keys: list[str], subset: str | None, split: str | None
) -> Iterator[Chunk]:
    """A local `save_to_disk` folder, or a hub name through `datasets` (streamed)."""
    ds = load_hf_dataset(name_or_path, subset, split, streaming=True)
    names = list(ds.column_names or []) if getattr(ds, "column_names", None) else None
    if names is not None:
        present = [k for k in keys if k in names]
        if not present:
            raise InputError(f"{name_or_path}: has none of the keys {keys} (columns: {names})")
        extra = [c for c in names if c not in keys]
        if extra:
            ds = ds.remove_columns(extra)
    row = 0
    for batch in ds.iter(batch_size=CHUNK_DOCS):
        cols = list(batch)
        n = len(batch[cols[0]]) if cols else 0
        records = [{c: batch[c][i] for c in cols} for i in range(n)]
        locs = [f"{name_or_path}: row {row + i + 1}" for i in range(n)]
        row += n
        yield Chunk(name_or_path, "records", records, locs)


def load_hf_dataset(
    name_or_path: str,
    subset: str | None,
    split: str | None,
    streaming: bool = False,
    num_proc: int | None = None,
) -> Any:
    try:
        import datasets
    except ImportError as e:  # pragma: no cover - the extra is installed in dev
        raise InputError("HF datasets need the `datasets` library: install neox-data[hf]") from e
    path = Path(name_or_path)
    if path.exists():
        if not is_hf_saved_dataset(path):
            raise InputError(f"{path}: not a `save_to_disk` dataset folder")
        ds = datasets.load_from_disk(str(path))
        if isinstance(ds, datasets.DatasetDict):
            chosen = split or ("train" if "train" in ds else None)
            if chosen not in ds:
                raise InputError(f"{path}: split {split!r} not found (splits: {list(ds)})")
            ds = ds[chosen]
        return ds
    try:
        kwargs = {} if streaming or not num_proc or num_proc <= 1 else {"num_proc": num_proc}
        return datasets.load_dataset(
            name_or_path, subset, split=split or "train", streaming=streaming, **kwargs
        )
    except Exception as e:
        raise InputError(f"{name_or_path}: cannot load the HF dataset: {e}") from e


def iter_input(
    spec: str, keys: list[str], subset: str | None = None, split: str | None = None
) -> Iterator[Chunk]:
    """Chunks of one `--input` entry, chosen by what the path is."""
    path = Path(spec)
    if is_hf_saved_dataset(path) or (not path.exists() and _looks_like_hub_name(spec)):
        yield from iter_hf_dataset(spec, keys, subset, split)
        return
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file())
        if not files:
            raise InputError(f"{path}: empty directory")
        for f in files:
            yield from iter_input(str(f), keys, subset, split)
        return
    if not path.is_file():
        raise InputError(f"{path}: input not found")
    suffix = _base_suffix(path)
    if suffix in (".jsonl", ".ndjson") or (suffix == ".json" and not _starts_with_bracket(path)):
        yield from (iter_jsonl(path) if is_compressed(path) else iter_jsonl_ranges(path))
    elif suffix == ".json":
        yield from iter_json_array(path)
    elif suffix == ".parquet":
        yield from iter_parquet(path, keys)
    elif suffix in (".txt", ".text", ".md"):
        if keys != ["text"]:
            raise InputError(f"{path}: text files hold key 'text' only, not {keys}")
        yield from iter_text_file(path)
    else:
        raise InputError(
            f"{path}: unknown input type {suffix!r} (JSONL .jsonl[.gz|.zst], .json, "
            ".parquet, .txt, or a save_to_disk folder)"
        )


KNOWN_SUFFIXES = (".jsonl", ".ndjson", ".json", ".parquet", ".txt", ".text", ".md", ".gz", ".zst")


def task_bound(specs: list[str]) -> int | None:
    """An upper bound on the chunks of local file inputs (None: unknown, e.g. a hub name).

    More workers than chunks would only start idle processes.
    """
    total = 0
    for spec in specs:
        path = Path(spec)
        if is_hf_saved_dataset(path) or not path.exists():
            return None
        files = [p for p in path.rglob("*") if p.is_file()] if path.is_dir() else [path]
        for f in files:
            if is_compressed(f) or _base_suffix(f) == ".parquet":
                return None  # a compressed file holds more than its size in chunks
            total += max(1, -(-f.stat().st_size // RANGE_BYTES))
    return total


def _looks_like_hub_name(spec: str) -> bool:
    """`name` or `org/name`, not a path to a (missing) file of a known type."""
    parts = spec.split("/")
    if not 1 <= len(parts) <= 2 or any(not p or p.startswith(".") for p in parts):
        return False
    return not spec.lower().endswith(KNOWN_SUFFIXES)


def _starts_with_bracket(path: Path) -> bool:
    with _open_binary(path) as fh:
        head = fh.read(4096)
    return head.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"[")
