"""The `neox-kernels` CLI: info, self-check and bench."""

from __future__ import annotations

import json
import re

import pytest

from neox_kernels.cli import main


def test_info_reports_the_compiled_functions(capsys) -> None:
    assert main(["info"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["cplusplus"] >= 201703
    assert "build_sample_idx" in info["functions"]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_self_check_passes(capsys, seed) -> None:
    assert main(["self-check", "--seed", str(seed)]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^(\d+)/\1 checks passed$", out, re.M)
    assert "FAIL" not in out


def test_bench_prints_a_table(capsys) -> None:
    argv = ["bench", "--docs", "20000", "--epochs", "2", "--blend-samples", "50000"]
    assert main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["step", "seconds", "output", "MB"]
    assert [line.split()[0] for line in lines[1:]] == [
        "doc_idx",
        "sample_idx",
        "shuffle_idx",
        "blend",
    ]


def test_help_lists_the_subcommands(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for command in ("info", "self-check", "bench"):
        assert command in out


def test_info_says_what_each_fused_op_runs(capsys) -> None:
    assert main(["info"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert isinstance(info["cuda"]["compiled"], bool)
    if info["cuda"]["compiled"]:
        assert "90a" in info["cuda"]["cuda_architectures"].split(",")
    assert set(info["ops"]) >= {"neox::norm_fwd", "neox::linear_cross_entropy", "neox::rotary_"}
    assert set(info["ops"].values()) <= {"cuda", "reference"}
