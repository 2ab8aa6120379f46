"""Through the real `neox-train`: `attention_kernel: fa4` where FlashAttention-4 cannot run (an
fp32 run on CPU) stops at start-up with one line naming the config file, the key and why."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

NEOX_TRAIN = str(Path(sys.executable).parent / "neox-train")


@pytest.mark.slow  # a neox-train process (torch import, model build): 15-30 s here
def test_fa4_on_cpu_is_one_line_naming_the_file_and_exit_2(
    tiny_config: Path, tmp_path: Path
) -> None:
    fa4 = tmp_path / "fa4.yml"
    fa4.write_text('{\n  "attention_kernel": "fa4",\n}\n', encoding="utf-8")
    proc = subprocess.run(
        [NEOX_TRAIN, str(tiny_config), str(fa4)], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    errors = proc.stderr.strip().splitlines()
    assert len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr
    # the tiny config is fp32, the first reason found
    assert errors[0] == (
        f"neox-train: error: {fa4}:2: attention_kernel = 'fa4': "
        "FlashAttention-4 takes bf16/fp16, and the precision is fp32"
    )
    assert " > training ..." not in proc.stdout
