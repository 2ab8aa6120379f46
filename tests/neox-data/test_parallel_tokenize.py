"""Workers reading byte ranges: same bytes out for any worker count, in every mode.

`RANGE_BYTES` is made tiny so that a small file is cut into many ranges, lines cross range
boundaries and several workers interleave; outputs are compared byte for byte, and text
outputs also against the tokenizer's own `encode`.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from neox_data import readers
from neox_data.cli import main
from neox_data.cpus import allocated_cpus
from neox_data.indexed_dataset import MMapIndexedDataset
from neox_data.readers import read_range

TEXTS = [
    "Hello world! The quick brown fox.",
    "café 東京 🙂 and\ttabs\nand newlines",
    "GPT-NeoX writes .bin and .idx files.",
    "x",
    "a longer document " * 30,
]


@pytest.fixture
def tiny_ranges(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(readers, "RANGE_BYTES", 97)


def output_bytes(prefix: Path) -> dict[str, bytes]:
    files = sorted(prefix.parent.glob(f"{prefix.name}_*_document.*"))
    assert files, f"no outputs under {prefix}"
    return {f.name[len(prefix.name) :]: f.read_bytes() for f in files}


def run_workers(args: list[str], tmp_path: Path, workers=(1, 2, 3)) -> list[dict[str, bytes]]:
    outs = []
    for w in workers:
        prefix = tmp_path / f"w{w}"
        rc = main(["tokenize", *args, "--output-prefix", str(prefix), "--workers", str(w)])
        assert rc == 0
        outs.append(output_bytes(prefix))
    return outs


@pytest.mark.parametrize("range_bytes", [1, 7, 64, 1000, 1 << 20])
def test_ranges_cover_the_file_line_by_line(tmp_path: Path, range_bytes: int) -> None:
    rng = random.Random(range_bytes)
    lines = [b"x" * rng.randint(0, 150) for _ in range(60)] + [b"", b"\r", b"   "]
    rng.shuffle(lines)
    for tail in (b"\n", b"", b"\n\n"):
        data = b"\n".join(lines) + tail
        path = tmp_path / "f.jsonl"
        path.write_bytes(data)
        pieces = [
            read_range(str(path), s, min(s + range_bytes, len(data)))
            for s in range(0, len(data), range_bytes)
        ]
        assert b"".join(pieces) == data
        starts, pos = [], 0
        for p in pieces:
            starts.append(pos)
            pos += len(p)
        for s, p in zip(starts, pieces, strict=True):
            assert not p or s == 0 or data[s - 1 : s] == b"\n"  # each piece starts a line


def test_text_mode_same_bytes_for_any_worker_count(
    tok_dir: Path, hf_tok, tmp_path: Path, tiny_ranges: None
) -> None:
    docs = [f"{t} number {i}" for i, t in enumerate(TEXTS * 12)]
    lines = [json.dumps({"text": d}) for d in docs]
    lines[5:5] = ["", "   "]  # blank lines are skipped wherever they fall
    src = tmp_path / "in.jsonl"
    src.write_text("\r\n".join(lines), encoding="utf-8")  # CRLF, no final newline
    args = ["--input", str(src), "--vocab-file", str(tok_dir / "tokenizer.json"), "--append-eod"]
    outs = run_workers(args, tmp_path)
    assert outs[0] == outs[1] == outs[2]
    ds = MMapIndexedDataset(tmp_path / "w3_text_document")
    eod = hf_tok.token_to_id("<|endoftext|>")
    assert [ds.document(i).tolist() for i in range(ds.num_docs)] == [
        [*hf_tok.encode(d).ids, eod] for d in docs
    ]


CHAT = [
    {"role": "user", "content": "What is two plus two?"},
    {"role": "assistant", "content": "four."},
]


@pytest.mark.parametrize("mode", ["chat", "dpo", "kto"])
def test_chat_modes_same_bytes_for_any_worker_count(
    tok_dir: Path, tmp_path: Path, tiny_ranges: None, mode: str
) -> None:
    rows = []
    for i in range(25):
        chat = [{**CHAT[0], "content": f"{CHAT[0]['content']} ({i})"}, CHAT[1]]
        if mode == "dpo":
            rows.append(
                {
                    "prompt": chat[:1],
                    "chosen": [{"role": "assistant", "content": f"four, {i}"}],
                    "rejected": [{"role": "assistant", "content": "five."}],
                }
            )
        else:
            rows.append({"messages": chat, "label": i % 3 == 0})
    src = tmp_path / f"{mode}.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    args = ["--input", str(src), "--tokenizer-path", str(tok_dir), "--mode", mode]
    outs = run_workers(args, tmp_path)
    assert outs[0] == outs[1] == outs[2]
    expected = {"chat": 4, "dpo": 8, "kto": 6}[mode]  # .bin + .idx per output
    assert len(outs[0]) == expected
    ds = MMapIndexedDataset(
        tmp_path / ("w2_chosen_document" if mode == "dpo" else "w2_messages_document")
    )
    assert ds.num_docs == 25


def test_prepare_same_bytes_for_any_worker_count(
    tok_dir: Path, tmp_path: Path, tiny_ranges: None
) -> None:
    import datasets

    texts = [f"{t} {i}" for i, t in enumerate(TEXTS * 8)]
    datasets.Dataset.from_dict({"text": texts}).save_to_disk(str(tmp_path / "corpus"))
    outs = []
    for w in (1, 3):
        out = tmp_path / f"out{w}"
        rc = main(
            [
                "prepare",
                "--dataset",
                str(tmp_path / "corpus"),
                "--output-dir",
                str(out),
                "--vocab-file",
                str(tok_dir / "tokenizer.json"),
                "--tokenize-workers",
                str(w),
            ]
        )
        assert rc == 0
        results = json.loads((out / "corpus--train" / "pipeline_results.json").read_text())
        assert results["tokenize"]["workers"] == w
        outs.append(output_bytes(out / "corpus--train" / "corpus--train"))
    assert outs[0] == outs[1]


def test_error_lines_are_absolute_across_ranges(
    tok_dir: Path, tmp_path: Path, tiny_ranges: None, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = [json.dumps({"text": f"document {i}"}) for i in range(60)]
    lines[36] = '{"text": "broken"'  # line 37
    lines[51] = '{"txt": "x"}'  # line 52
    lines.insert(10, "")  # a blank line shifts them: 38 and 53
    src = tmp_path / "bad.jsonl"
    src.write_text("\n".join(lines) + "\n", encoding="utf-8")
    base = ["tokenize", "--input", str(src), "--vocab-file", str(tok_dir / "tokenizer.json")]
    base += ["--output-prefix", str(tmp_path / "o"), "--workers", "2"]
    assert main(base) == 2
    assert f"{src}:38: malformed JSON" in capsys.readouterr().err
    assert main([*base, "--on-error", "skip", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["skipped"] == 2 and report["documents"] == 58
    assert [e.split(": ", 1)[0] for e in report["errors"]] == [f"{src}:38", f"{src}:53"]


def test_allocated_cpus_follows_slurm(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    affinity = len(os.sched_getaffinity(0))
    assert 1 <= allocated_cpus({}) <= affinity
    assert allocated_cpus({"SLURM_CPUS_PER_TASK": "1"}) == 1
    assert allocated_cpus({"SLURM_CPUS_PER_TASK": "4096"}) == allocated_cpus({})
    one_task = {"SLURM_JOB_ID": "7", "SLURM_NTASKS": "1", "SLURM_CPUS_ON_NODE": "1"}
    assert allocated_cpus(one_task) == 1
    # several tasks share the node's CPUs: SLURM_CPUS_ON_NODE is not one task's share
    assert allocated_cpus({**one_task, "SLURM_NTASKS": "4"}) == allocated_cpus({})


def test_default_workers_come_from_the_allocation(
    tok_dir: Path, tmp_path: Path, tiny_ranges: None, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"text": t}) + "\n" for t in TEXTS * 4), encoding="utf-8")
    args = ["tokenize", "--input", str(src), "--vocab-file", str(tok_dir / "tokenizer.json")]
    args += ["--output-prefix", str(tmp_path / "o"), "--json"]
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "1")
    assert main(args) == 0
    assert json.loads(capsys.readouterr().out)["workers"] == 1
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "2")
    assert main(args) == 0
    assert json.loads(capsys.readouterr().out)["workers"] == min(2, allocated_cpus({}))
    # never more workers than the input has ranges
    small = tmp_path / "one.jsonl"
    small.write_text(json.dumps({"text": "x"}) + "\n", encoding="utf-8")
    assert main([*args[:2], str(small), *args[3:], "--workers", "8"]) == 0
    assert json.loads(capsys.readouterr().out)["workers"] == 1


def test_json_reports_every_stage(
    tok_dir: Path, tmp_path: Path, tiny_ranges: None, capsys: pytest.CaptureFixture[str]
) -> None:
    """`stages_s` names each stage, worker and main, and main_cpu is this process's CPU time."""
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"text": t}) + "\n" for t in TEXTS * 20), encoding="utf-8")
    base = ["tokenize", "--input", str(src), "--vocab-file", str(tok_dir / "tokenizer.json")]
    base += ["--output-prefix", str(tmp_path / "o"), "--json"]
    expected = {"read", "parse", "tokenize", "pack", "main_read", "main_wait", "write", "main_cpu"}
    for w in (1, 2):
        assert main([*base, "--workers", str(w)]) == 0
        report = json.loads(capsys.readouterr().out)
        stages = report["stages_s"]
        assert set(stages) == expected
        assert all(v >= 0 for v in stages.values()) and stages["main_cpu"] > 0
        assert stages["tokenize"] > 0 and stages["read"] > 0  # workers read their ranges
        # CPU time of one process: at most wall time x its threads (tokenizer's pool at 1)
        assert stages["main_cpu"] <= report["seconds"] * allocated_cpus() + 0.05
    assert stages["main_read"] < 0.5  # with workers the main process reads no input bytes
