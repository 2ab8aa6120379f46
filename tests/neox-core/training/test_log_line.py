"""The log line stays greppable by the patterns GPT-NeoX users' scripts rely on."""

from __future__ import annotations

import math
import re
import shutil
import subprocess

import pytest

from neox_core.training.log_line import (
    format_eval_line,
    format_train_line,
    parse_eval_lines,
    parse_train_lines,
)


def _line(**kw) -> str:
    args = dict(
        iteration=120,
        train_iters=4627,
        seconds_per_iteration=0.25,
        samples_per_iteration=64,
        tokens_per_iteration=64 * 2048,
        learning_rate=8e-5,
        flops_per_iteration=3.2e15,
        world_size=8,
        peak_flops=989e12,
        losses={"lm_loss": 2.345678},
        loss_scale=None,
        skipped_iterations=0,
        nan_iterations=1,
    )
    args.update(kw)
    return format_train_line(**args)


def _grep(pattern: str, text: str) -> list[str]:
    out = subprocess.run(
        ["grep", "-oP", pattern], input=text, capture_output=True, text=True, check=False
    )
    return out.stdout.split()


@pytest.mark.skipif(shutil.which("grep") is None, reason="needs grep")
def test_users_patterns_extract_step_total_and_loss() -> None:
    if subprocess.run(["grep", "-P", "x"], input=b"x", capture_output=True).returncode != 0:
        pytest.skip("grep without PCRE support")
    line = _line(loss_scale=4096.0)
    assert _grep(r"iteration\s+\K[0-9]+", line) == ["120"]
    assert _grep(r"iteration\s+[0-9]+/\s*\K[0-9]+", line) == ["4627"]
    assert _grep(r"lm_loss:\s*\K[0-9.E+-]+", line) == ["2.345678E+00"]
    assert (
        subprocess.run(
            ["grep", "iteration.*lm_loss"], input=line, capture_output=True, text=True
        ).stdout.strip()
        == line.strip()
    )


def test_fields_and_order_follow_gpt_neox() -> None:
    line = _line(loss_scale=4096.0)
    fields = [f.strip() for f in line.split("|") if f.strip()]
    assert fields[0] == "samples/sec: 256.000"
    assert fields[1] == "iteration      120/    4627"
    assert fields[2] == "elapsed time per iteration (ms): 250.0"
    assert fields[3] == "learning rate: 8.000E-05"
    assert fields[4] == "approx flops per GPU: 1.6PFLOPS"
    assert fields[5] == "tokens/sec per GPU: 65536.0"
    assert fields[6] == "TFLOPS per GPU: 1600.00"
    assert fields[7] == "MFU: 161.78%"
    assert fields[8:] == [
        "lm_loss: 2.345678E+00",
        "loss scale: 4096.0",
        "number of skipped iterations:   0",
        "number of nan iterations:   1",
    ]
    assert "loss scale" not in _line()
    crash = re.compile(r"traceback|exception|error:", re.IGNORECASE)
    assert not crash.search(line)


def test_train_lines_read_back_what_was_written() -> None:
    """Benchmarks read neox-train's logs through `parse_train_lines`: it must invert the format,
    plug-in metrics, non-finite losses and torchrun's rank prefix included."""
    first = _line(losses={"lm_loss": 2.345678, "dpo/margin": -1.5e-07}, loss_scale=4096.0)
    second = _line(iteration=130, losses={"lm_loss": float("nan")})
    log = "\n".join(["> compile: first step 17.9 s", first, "[rank0]: " + second, "done"])
    a, b = parse_train_lines(log)
    assert (a.iteration, a.train_iters, a.tokens_per_sec, a.mfu_percent) == (
        120,
        4627,
        65536.0,
        161.78,
    )
    assert a.losses == {"lm_loss": 2.345678, "dpo/margin": -1.5e-07}  # not the loss scale
    assert b.iteration == 130 and list(b.losses) == ["lm_loss"] and math.isnan(b.losses["lm_loss"])
    assert (
        list(parse_train_lines(format_eval_line("validation", "iteration 100", {"lm_loss": 1.5})))
        == []
    )


def test_eval_line_matches_gpt_neox() -> None:
    text = format_eval_line("validation", "iteration 100", {"lm_loss": 1.5, "lm_loss_ppl": 4.48})
    rule, body, rule2 = text.split("\n")
    assert (
        body == " validation results at iteration 100 | lm_loss value: 1.500000E+00 | "
        "lm_loss_ppl value: 4.480000E+00 | "
    )
    assert rule == rule2 == "-" * (len(body) + 1)


def test_eval_lines_read_back_what_was_written() -> None:
    """fp8_loss.py compares runs by their validation loss, read through `parse_eval_lines`."""
    log = "\n".join(
        [
            _line(losses={"lm_loss": 2.5}),
            format_eval_line("validation", "iteration 300", {"lm_loss": 3.25, "lm_loss_ppl": 25.8}),
            "[rank0]: "
            + format_eval_line("test", "the end of training", {"lm_loss": float("nan")}),
        ]
    )
    val, test = parse_eval_lines(log)
    assert (val.chart, val.at, val.iteration) == ("validation", "iteration 300", 300)
    assert val.values == {"lm_loss": 3.25, "lm_loss_ppl": 25.8}
    assert (test.chart, test.at, test.iteration) == ("test", "the end of training", None)
    assert math.isnan(test.values["lm_loss"])
