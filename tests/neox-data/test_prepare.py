"""`neox-data prepare` on local save_to_disk datasets (no network)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import neox_data.prepare as prepare_module
from neox_data.cli import main
from neox_data.indexed_dataset import MMapIndexedDataset
from neox_data.prepare import RESULTS_FILE as RESULTS
from neox_data.tokenize import tokenize

TEXTS = ["Hello world!", "The quick brown fox.", "café 東京"]


def test_prepare_text_dataset(tok_dir: Path, hf_tok, tmp_path: Path, capsys) -> None:
    import datasets

    datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_dict({"text": TEXTS, "id": [1, 2, 3]}),
            "test": datasets.Dataset.from_dict({"text": ["x"], "id": [9]}),
        }
    ).save_to_disk(str(tmp_path / "corpus"))
    rc = main(
        [
            "prepare",
            "--dataset",
            str(tmp_path / "corpus"),
            "--output-dir",
            str(tmp_path / "out"),
            "--vocab-file",
            str(tok_dir / "tokenizer.json"),
            "--tokenize-workers",
            "2",
        ]
    )
    assert rc == 0
    out = tmp_path / "out" / "corpus--train"
    results = json.loads((out / "pipeline_results.json").read_text())
    assert results == json.loads(capsys.readouterr().out)
    lengths = [len(hf_tok.encode(t).ids) for t in TEXTS]
    assert results["field"] == "text" and results["rows"] == 3
    assert results["count"]["tokens"] == sum(lengths) == results["tokenize"]["tokens"]["text"]
    assert results["count"]["documents"] == 3
    assert set(results["timings_s"]) == {"load", "count", "export", "tokenize"}
    assert results["versions"]["tokenizers"]
    exported = [json.loads(line) for line in (out / "dataset.jsonl").read_text().splitlines()]
    assert exported == [{"text": t} for t in TEXTS]
    ds = MMapIndexedDataset(out / "corpus--train_text_document")
    assert [ds.document(i).tolist() for i in range(3)] == [hf_tok.encode(t).ids for t in TEXTS]


def test_prepare_detects_messages_and_count_only(tok_dir: Path, tmp_path: Path) -> None:
    import datasets

    chats = [[{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]]
    datasets.Dataset.from_dict({"messages": chats}).save_to_disk(str(tmp_path / "sft"))
    base = ["prepare", "--dataset", str(tmp_path / "sft"), "--output-dir", str(tmp_path / "o")]
    base += ["--tokenizer-path", str(tok_dir)]
    assert main([*base, "--count-only"]) == 0
    out = tmp_path / "o" / "sft--train"
    assert sorted(p.name for p in out.iterdir()) == ["pipeline_results.json"]
    results = json.loads((out / "pipeline_results.json").read_text())
    assert results["mode"] == "chat" and results["count"]["documents"] == 1
    assert main([*base, "--skip-count"]) == 0
    results = json.loads((out / "pipeline_results.json").read_text())
    assert "count" not in results
    assert results["tokenize"]["documents"] == 1
    assert (out / "sft--train_messages_label_document.idx").is_file()


def test_count_read_off_the_tokenized_dataset_equals_a_counting_pass(
    tok_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A full run tokenizes once and counts from what it wrote; --count-only writes nothing."""
    import datasets

    texts = [*TEXTS, "", "a much longer document " * 40, "x"]  # "" is skipped
    chats = [
        [{"role": "user", "content": t or "?"}, {"role": "assistant", "content": "ok " * i}]
        for i, t in enumerate(texts, start=1)
    ]
    datasets.Dataset.from_dict({"text": texts}).save_to_disk(str(tmp_path / "plain"))
    datasets.Dataset.from_dict({"messages": chats}).save_to_disk(str(tmp_path / "chat"))
    passes: list[bool] = []  # the real tokenize runs; this only records each call's `write`

    def recording_tokenize(*args, **kwargs):
        passes.append(kwargs.get("write", True))
        return tokenize(*args, **kwargs)

    monkeypatch.setattr(prepare_module, "tokenize", recording_tokenize)
    for name, skipped in (("plain", 1), ("chat", 0)):
        base = ["prepare", "--dataset", str(tmp_path / name), "--tokenizer-path", str(tok_dir)]
        base += ["--on-error", "skip", "--tokenize-workers", "2"]
        runs = []
        for extra in (["--count-only"], []):
            out = tmp_path / f"o{len(extra)}"
            passes.clear()
            assert main([*base, "--output-dir", str(out), *extra]) == 0
            runs.append((list(passes), json.loads((out / f"{name}--train" / RESULTS).read_text())))
        (only_passes, only), (full_passes, full) = runs
        assert only_passes == [False] and full_passes == [True]
        assert "tokenize" not in only
        assert full["count"] == only["count"]
        assert full["count"]["skipped"] == full["tokenize"]["skipped"] == skipped
        assert full["count"]["documents"] == full["tokenize"]["documents"] == len(texts) - skipped
        assert full["count"]["tokens"] == full["tokenize"]["tokens"][full["field"]]


def test_prepare_rejects_unknown_columns(tok_dir: Path, tmp_path: Path, capsys) -> None:
    import datasets

    datasets.Dataset.from_dict({"body": ["x"]}).save_to_disk(str(tmp_path / "odd"))
    rc = main(
        [
            "prepare",
            "--dataset",
            str(tmp_path / "odd"),
            "--output-dir",
            str(tmp_path / "o"),
            "--vocab-file",
            str(tok_dir / "tokenizer.json"),
        ]
    )
    assert rc == 2
    assert "neither a 'messages' nor a 'text' column (columns: ['body'])" in capsys.readouterr().err
