"""neox-train with `compile: true` (forced on CPU) trains like the eager run.

The compiled path is the default on GPUs; this catches a layer that stops compiling (or
compiles to different numerics) in CI. Kept minimal (2 layers, 2 steps): CPU compilation
takes most of a minute on CI's 2 cores.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from neox_core.config import load_config
from neox_core.training.run import main_train


@pytest.mark.slow
def test_compiled_neox_train_matches_eager(
    tiny_config: Path, capsys: pytest.CaptureFixture[str], losses_in
) -> None:
    # no dropout (compiled and eager draw their masks differently), no eval (another graph)
    base = {"train-iters": 2, "hidden-dropout": 0.0, "eval-iters": 0, "save": None}
    runs = {}
    for compile_ in ("false", "true"):
        torch._dynamo.reset()
        assert main_train(load_config([tiny_config], {**base, "compile": compile_})) == 0
        runs[compile_] = capsys.readouterr().out
    eager, compiled = (losses_in(runs[k]) for k in ("false", "true"))
    assert sorted(eager) == sorted(compiled) == [1, 2]
    for i in eager:
        assert float(compiled[i]) == pytest.approx(float(eager[i]), rel=1e-4), i
    assert " > compile: first step" in runs["true"] and "torch.compile per layer" in runs["true"]
    assert " > compile:" not in runs["false"]
