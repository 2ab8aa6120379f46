"""`neox-data tokenize/inspect/count/merge` on real files, against the tokenizer's own encode."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from neox_data.cli import main
from neox_data.indexed_dataset import MMapIndexedDataset, verify

DOCS = [
    "Hello world! The quick brown fox.",
    "café 東京 🙂 and\ttabs\nand newlines",
    "GPT-NeoX writes .bin and .idx files.",
    "x",
] * 5


def write_jsonl(path: Path, records: list[object]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def tokenize(tok_dir: Path, *args: str) -> int:
    return main(["tokenize", "--vocab-file", str(tok_dir / "tokenizer.json"), *args])


def read_docs(prefix: Path | str) -> list[list[int]]:
    ds = MMapIndexedDataset(prefix)
    return [ds.document(i).tolist() for i in range(ds.num_docs)]


def test_jsonl_round_trip_through_inspect(tok_dir: Path, hf_tok, tmp_path: Path, capsys) -> None:
    src = write_jsonl(tmp_path / "in.jsonl", [{"text": d} for d in DOCS])
    assert tokenize(tok_dir, "--input", str(src), "--output-prefix", str(tmp_path / "out")) == 0
    prefix = tmp_path / "out_text_document"
    assert read_docs(prefix) == [hf_tok.encode(d).ids for d in DOCS]
    assert MMapIndexedDataset(prefix).dtype == np.uint16
    assert verify(prefix, vocab_size=400) == []
    capsys.readouterr()
    rc = main(
        [
            "inspect",
            str(tmp_path / "out"),
            "--docs",
            str(len(DOCS)),
            "--json",
            "--vocab-file",
            str(tok_dir / "tokenizer.json"),
        ]
    )
    report = json.loads(capsys.readouterr().out)[str(prefix)]
    assert rc == 0 and report["problems"] == []
    assert [e["text"] for e in report["shown"]] == DOCS
    assert report["documents"] == len(DOCS)


def test_append_eod_and_several_keys(tok_dir: Path, hf_tok, tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "in.jsonl", [{"title": d[:5], "text": d} for d in DOCS])
    tokenize(
        tok_dir,
        *("--input", str(src), "--output-prefix", str(tmp_path / "o"), "--append-eod"),
        *("--jsonl-keys", "text", "title"),
    )
    eod = hf_tok.token_to_id("<|endoftext|>")
    assert read_docs(tmp_path / "o_text_document") == [[*hf_tok.encode(d).ids, eod] for d in DOCS]
    assert read_docs(tmp_path / "o_title_document") == [
        [*hf_tok.encode(d[:5]).ids, eod] for d in DOCS
    ]


def test_every_input_format_gives_the_same_tokens(tok_dir: Path, tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq
    import zstandard

    records = [{"text": d} for d in DOCS]
    lines = "".join(json.dumps(r) + "\n" for r in records).encode()
    (tmp_path / "a.jsonl.gz").write_bytes(gzip.compress(lines))
    (tmp_path / "a.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(lines))
    (tmp_path / "a.json").write_text(json.dumps(records))
    pq.write_table(
        pa.table({"text": DOCS, "other": list(range(len(DOCS)))}), tmp_path / "a.parquet"
    )
    expected = None
    for name in ("a.jsonl.gz", "a.jsonl.zst", "a.json", "a.parquet"):
        out = tmp_path / f"out-{name}"
        tokenize(tok_dir, "--input", str(tmp_path / name), "--output-prefix", str(out))
        got = (Path(f"{out}_text_document.bin").read_bytes(), read_docs(f"{out}_text_document"))
        expected = expected or got
        assert got == expected, name


def test_text_files_and_hf_save_to_disk(tok_dir: Path, hf_tok, tmp_path: Path) -> None:
    import datasets

    (tmp_path / "txt").mkdir()
    for i, d in enumerate(DOCS[:3]):
        (tmp_path / "txt" / f"{i}.txt").write_text(d, encoding="utf-8")
    tokenize(tok_dir, "--input", str(tmp_path / "txt"), "--output-prefix", str(tmp_path / "t"))
    assert read_docs(tmp_path / "t_text_document") == [hf_tok.encode(d).ids for d in DOCS[:3]]

    ds = datasets.DatasetDict({"train": datasets.Dataset.from_dict({"text": DOCS})})
    ds.save_to_disk(str(tmp_path / "hf"))
    tokenize(tok_dir, "--input", str(tmp_path / "hf"), "--output-prefix", str(tmp_path / "h"))
    assert read_docs(tmp_path / "h_text_document") == [hf_tok.encode(d).ids for d in DOCS]


def test_output_does_not_depend_on_worker_count(tok_dir: Path, tmp_path: Path, monkeypatch) -> None:
    from neox_data import readers

    monkeypatch.setattr(readers, "CHUNK_DOCS", 7)  # many chunks, so workers interleave
    monkeypatch.setattr(readers, "RANGE_BYTES", 200)
    docs = [f"{d} number {i}" for i, d in enumerate(DOCS * 10)]
    src = write_jsonl(tmp_path / "in.jsonl", [{"text": d} for d in docs])
    outs = []
    for workers in (1, 2, 3):
        prefix = tmp_path / f"w{workers}"
        args = ("--input", str(src), "--output-prefix", str(prefix), "--workers", str(workers))
        tokenize(tok_dir, *args, "--append-eod")
        outs.append(tuple(Path(f"{prefix}_text_document.{e}").read_bytes() for e in ("bin", "idx")))
    assert outs[0] == outs[1] == outs[2]


BAD_LINES = [
    (b'{"text": "fine"}\n{"text": "broken"\n', ":2: malformed JSON"),
    (b'{"text": "fine"}\n{"txt": "x"}\n', ":2: missing key 'text'"),
    (b'{"text": ["a"]}\n', ":1: key 'text' holds list, not a string"),
    (b'{"text": "ok"}\n{"text": "ok"}\n{"text": "\xff\xfe"}\n', ":3: invalid UTF-8"),
    (b'{"text": ""}\n', ":1: empty document"),
    # valid JSON, but "\ud800" is a lone surrogate no UTF-8 tokenizer can take
    (
        b'{"text": "ok"}\n{"text": "bad \\ud800 x"}\n',
        ":2: key 'text': lone surrogate U+D800 at character 4",
    ),
    (b"[1, 2]\n", ":1: expected a JSON object"),
]


@pytest.mark.parametrize(("content", "message"), BAD_LINES)
def test_bad_input_names_file_and_line(
    tok_dir: Path, tmp_path: Path, capsys, content: bytes, message: str
) -> None:
    src = tmp_path / "bad.jsonl"
    src.write_bytes(content)
    rc = tokenize(tok_dir, "--input", str(src), "--output-prefix", str(tmp_path / "o"))
    err = capsys.readouterr().err
    assert rc == 2
    assert f"{src}{message}" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.jsonl"]  # nothing half-written


def test_skip_mode_counts_bad_records(tok_dir: Path, hf_tok, tmp_path: Path, capsys) -> None:
    src = tmp_path / "mixed.jsonl"
    src.write_bytes(b'{"text": "one"}\n{"text": 5}\nnot json\n{"text": "two"}\n{"text": ""}\n')
    rc = tokenize(
        tok_dir,
        *("--input", str(src), "--output-prefix", str(tmp_path / "o"), "--on-error", "skip"),
        "--json",
    )
    summary = json.loads(capsys.readouterr().out)
    assert rc == 0
    assert summary["documents"] == 2 and summary["skipped"] == 3
    assert [e.split(": ")[0] for e in summary["errors"]] == [f"{src}:2", f"{src}:3", f"{src}:5"]
    assert read_docs(tmp_path / "o_text_document") == [hf_tok.encode(t).ids for t in ("one", "two")]


def test_skip_mode_skips_lone_surrogates(tok_dir: Path, hf_tok, tmp_path: Path, capsys) -> None:
    src = tmp_path / "surrogates.jsonl"
    # JSON escapes: two lone surrogates, then a correctly paired one (an emoji)
    lines = [r'{"text": "one"}', r'{"text": "bad \ud800 x"}', r'{"text": "\udfff"}']
    lines.append(r'{"text": "two \ud83d\ude42"}')
    src.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
    rc = tokenize(
        tok_dir,
        *("--input", str(src), "--output-prefix", str(tmp_path / "o"), "--on-error", "skip"),
        "--json",
    )
    summary = json.loads(capsys.readouterr().out)
    assert rc == 0
    assert summary["documents"] == 2 and summary["skipped"] == 2
    assert summary["errors"] == [
        f"{src}:2: key 'text': lone surrogate U+D800 at character 4 (not valid UTF-8)",
        f"{src}:3: key 'text': lone surrogate U+DFFF at character 0 (not valid UTF-8)",
    ]
    # a correctly paired surrogate escape is an ordinary character
    expected = [hf_tok.encode(t).ids for t in ("one", "two \U0001f642")]
    assert read_docs(tmp_path / "o_text_document") == expected


def test_failure_keeps_previous_outputs(tok_dir: Path, tmp_path: Path) -> None:
    good = write_jsonl(tmp_path / "good.jsonl", [{"text": "hello"}])
    tokenize(tok_dir, "--input", str(good), "--output-prefix", str(tmp_path / "o"))
    before = Path(f"{tmp_path}/o_text_document.bin").read_bytes()
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b'{"text": "new"}\n{oops\n')
    assert tokenize(tok_dir, "--input", str(bad), "--output-prefix", str(tmp_path / "o")) == 2
    assert Path(f"{tmp_path}/o_text_document.bin").read_bytes() == before
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]


def test_count_and_merge(tok_dir: Path, hf_tok, tmp_path: Path, capsys) -> None:
    a = write_jsonl(tmp_path / "a.jsonl", [{"text": d} for d in DOCS[:4]])
    b = write_jsonl(tmp_path / "b.jsonl", [{"text": d} for d in DOCS[4:7]])
    tokenize(tok_dir, "--input", str(a), "--output-prefix", str(tmp_path / "a"))
    tokenize(tok_dir, "--input", str(b), "--output-prefix", str(tmp_path / "b"))
    capsys.readouterr()
    assert (
        main(
            [
                "merge",
                f"{tmp_path}/a_text_document",
                f"{tmp_path}/b_text_document",
                "--output-prefix",
                f"{tmp_path}/m",
            ]
        )
        == 0
    )
    assert read_docs(tmp_path / "m") == [hf_tok.encode(d).ids for d in DOCS[:7]]
    capsys.readouterr()
    main(["count", f"{tmp_path}/m", "--json"])
    stats = json.loads(capsys.readouterr().out)[f"{tmp_path}/m"]
    lengths = [len(hf_tok.encode(d).ids) for d in DOCS[:7]]
    assert stats["documents"] == 7 and stats["tokens"] == sum(lengths)
    assert stats["max_length"] == max(lengths)
    assert sum(b["documents"] for b in stats["histogram"]) == 7
    main(
        [
            "count",
            "--input",
            str(a),
            str(b),
            "--json",
            "--vocab-file",
            str(tok_dir / "tokenizer.json"),
        ]
    )
    raw = next(iter(json.loads(capsys.readouterr().out).values()))
    assert raw["tokens"] == stats["tokens"] and raw["documents"] == 7


def test_cli_process_exit_code_and_message(tok_dir: Path, tmp_path: Path) -> None:
    src = tmp_path / "bad.jsonl"
    src.write_bytes(b'{"text": "a"}\n{"nope": 1}\n')
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "neox_data.cli",
            "tokenize",
            "--input",
            str(src),
            "--output-prefix",
            str(tmp_path / "o"),
            "--vocab-file",
            str(tok_dir / "tokenizer.json"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert f"{src}:2: missing key 'text'" in proc.stderr


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("doc.txt", b"line one\nline two \xff\n", "doc.txt:1: invalid UTF-8 at byte 18 (line 2)"),
        ("arr.json", b'[{"text": "a"},\n {"text": }]', "arr.json:2: malformed JSON"),
        ("data.csv", b"text\nhello\n", "unknown input type '.csv'"),
        ("missing.jsonl", None, "missing.jsonl: input not found"),
    ],
)
def test_unreadable_inputs_are_named(
    tok_dir: Path, tmp_path: Path, capsys, name: str, content: bytes | None, message: str
) -> None:
    src = tmp_path / name
    if content is not None:
        src.write_bytes(content)
    rc = tokenize(tok_dir, "--input", str(src), "--output-prefix", str(tmp_path / "o"))
    assert rc == 2
    assert message in capsys.readouterr().err
    assert not list(tmp_path.glob("o_*"))
