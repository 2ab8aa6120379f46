"""Two data-parallel processes (torchrun, gloo on CPU) train like one with the same global
batch: same samples, losses equal up to float reduction order; rank 0 saves."""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from neox_core.config import load_config
from neox_core.training.run import main_train

VALID = re.compile(
    r"validation results at .+? \| lm_loss value: (\S+) \| lm_loss_ppl value: (\S+) \|"
)


# CPU and gloo even on a GPU machine (two ranks would share one GPU under NCCL)
_CPU_ENV = dict(os.environ, CUDA_VISIBLE_DEVICES="")


@pytest.mark.slow
def test_two_ranks_match_one_device(
    tiny_config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], losses_in
) -> None:
    no_dropout = tmp_path / "nodrop.yml"
    no_dropout.write_text('{"hidden-dropout": 0.0}')
    assert main_train(load_config([tiny_config, no_dropout], {"save": str(tmp_path / "one")})) == 0
    single = losses_in(capsys.readouterr().out)

    ddp = tmp_path / "ddp.yml"
    ddp.write_text('{"train_micro_batch_size_per_gpu": 1}')  # 2 ranks x 1 x 2 accumulation
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        "-m", "neox_core.cli",
        str(tiny_config), str(no_dropout), str(ddp),
    ]  # fmt: skip
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=_CPU_ENV)
    assert run.returncode == 0, run.stdout + run.stderr
    double = losses_in(run.stdout)
    assert sorted(double) == sorted(single) == list(range(1, 9))
    for i in single:
        assert float(double[i]) == pytest.approx(float(single[i]), rel=1e-5), i
    assert (tmp_path / "ckpt" / "latest").read_text().strip() == "global_step8"
    rng = sorted(p.name for p in (tmp_path / "ckpt" / "global_step8").glob("rng_rank*"))
    assert rng == [f"rng_rank0000{r}.{ext}" for r in (0, 1) for ext in ("json", "safetensors")]

    # resumed at 4 with two ranks (each restores its own rng_rank<R>): the same losses
    resume = tmp_path / "resume.yml"
    resume.write_text(
        f'{{"load": "{tmp_path / "ckpt"}", "iteration": 4, "save": "{tmp_path / "b"}"}}'
    )
    again = subprocess.run(
        [*cmd, str(resume)], capture_output=True, text=True, timeout=300, env=_CPU_ENV
    )
    assert again.returncode == 0, again.stdout + again.stderr
    resumed = losses_in(again.stdout)
    assert sorted(resumed) == [5, 6, 7, 8]
    assert resumed == {i: double[i] for i in resumed}
    # the ppl is exp of the loss averaged over ranks, not a mean of per-rank ppls
    evals = VALID.findall(run.stdout)
    assert len(evals) == 3, run.stdout
    for loss, ppl in evals:
        assert float(ppl) == pytest.approx(math.exp(float(loss)), rel=2e-6)
