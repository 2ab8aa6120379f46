"""Checkpoints written by neox-core's own `save_checkpoint` (training runs) export to HF."""

from __future__ import annotations

import pytest
import torch

from neox_ckpt.cli import main


@pytest.mark.parametrize("arch", ["pythia", "llama_gqa"])
def test_training_checkpoint_exports_to_hf(arch, hf_dirs, ids, tmp_path) -> None:
    import transformers

    from neox_ckpt.neox_reader import NeoxCheckpoint
    from neox_core.checkpoint import save_checkpoint
    from neox_core.config import config_from_dict, config_to_dict
    from neox_core.models import build_model

    # take a real neox config from a conversion, then train-save a freshly initialised model
    assert (
        main(["hf-to-neox", "--hf-model", str(hf_dirs[arch]), "--output-dir", str(tmp_path / "c")])
        == 0
    )
    cfg = config_from_dict(NeoxCheckpoint(tmp_path / "c").config())
    model = build_model(cfg.model, seed=5).eval()
    optimizer = torch.optim.AdamW(model.parameters())
    save_checkpoint(
        tmp_path / "run", 40, model=model, optimizer=optimizer, config=config_to_dict(cfg)
    )
    out = tmp_path / "hf"
    assert main(["neox-to-hf", "--input-dir", str(tmp_path / "run"), "--output-dir", str(out)]) == 0
    hf = transformers.AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    with torch.no_grad():
        diff = (hf(ids).logits - model(ids)).abs().max().item()
    assert diff < 1e-5
    # and it reshards like any other (optimizer state is dropped: weights only)
    assert (
        main(["reshard", str(tmp_path / "run"), "--output-dir", str(tmp_path / "tp2"), "--tp", "2"])
        == 0
    )
    ck = NeoxCheckpoint(tmp_path / "tp2")
    assert ck.iteration == 40 and ck.tp == 2
    for name, t in model.state_dict().items():
        assert torch.equal(ck.read_full(name), t), name
