"""Multi-rank checkpoints: exact resume, resume at another TP/DP/ZeRO layout, kill -9 mid-save.

Each test launches `workers/ckpt_resume.py` under torchrun (gloo, CPU): a tiny LLaMA-shaped
model (grouped-query attention, SwiGLU, untied head) with TP by `apply_tensor_parallel` and
ZeRO 3 by FSDP2 `fully_shard`, AdamW, a fixed global batch per step that every layout splits
over its DP ranks, and `Checkpointer` for saving and loading.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

STEPS = 4  # saved after step 2, resumed for steps 3 and 4


def _losses(result: dict) -> dict[int, float]:
    return {int(k): v for k, v in result["losses"].items()}


def _run(torchrun, workers: Path, nproc: int, *args: str):
    run = torchrun(workers / "ckpt_resume.py", nproc, *args, timeout=600)
    return run


def test_resume_exact_at_tp2_dp2_and_across_tp_and_zero(torchrun, workers, tmp_path: Path) -> None:
    """TP 2 x DP 2 (ZeRO 3) and TP 1 x DP 4 (ZeRO 3), each saved half-way and resumed at both.

    Same layout: the losses after the resume are the uninterrupted run's, bit for bit. Other
    layout (weights and AdamW moments resharded on load): within 1e-5 relative.
    """
    out = tmp_path / "result.json"
    run = _run(
        torchrun, workers, 4, "--scenario", "resume", "--layouts", "2x3,1x3",
        "--steps", str(STEPS), "--save", str(tmp_path / "ckpt"), "--out", str(out),
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-4000:]
    r = json.loads(out.read_text())
    for saved in ("tp2z3", "tp1z3"):
        full = _losses(r[f"full_{saved}"])
        assert len(full) == STEPS and all(math.isfinite(v) for v in full.values())
        for loaded in ("tp2z3", "tp1z3"):
            if saved == loaded == "tp1z3":
                continue  # the worker shows same-layout exactness on the first layout only
            resumed = _losses(r[f"resume_{saved}_at_{loaded}"])
            assert sorted(resumed) == [3, 4]
            for step, loss in resumed.items():
                if loaded == saved:
                    assert loss == full[step], (saved, loaded, step, loss, full[step])
                else:
                    assert abs(loss - full[step]) <= 1e-5 * abs(full[step]), (
                        saved, loaded, step, loss, full[step],
                    )  # fmt: skip
        assert r[f"full_{saved}"]["save_seconds"] and r[f"resume_{saved}_at_tp2z3"]["load_seconds"]
    assert "saved checkpoint" in run.stdout and "in " in run.stdout
    assert "(saved at TP 2 x DP 2, loaded at TP 1 x DP 4)" in run.stdout
    assert "(saved at TP 1 x DP 4, loaded at TP 2 x DP 2)" in run.stdout
    # every rank wrote its own optimizer chunk; dp-rank 0 of each TP group the weights
    step = tmp_path / "ckpt" / "tp2z3" / "global_step2"
    names = sorted(p.name for p in step.glob("*.safetensors"))
    assert names == [
        "model_tp00_pp00.safetensors",
        "model_tp01_pp00.safetensors",
        *[f"optimizer_tp{t:02d}_pp00_dp{d:03d}.safetensors" for t in (0, 1) for d in (0, 1)],
        *[f"rng_rank{r:05d}.safetensors" for r in range(4)],
    ]
    manifest = json.loads((step / "manifest.json").read_text())
    assert manifest["format_version"] == 3
    assert manifest["parallel"]["tensor_parallel_size"] == 2
    assert manifest["parallel"]["data_parallel_size"] == 2
    from neox_ckpt.cli import main as neox_ckpt

    assert neox_ckpt(["verify", str(step)]) == 0  # TP 2 x DP 2 chunks cover every moment

    # the memory estimate's per-rank parameter elements are rank 0's real local tensors
    import sys

    sys.path.insert(0, str(workers))
    from _common import VARIANTS

    from neox_core.memory_estimate import parameter_elements

    cfg = VARIANTS["llama-gqa"]
    assert r["full_tp2z3"]["local_param_elements"] == parameter_elements(cfg, 2, 2)[0]
    assert r["full_tp1z3"]["local_param_elements"] == parameter_elements(cfg, 1, 4)[0]


def test_kill_9_of_one_rank_mid_save_leaves_latest_loadable(
    torchrun, workers, tmp_path: Path
) -> None:
    """Rank 1 of a TP 2 run is SIGKILLed after writing its first file of the step-4 save:
    `latest` still names step 2, which loads, and the resumed run repeats steps 3 and 4."""
    ckpt, killed_out, resumed_out = tmp_path / "ckpt", tmp_path / "k.json", tmp_path / "r.json"
    killed = _run(
        torchrun, workers, 2, "--tp", "2", "--zero", "0", "--steps", str(STEPS),
        "--save", str(ckpt), "--save-every", "2", "--out", str(killed_out),
        "--kill-rank", "1", "--kill-at-save", "2",
    )  # fmt: skip
    assert killed.returncode != 0
    assert (ckpt / "latest").read_text().strip() == "global_step2"
    assert not (ckpt / "global_step4").exists()
    assert list(ckpt.glob(".tmp-global_step4-*")), "the interrupted save's debris is left"
    from neox_ckpt.cli import main as neox_ckpt

    assert neox_ckpt(["verify", str(ckpt)]) == 0
    resumed = _run(
        torchrun, workers, 2, "--tp", "2", "--zero", "0", "--steps", str(STEPS),
        "--load", str(ckpt), "--out", str(resumed_out),
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    before = _losses(json.loads(killed_out.read_text()))
    after = _losses(json.loads(resumed_out.read_text()))
    assert sorted(after) == [3, 4]
    assert after[3] == before[3] and after[4] == before[4]
