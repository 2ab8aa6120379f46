"""neox-train with `precision: fp8` trains like `precision: bf16`: finite losses that stay close.

On CPU (CI) torchao's float8 matmuls run through torch._scaled_mm's CPU kernel; the `gpu` test
trains a wider model on a float8-capable GPU (Ada/Hopper), compiled as neox-train's default.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from neox_core.config import load_config
from neox_core.training.run import main_train

pytest.importorskip("torchao.float8")


def _final_losses(tiny_config: Path, capsys, losses_in, overrides: dict) -> dict[str, float]:
    out: dict[str, float] = {}
    for precision in ("bf16", "fp8"):
        torch._dynamo.reset()
        assert main_train(load_config([tiny_config], {**overrides, "precision": precision})) == 0
        text = capsys.readouterr().out
        if precision == "fp8":
            assert " > fp8: torchao float8 (tensorwise) on 8 of 8 decoder-layer linears" in text
        losses = losses_in(text)
        assert losses, text[-2000:]
        out[precision] = float(losses[max(losses)])
    return out


@pytest.mark.slow
def test_fp8_trains_close_to_bf16_on_cpu(
    tiny_config: Path, capsys: pytest.CaptureFixture[str], losses_in
) -> None:
    base = {"train-iters": 8, "hidden-dropout": 0.0, "eval-iters": 0, "save": None}
    loss = _final_losses(tiny_config, capsys, losses_in, {**base, "compile": "false"})
    assert math.isfinite(loss["fp8"])
    assert loss["fp8"] == pytest.approx(loss["bf16"], rel=0.05), loss


@pytest.mark.gpu
def test_fp8_trains_close_to_bf16_on_gpu(
    tiny_config: Path, capsys: pytest.CaptureFixture[str], losses_in
) -> None:
    major, minor = torch.cuda.get_device_capability()
    if (major, minor) < (8, 9):
        pytest.skip("float8 needs compute capability 8.9+ (Ada, Hopper)")
    base = {
        "train-iters": 40,
        "hidden-size": 256,
        "num-attention-heads": 4,
        "seq-length": 32,
        "train_micro_batch_size_per_gpu": 16,
        "hidden-dropout": 0.0,
        "eval-iters": 0,
        "save": None,
    }
    loss = _final_losses(tiny_config, capsys, losses_in, base)
    assert math.isfinite(loss["fp8"]) and loss["bf16"] < math.log(96) - 0.5, loss  # it learned
    assert loss["fp8"] == pytest.approx(loss["bf16"], rel=0.05), loss
