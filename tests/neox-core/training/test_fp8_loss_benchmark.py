"""benchmarks/fp8_loss.py: its corpus, tokenizer and table on their own, and the whole pipeline
(tokenizer training, `neox-data tokenize`, two `neox-train` runs, the table) on a tiny model
on CPU, where torch._scaled_mm's CPU kernel runs the fp8 linears.

The GPU figures (issue 15: LLaMA-1.1B, 300 steps) come from running it on the H200.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
TINY = {
    "num_layers": 2,
    "hidden_size": 64,
    "num_attention_heads": 4,
    "num_kv_heads": 2,
    "seq_length": 64,
    "max_position_embeddings": 64,
    "pos_emb": "rotary",
    "rotary_pct": 1.0,
    "no_weight_tying": True,
    "norm": "rmsnorm",
    "activation": "swiglu",
    "intermediate_size": 384,
    "use_bias_in_norms": False,
    "use_bias_in_attn_linear": False,
    "use_bias_in_mlp": False,
    "make_vocab_size_divisible_by": 1,
    "vocab_size": 600,
    "optimizer": {"type": "Adam", "params": {"lr": 0.001}},
    "bf16": {"enabled": True},
    "train-iters": 10,
}


@pytest.fixture
def m(monkeypatch: pytest.MonkeyPatch):
    """benchmarks/fp8_loss.py as a module (it imports train_step.py beside it)."""
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    spec = importlib.util.spec_from_file_location("fp8_loss", ROOT / "benchmarks" / "fp8_loss.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _corpus(folder: Path) -> Path:
    """A few text files, one inside an installed-packages folder (to be skipped)."""
    (folder / "pkg").mkdir(parents=True)
    (folder / "site-packages" / "dep").mkdir(parents=True)
    for i in range(6):
        body = "\n".join(f"def f{i}_{j}(x):\n    return x * {j} + {i}\n" for j in range(40))
        (folder / "pkg" / f"mod{i}.py").write_text(body)
    (folder / "notes.md").write_text("# notes\n\nplain text about the modules above.\n" * 20)
    (folder / "site-packages" / "dep" / "skip.py").write_text("SKIPPED = True\n")
    (folder / "data.bin").write_bytes(b"\x00\x01")
    return folder


def test_corpus_skips_installed_packages_and_other_files_and_stops_at_the_size(
    m,
    tmp_path: Path,
) -> None:
    folder = _corpus(tmp_path / "c")
    files = m.corpus_files([folder], 10**9)
    names = [p.relative_to(folder).as_posix() for p in files]
    assert names == ["notes.md"] + [f"pkg/mod{i}.py" for i in range(6)]
    first_two = sum(p.stat().st_size for p in files[:2])
    assert len(m.corpus_files([folder], first_two)) == 2
    # a folder named explicitly is read even if it is an installed-packages folder
    assert [p.name for p in m.corpus_files([folder / "site-packages"], 10**9)] == ["skip.py"]
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "data.bin").write_bytes(b"\x00")
    with pytest.raises(SystemExit, match=r"no \.py/\.txt/\.md/\.rst files"):
        m.corpus_files([tmp_path / "empty"], 10**9)
    with pytest.raises(SystemExit, match="within 10 bytes"):  # the first file is larger
        m.corpus_files([folder], 10)


def test_tokenizer_fits_the_configs_vocabulary_with_eod(m, tmp_path: Path) -> None:
    from tokenizers import Tokenizer

    jsonl = tmp_path / "docs.jsonl"
    assert m.write_jsonl(m.corpus_files([_corpus(tmp_path / "c")], 10**9), jsonl) == 7
    m.train_tokenizer(jsonl, 400, tmp_path / "tokenizer.json")
    tok = Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    assert 257 < tok.get_vocab_size() <= 400  # bytes, eod and merges; at most the config's
    assert tok.token_to_id("<|endoftext|>") == 0
    text = "def f1_2(x):\n    return x * 2 + 1\n"
    assert tok.decode(tok.encode(text).ids) == text


def test_work_folder_data_is_reused_only_when_made_from_the_same_corpus(m, tmp_path: Path) -> None:
    import argparse

    first, second = _corpus(tmp_path / "a"), tmp_path / "b"
    second.mkdir()
    (second / "other.txt").write_text("a different corpus entirely\n" * 50)
    work = tmp_path / "work"
    work.mkdir()
    args = argparse.Namespace(corpus=[str(first)], max_mb=1.0, work=str(work))
    prefix = m.prepare(args, 400)
    bin_file = prefix.with_suffix(".bin")
    made = bin_file.stat().st_mtime_ns, bin_file.read_bytes()
    assert m.prepare(args, 400) == prefix and bin_file.stat().st_mtime_ns == made[0]
    args.corpus = [str(second)]
    m.prepare(args, 400)
    assert bin_file.read_bytes() != made[1]  # made again from the other corpus
    assert json.loads((work / "data.json").read_text())["corpus"] == [str(second.resolve())]


def test_bad_seeds_name_the_option(m, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        m.main(["--seeds", "1,x"])
    assert "--seeds: expected a comma list of integers, got '1,x'" in capsys.readouterr().err


@pytest.mark.parametrize("option", ["--iters", "--micro-batch", "--repeats", "--log-interval"])
def test_counts_below_one_name_the_option(
    m, option: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--repeats 0` used to run nothing and print an empty table with exit status 0."""
    with pytest.raises(SystemExit):
        m.main([option, "0", "--work", str(tmp_path / "work")])
    assert f"{option}: must be at least 1, got 0" in capsys.readouterr().err
    assert not (tmp_path / "work").exists()  # refused before anything was made


def _run(
    precision: str, seed: int, losses: dict[int, float], repeat: int = 1, val: float | None = None
) -> dict:
    return {"precision": precision, "seed": seed, "repeat": repeat, "rc": 0, "losses": losses,
            "val": val, "speed": (100.0, 1.0)}  # fmt: skip


def _rows(m, results: list[dict]) -> list[list[str]]:
    return [[c.strip() for c in line.split("|")] for line in m.table(results, 0.01)]


def test_table_compares_each_run_with_the_first_bf16_run_of_its_seed(m) -> None:
    its = range(10, 70, 10)
    results = [
        _run("bf16", 1, {i: 4.0 for i in its}),
        _run("fp8", 1, {i: 4.0 if i < 60 else 4.02 for i in its}),  # +0.5 % at the last
        _run("bf16", 1, {i: 3.8 for i in its}, repeat=2),  # the same seed again: drift
        _run("bf16", 2, {i: 4.4 for i in its}),
        _run("fp8", 2, {i: 4.0 for i in its}),
        {"precision": "fp8", "seed": 3, "repeat": 1, "rc": 1, "losses": {}, "speed": None,
         "error": "OOM"},
    ]  # fmt: skip
    rows = _rows(m, results)
    assert rows[0][:5] == ["precision", "seed", "run", "last iter", "val loss"]
    assert rows[1][9:] == ["", "", "", ""] and rows[4][9:] == ["", "", "", ""]  # the baselines
    assert rows[2][9:11] == ["bf16 seed 1 run 1", ""]  # no validation loss: judged on training
    assert rows[2][11:] == ["+0.50 % (within 1 %)", "+0.10 %"]  # last interval, mean of five
    assert rows[3][:3] == ["bf16", "1", "2"]
    assert rows[3][11] == "-5.00 % (outside 1 %)"
    assert rows[5][11] == "-9.09 % (outside 1 %)"
    assert rows[6] == ["fp8", "3", "1 (exit 1)", "failed: OOM"]


def test_the_verdict_is_on_the_validation_loss_where_both_runs_have_one(m) -> None:
    its = range(10, 40, 10)
    results = [
        _run("bf16", 1, {i: 4.0 for i in its}, val=3.0),
        _run("fp8", 1, {i: 4.2 for i in its}, val=3.015),  # training +5 %, validation +0.5 %
        _run("fp8", 1, {i: 4.0 for i in its}, repeat=2),  # its validation pass missing
    ]
    rows = _rows(m, results)
    assert rows[1][3:5] == ["30", "3.0000"]
    assert rows[2][4] == "3.0150"
    assert rows[2][10:13] == ["+0.50 % (within 1 %)", "+5.00 %", "+5.00 %"]
    assert rows[3][4] == "" and rows[3][10:12] == ["", "+0.00 % (within 1 %)"]


def test_a_run_cut_short_is_compared_where_it_stopped(m) -> None:
    base = _run("bf16", 1, {i: 5.0 - i / 100 for i in range(10, 110, 10)})  # 4.0 at 100
    cut = _run("fp8", 1, {i: 5.0 - i / 100 for i in range(10, 80, 10)})  # stopped after 70
    cut["rc"] = "timeout"
    rows = _rows(m, [base, cut])
    assert rows[2][:4] == ["fp8", "1", "1 (exit timeout)", "70"]
    assert rows[2][9:12] == ["bf16 seed 1 run 1 at 70", "", "+0.00 % (within 1 %)"]


def test_the_learning_rate_replaces_only_the_configs_lr(m, tmp_path: Path) -> None:
    config = tmp_path / "c.yml"
    config.write_text('{"optimizer": {"type": "Adam", "params": {"lr": 0.0004, "eps": 1.0e-8}}}')
    assert m.optimizer_with_lr(config, 1e-4) == {
        "type": "Adam",
        "params": {"lr": 1e-4, "eps": 1e-8},
    }


def test_bad_lr_and_validation_options_name_the_option(
    m, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        m.main(["--lr", "fast", "--work", str(tmp_path / "w")])
    assert "--lr: a number or 'config', got 'fast'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        m.main(["--val-percent", "100", "--work", str(tmp_path / "w")])
    assert "--val-percent between 1 and 99" in capsys.readouterr().err
    assert not (tmp_path / "w").exists()


@pytest.mark.slow
def test_fp8_loss_end_to_end_on_a_tiny_model(tmp_path: Path) -> None:
    pytest.importorskip("torchao.float8")
    config = tmp_path / "tiny.yml"
    config.write_text(json.dumps(TINY))
    work = tmp_path / "work"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["CUDA_VISIBLE_DEVICES"] = ""
    cmd = [sys.executable, str(ROOT / "benchmarks" / "fp8_loss.py"), "--config", str(config),
           "--corpus", str(_corpus(tmp_path / "c")), "--work", str(work), "--iters", "4",
           "--log-interval", "2", "--micro-batch", "2", "--timeout", "300",
           "--precisions", "bf16,fp8,bf16"]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("precision |"))
    rows = [[c.strip() for c in line.split("|")] for line in lines[start + 1 :]]
    assert [r[:4] for r in rows] == [
        ["bf16", "1234", "1", "4"],
        ["fp8", "1234", "1", "4"],
        ["bf16", "1234", "2", "4"],  # bf16 named twice: its second run, against its first
    ]
    assert rows[1][9] == rows[2][9] == "bf16 seed 1234 run 1"
    assert (work / "train_bf16_1234_run2.log").exists()
    bf16, fp8 = float(rows[0][4]), float(rows[1][4])  # the validation losses after step 4
    assert abs(fp8 / bf16 - 1) < 0.05  # a tiny model's fp8 stays close to bf16 over 4 steps
    assert "within" in rows[1][10] or "outside" in rows[1][10]
    assert "fp8: torchao float8 (tensorwise)" in (work / "train_fp8_1234.log").read_text()
    assert (work / "corpus_text_document.bin").stat().st_size > 0
