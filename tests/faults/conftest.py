"""Fault tests: a tiny corpus and config for the real `neox-train`, and a fork-server that
starts it cheaply (see zygote.py). Every test here is `slow` (`-m slow`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from neox_data.indexed_dataset import write_dataset

ZYGOTE = Path(__file__).parent / "zygote.py"

CONFIG = """\
{{
  "data-path": "{data}",
  "split": "100,0,0",
  "vocab_size": 96,
  "num-workers": 0,
  "num-layers": 2,
  "hidden-size": 64,
  "num-attention-heads": 4,
  "seq-length": 16,
  "max-position-embeddings": 16,
  "pos-emb": "rotary",
  "no-weight-tying": true,
  "optimizer": {{"type": "Adam", "params": {{"lr": 0.001}}}},
  "train_micro_batch_size_per_gpu": 2,
  "train-iters": {iters},
  "seed": 5,
  "eval-interval": 1000000,
  "eval-iters": 0,
  "log-interval": 1000000,
  "save": "{save}",
  "load": "{save}",
  "checkpoint-factor": 1,
  "keep_last_n_checkpoints": 3,
  {extra}
}}
"""


def write_run(root: Path, save: Path, iters: int = 1_000_000, extra: str = "") -> Path:
    """A corpus and a config that trains forever (or `iters` steps), saving every step into
    `save` and resuming from it."""
    root.mkdir(parents=True, exist_ok=True)
    data = root / "corpus_text_document"
    if not data.with_suffix(".bin").exists():
        rng = np.random.default_rng(0)
        docs = [rng.integers(0, 96, int(rng.integers(10, 60))).astype(np.uint16) for _ in range(60)]
        write_dataset(data, docs, np.uint16)
    cfg = root / f"run_{iters}.yml"
    cfg.write_text(CONFIG.format(data=data, save=save, iters=iters, extra=extra), encoding="utf-8")
    return cfg


class Zygote:
    def __init__(self) -> None:
        env = dict(os.environ, OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
        self.proc = subprocess.Popen(
            [sys.executable, str(ZYGOTE)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            text=True, env=env,
        )  # fmt: skip
        assert json.loads(self._line())["ready"]

    def _line(self) -> str:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line, "the fault-test fork-server died"
        return line

    def _ask(self, *words: object) -> dict:
        assert self.proc.stdin is not None
        self.proc.stdin.write(" ".join(map(str, words)) + "\n")
        self.proc.stdin.flush()
        return json.loads(self._line())

    def kill(self, seed: int, save: Path, *configs: Path, ranks: int = 1) -> dict:
        """Run neox-train, SIGKILL it at a random moment of a save (see zygote.py)."""
        return self._ask("kill", seed, ranks, save, *configs)

    def run(self, *configs: Path) -> dict:
        return self._ask("run", *configs)

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self.proc.wait(timeout=30)


@pytest.fixture(scope="session")
def zygote(tmp_path_factory: pytest.TempPathFactory):
    z = Zygote()
    warm = tmp_path_factory.mktemp("warm")
    assert z._ask("warm", write_run(warm, warm / "ckpt", iters=2))["rc"] == 0
    yield z
    z.close()
