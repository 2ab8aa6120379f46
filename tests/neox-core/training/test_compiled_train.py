"""neox-train with `compile: true` (forced on CPU) trains like the eager run, with inductor's
Python wrapper and with its C++ wrapper (`compile_cpp_wrapper`, the default on CUDA).

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
    for name, compile_, cpp in (("eager", "false", "false"), ("python", "true", "false"),
                                ("cpp", "true", "true")):  # fmt: skip
        torch._dynamo.reset()
        overrides = {**base, "compile": compile_, "compile_cpp_wrapper": cpp}
        try:
            assert main_train(load_config([tiny_config], overrides)) == 0
        finally:  # the C++ wrapper is a process-wide inductor setting (distributed/compile.py)
            torch._inductor.config.cpp_wrapper = False
        runs[name] = capsys.readouterr().out
    eager = losses_in(runs["eager"])
    assert sorted(eager) == [1, 2]
    for name in ("python", "cpp"):
        compiled = losses_in(runs[name])
        assert sorted(compiled) == [1, 2], name
        for i in eager:
            assert float(compiled[i]) == pytest.approx(float(eager[i]), rel=1e-4), (name, i)
        assert " > compile: first step" in runs[name]
    assert "torch.compile per layer, Python wrapper" in runs["python"]
    assert "torch.compile per layer, C++ wrapper" in runs["cpp"]
    assert " > compile:" not in runs["eager"]
