"""tools/config_coverage.py: classifies a GPT-NeoX checkout's configs and rewrites its table.

A stand-in checkout is written here (the real one is GPT-NeoX's repository, not vendored): a
config that dry-runs, one at tensor-parallel size 2 (dry-runs), one refused only for pipeline
parallelism (pending: open work), one refused for good, a post-training config, and a setup
file that must be left out.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]

MODEL = {
    "num_layers": 2,
    "hidden_size": 64,
    "num_attention_heads": 4,
    "seq_length": 128,
    "max_position_embeddings": 128,
    "pos_emb": "rotary",
    "rmsnorm_fusion": True,
    "log_grad_norm": True,
    "fp32_allreduce": True,
}


def _tool():
    spec = importlib.util.spec_from_file_location(
        "config_coverage", ROOT / "tools" / "config_coverage.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    root = tmp_path / "gpt-neox"
    files = {
        "configs/small.yml": MODEL,
        "configs/big-tp.yml": {**MODEL, "model_parallel_size": 2},
        "configs/moe.yml": {**MODEL, "moe_num_experts": 8},
        "configs/pipe.yml": {**MODEL, "pipe_parallel_size": 2, "gradient_accumulation_steps": 2},
        "configs/local_setup.yml": {"data_path": "data/enwik8/enwik8_text_document"},
        "post-training/configs/dpo.yml": {
            **MODEL,
            "train_impl": "dpo",
            "dataset_impl": "pairwise",
            "dpo_beta": 0.1,
            "pos_train_data_paths": ["chosen"],
            "neg_train_data_paths": ["rejected"],
        },
    }
    for rel, keys in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(json.dumps(keys, indent=1))
    return root


def test_statuses_and_the_written_table(checkout: Path, tmp_path: Path, capsys) -> None:
    tool = _tool()
    assert tool.suite_configs(checkout) == [
        "configs/big-tp.yml",
        "configs/moe.yml",
        "configs/pipe.yml",
        "configs/small.yml",
        "post-training/configs/dpo.yml",
    ]
    doc = tmp_path / "config.md"
    doc.write_text(f"# Config\n\nbefore\n\n{tool.BEGIN}\nold table\n{tool.END}\n\nafter\n")
    assert tool.main(["--gpt-neox", str(checkout), "--write", "--doc", str(doc)]) == 0
    text = doc.read_text()
    assert "old table" not in text and text.startswith("# Config\n\nbefore") and "after" in text
    rows = {line.split("|")[1].strip(" `"): line for line in text.splitlines() if "| `" in line}
    assert "| dry-runs | " in rows["configs/small.yml"]
    assert "| dry-runs | " in rows["configs/big-tp.yml"]
    assert "| dry-runs | " in rows["configs/pipe.yml"]
    assert (
        "| refused |" in rows["configs/moe.yml"]
        and "moe_num_experts = 8" in rows["configs/moe.yml"]
    )
    dpo = rows["post-training/configs/dpo.yml"]
    # accepted keys; refused because the setup file's data_path clashes with pairwise data
    assert "| refused | " in dpo and "dataset_impl pairwise reads pos_/neg_" in dpo
    assert "3 of 5 configs dry-run as written" in text
    # rerunnable: the same input gives the same document
    first = doc.read_text()
    assert tool.main(["--gpt-neox", str(checkout), "--write", "--doc", str(doc)]) == 0
    assert doc.read_text() == first
    capsys.readouterr()


def test_missing_markers_leave_the_document_alone(checkout: Path, tmp_path: Path) -> None:
    doc = tmp_path / "config.md"
    doc.write_text("# no markers\n")
    with pytest.raises(SystemExit, match="markers are missing"):
        _tool().main(["--gpt-neox", str(checkout), "--write", "--doc", str(doc)])
    assert doc.read_text() == "# no markers\n"


def test_the_project_doc_holds_a_generated_table() -> None:
    tool = _tool()
    text = (ROOT / "docs" / "config.md").read_text()
    table = text.split(tool.BEGIN, 1)[1].split(tool.END, 1)[0]
    assert "of 56 configs dry-run as written" in table
    assert table.count("\n| `") == 56


@pytest.mark.slow
def test_train_trains_the_shrunk_config(checkout: Path, tmp_path: Path) -> None:
    tool = _tool()
    corpus = tool.tiny_corpus(tmp_path)
    setup = ROOT / "examples" / "configs" / "local_setup.yml"
    result = tool.check_config(checkout, "configs/small.yml", setup, corpus)
    assert (result.status, result.detail) == ("trains", "")
