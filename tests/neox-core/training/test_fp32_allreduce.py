"""`fp32_allreduce: true` (Pythia-1B, Llemma, the post-training configs) with bf16: neox reduces
data-parallel gradients in fp32, because they are the gradients of its fp32 master weights.

Two gloo ranks on CPU: the gradients after DistributedDataParallel's all-reduce (as
`neox-train` wraps the model) equal the fp32 mean of each rank's own gradients to fp32
rounding, and are clearly closer to it than a bf16 reduction would be.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

WORKER = Path(__file__).with_name("fp32_allreduce_worker.py")

CONFIG = """{
  "num-layers": 2, "hidden-size": 64, "num-attention-heads": 4, "seq-length": 32,
  "max-position-embeddings": 32, "pos-emb": "rotary", "vocab_size": 96,
  "precision": "bfloat16", "bf16": {"enabled": true}, "fp32_allreduce": true,
}"""


# CPU and gloo even on a GPU machine (two ranks would share one GPU under NCCL)
_CPU_ENV = dict(os.environ, CUDA_VISIBLE_DEVICES="")


@pytest.mark.slow
def test_bf16_run_reduces_gradients_in_fp32(tmp_path: Path) -> None:
    cfg = tmp_path / "bf16.yml"
    cfg.write_text(CONFIG)
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        str(WORKER), str(cfg), str(tmp_path),
    ]  # fmt: skip
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=_CPU_ENV)
    assert run.returncode == 0, run.stdout + run.stderr
    for rank in (0, 1):
        r = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert r["dtype"] == "torch.float32"
        assert r["err_vs_fp32"] < 1e-6, r
        assert r["bf16_vs_fp32"] > 100 * max(r["err_vs_fp32"], 1e-9), r
