"""The frozen reference model of DPO and KTO, and where it lives across restarts.

The reference is the policy as it was when post-training started (the fine-tuned-from
checkpoint). On that first start it is copied in memory and, when the run saves checkpoints,
written once to `<save>/reference/` (a neox checkpoint, atomic like every save). A resumed
run (`load` without `finetune`) reads it back from `<load>/reference/`, so the loss after a
restart is the loss the uninterrupted run would have computed.
"""

from __future__ import annotations

import copy
import sys
from collections.abc import Callable
from pathlib import Path

import torch

from neox_core.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from neox_core.config import NeoxConfig, config_to_dict

REFERENCE_DIR = "reference"


def _frozen(model: torch.nn.Module) -> torch.nn.Module:
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def reference_model(
    policy: torch.nn.Module, cfg: NeoxConfig, log: Callable[[str], None], rank: int = 0
) -> torch.nn.Module:
    """A frozen copy of the reference weights, on the policy's device."""
    ref = copy.deepcopy(policy)
    ck = cfg.checkpoint
    resumed = bool(ck.load) and not ck.finetune
    stored = Path(ck.load) / REFERENCE_DIR if ck.load else None
    if resumed and stored is not None and (stored / "latest").is_file():
        load_checkpoint(stored, model=ref, weights_only=True)
        log(f" > reference model: loaded from {stored}")
    elif resumed and any(Path(ck.load).glob("global_step*")):
        print(
            f"neox-train: warning: {ck.load} has no {REFERENCE_DIR}/ (a run saved without one); "
            "the reference model is the resumed policy, not the one the run started from",
            file=sys.stderr,
            flush=True,
        )
    if ck.save and rank == 0:
        target = Path(ck.save) / REFERENCE_DIR
        # a fresh start (re)writes it; a resumed run keeps what is there, or carries it over
        if not resumed or not (target / "latest").is_file():
            save_checkpoint(target, 0, model=ref, config=config_to_dict(cfg), save_rng=False)
            log(f" > reference model: saved to {target}")
    return _frozen(ref)


def load_reference_checkpoint(path: str | Path, model: torch.nn.Module) -> torch.nn.Module:
    """Weights of a saved reference (`<save>/reference`) or any checkpoint, frozen."""
    try:
        load_checkpoint(path, model=model, weights_only=True)
    except CheckpointError as e:
        raise CheckpointError(f"reference model: {e}") from e
    return _frozen(model)
