"""Local lm-eval tasks (task YAML + JSONL written here) and an offline Hugging Face setup."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("lm_eval")

MC_DOCS = [
    {"question": "The sun rises in the", "choices": ["east", "west", "sea"], "answer": 0},
    {"question": "Cats like to drink", "choices": ["milk", "stone", "fire"], "answer": 0},
    {"question": "One plus one is", "choices": ["three", "two", "seven"], "answer": 1},
    {"question": "Water is", "choices": ["dry", "cold", "wet"], "answer": 2},
    {"question": "A week has seven", "choices": ["days", "cars"], "answer": 0},
    {"question": "Snow is", "choices": ["green", "white", "loud", "round"], "answer": 1},
]
PPL_DOCS = [
    {"text": "Once upon a time there was a little cat who lived in a big house."},
    {"text": "The quick brown fox jumps over the lazy dog. " * 12},  # longer than the context
    {"text": "Hello world."},
]
GEN_DOCS = [
    {"question": "Say yes.", "answer": "yes"},
    {"question": "The cat sat on the", "answer": "mat"},
]


def _jsonl(path: Path, docs: list[dict]) -> Path:
    path.write_text("".join(json.dumps(d) + "\n" for d in docs), encoding="utf-8")
    return path


@pytest.fixture(autouse=True)
def offline_hf(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """No network: datasets and the hub read only local files, caches in a temporary folder."""
    home = tmp_path_factory.getbasetemp() / "hf_home"
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setenv("HF_DATASETS_CACHE", str(home / "datasets"))
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def local_tasks(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of three local tasks: multiple choice, perplexity, and generate_until."""
    root = tmp_path_factory.mktemp("tasks")
    mc = _jsonl(root / "mc.jsonl", MC_DOCS)
    ppl = _jsonl(root / "ppl.jsonl", PPL_DOCS)
    gen = _jsonl(root / "gen.jsonl", GEN_DOCS)
    (root / "local_mc.yaml").write_text(
        f"""task: local_mc
dataset_path: json
dataset_kwargs:
  data_files:
    test: {mc}
output_type: multiple_choice
test_split: test
doc_to_text: "Question: {{{{question}}}}\\nAnswer:"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: answer
metric_list:
  - metric: acc
  - metric: acc_norm
metadata:
  version: 1.0
"""
    )
    (root / "local_ppl.yaml").write_text(
        f"""task: local_ppl
dataset_path: json
dataset_kwargs:
  data_files:
    test: {ppl}
output_type: loglikelihood_rolling
test_split: test
doc_to_text: ""
doc_to_target: "{{{{text}}}}"
metric_list:
  - metric: word_perplexity
  - metric: byte_perplexity
  - metric: bits_per_byte
metadata:
  version: 1.0
"""
    )
    (root / "local_gen.yaml").write_text(
        f"""task: local_gen
dataset_path: json
dataset_kwargs:
  data_files:
    test: {gen}
output_type: generate_until
test_split: test
doc_to_text: "{{{{question}}}}"
doc_to_target: "{{{{answer}}}}"
generation_kwargs:
  until: ["."]
  max_gen_toks: 8
  do_sample: false
metric_list:
  - metric: exact_match
metadata:
  version: 1.0
"""
    )
    return root
