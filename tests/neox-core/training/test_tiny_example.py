"""The README's main command: `neox-train examples/tiny/config.yml` trains, learns, saves.

Its loss trajectory is pinned to a golden file (torchtitan style) so a numerics change in
the model, data order or optimizer shows up; the tolerance absorbs CPU differences in
floating-point summation order, not behaviour changes.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from neox_core.config import load_config
from neox_core.training.run import main_train

ROOT = Path(__file__).resolve().parents[3]
TINY = ROOT / "examples" / "tiny"
GOLDEN = Path(__file__).parent / "golden" / "tiny_example_losses.txt"


def _golden() -> dict[int, float]:
    rows = [line.split() for line in GOLDEN.read_text().splitlines() if line[:1].isdigit()]
    return {int(i): float(v) for i, v in rows}


def test_committed_tokens_are_what_the_documented_command_produces(tmp_path: Path) -> None:
    # the command in examples/tiny/README.md, writing elsewhere
    subprocess.run(
        [
            sys.executable, "-m", "neox_data.cli", "tokenize",
            "--input", str(TINY / "corpus.jsonl"),
            "--output-prefix", str(tmp_path / "tiny"),
            "--tokenizer-type", "HFTokenizer",
            "--vocab-file", str(TINY / "tokenizer.json"),
            "--append-eod",
        ],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    for suffix in (".bin", ".idx"):
        made = (tmp_path / f"tiny_text_document{suffix}").read_bytes()
        assert made == (TINY / "data" / f"tiny_text_document{suffix}").read_bytes(), suffix


def test_tiny_example_learns_saves_and_follows_the_golden_losses(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    losses_in,
) -> None:
    monkeypatch.chdir(ROOT)  # data paths in the config are relative to the repository root
    save = tmp_path / "checkpoints"
    cfg = load_config([TINY / "config.yml"], {"save": str(save)})
    assert main_train(cfg) == 0
    out = capsys.readouterr().out
    assert f"saving checkpoints to {save}" in out
    losses = {i: float(v) for i, v in losses_in(out).items()}
    golden = _golden()
    assert sorted(losses) == sorted(golden)
    for i, expected in golden.items():
        assert losses[i] == pytest.approx(expected, rel=0.02), i
    assert losses[200] < 0.9 * losses[10]
    assert (save / "latest").read_text().strip() == "global_step200"
    assert (save / "global_step200" / "configs" / "config.yml").is_file()
    assert sorted(p.name for p in save.iterdir()) == ["global_step100", "global_step200", "latest"]
