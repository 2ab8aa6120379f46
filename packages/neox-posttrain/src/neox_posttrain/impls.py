"""The `neox.train_impl` plug-ins: SFT (with z-loss), DPO, KTO and reward modelling.

neox-core's loop calls `build_model`, `build_datasets`, `checkpoint_module`, `prepare` and
`loss` (see `neox_core.training.train_impl.TrainImpl`); everything else (precision,
optimizer, schedule, checkpoints, logging) is the pre-training loop's. Metrics carry TRL's
names; the loss itself is what the log line's `lm_loss` field shows, as in GPT-NeoX.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from neox_core.config import NeoxConfig
from neox_posttrain import losses
from neox_posttrain.batches import (
    SequenceBatch,
    last_trained_position,
    pair_batch,
    sequence_batch,
)
from neox_posttrain.data import build_posttrain_datasets
from neox_posttrain.reference import reference_model

Forward = Callable[[torch.nn.Module, torch.Tensor], torch.Tensor]


class _Base:
    name = "base"

    def __init__(self, cfg: NeoxConfig) -> None:
        self.cfg = cfg
        self.pt = cfg.posttrain

    def build_model(self, cfg: NeoxConfig, seed: int) -> torch.nn.Module:
        from neox_core.models import build_model

        return build_model(cfg.model, seed=seed, dtype="fp32")

    def build_datasets(self, cfg: NeoxConfig, **kwargs: Any):
        return build_posttrain_datasets(cfg, **kwargs)

    def checkpoint_module(self, model: torch.nn.Module, finetune: bool) -> torch.nn.Module:
        return model

    def prepare(self, model: torch.nn.Module, cfg: NeoxConfig, device, log) -> None:
        pass


class SFT(_Base):
    """Next-token loss on trained (assistant) tokens plus PaLM's z-loss (`z_loss`)."""

    name = "sft"

    def build_datasets(self, cfg: NeoxConfig, **kwargs: Any):
        """Pre-training's datasets (packing, splits, labels) exactly as `normal` reads them."""
        from neox_core.data import build_datasets

        return build_datasets(cfg.data, **kwargs)

    def loss(self, model, sample, forward: Forward):
        b = sequence_batch(sample)
        loss, z = losses.sft_loss(forward(model, b.tokens), b.targets, b.mask, self.pt.z_loss)
        return loss, {"z_loss": float(z)}


class _WithReference(_Base):
    fp32 = True
    needs_reference = True

    def __init__(self, cfg: NeoxConfig) -> None:
        super().__init__(cfg)
        self.reference: torch.nn.Module | None = None

    def prepare(self, model: torch.nn.Module, cfg: NeoxConfig, device, log) -> None:
        if self.needs_reference and not self.pt.precompute_model_name:
            rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
            self.reference = reference_model(model, cfg, log, rank)

    def reference_logps(self, b: SequenceBatch, forward: Forward) -> torch.Tensor:
        """Per-sequence reference log-probs: precomputed beside the data, or the frozen copy."""
        if b.ref_logps is not None:
            return (b.ref_logps * b.mask).sum(-1)
        if self.reference is None:
            raise RuntimeError("no reference model: prepare() was not called")
        with torch.no_grad():
            logits = forward(self.reference, b.tokens)
            return losses.sequence_logps(logits, b.targets, b.mask, self.fp32)


class DPO(_WithReference):
    """Sigmoid DPO on chosen/rejected pairs (`dpo_beta`, `dpo_reference_free`, `dpo_fp32`)."""

    name = "dpo"

    def __init__(self, cfg: NeoxConfig) -> None:
        super().__init__(cfg)
        self.fp32 = cfg.posttrain.dpo_fp32
        self.needs_reference = not cfg.posttrain.dpo_reference_free

    def loss(self, model, sample, forward: Forward):
        b = pair_batch(sample)
        logps = losses.sequence_logps(forward(model, b.tokens), b.targets, b.mask, self.fp32)
        chosen, rejected = logps.chunk(2)
        ref_c = ref_r = None
        if self.needs_reference:
            ref_c, ref_r = self.reference_logps(b, forward).chunk(2)
        out = losses.dpo_loss(chosen, rejected, ref_c, ref_r, self.pt.dpo_beta)
        return out.losses.mean(), dpo_metrics(out, chosen, rejected)


def dpo_metrics(
    out: losses.PreferenceOutput, chosen: torch.Tensor, rejected: torch.Tensor
) -> dict[str, float]:
    """TRL's DPO metric names and definitions (means over the micro-batch's pairs)."""
    c, r = out.chosen_rewards, out.rejected_rewards
    return {
        "rewards/chosen": float(c.mean()),
        "rewards/rejected": float(r.mean()),
        "rewards/accuracies": float((c > r).float().mean()),
        "rewards/margins": float((c - r).mean()),
        "logps/chosen": float(chosen.detach().mean()),
        "logps/rejected": float(rejected.detach().mean()),
    }


class KTO(_WithReference):
    """KTO on desirable/undesirable examples (`kto_beta`, `kto_*_weight`, `kto_fp32`).

    The KL reference point of each half of the micro-batch is estimated from the other half
    (GPT-NeoX's split; completions unrelated to the example, as TRL's mismatched KL batch),
    with TRL's estimator: the detached mean policy/reference log-ratio, clamped at 0.
    """

    name = "kto"

    def __init__(self, cfg: NeoxConfig) -> None:
        super().__init__(cfg)
        self.fp32 = cfg.posttrain.kto_fp32

    def loss(self, model, sample, forward: Forward):
        b = sequence_batch(sample)
        if "reward" not in sample:
            raise ValueError("KTO samples need a reward dataset (train_reward_data_paths)")
        reward = sample["reward"].float().sum(-1)
        if bool((reward == 0).any()):
            raise ValueError("a KTO sample has reward 0: neither desirable nor undesirable")
        if b.tokens.shape[0] < 2:
            raise ValueError("KTO needs at least 2 examples per micro-batch (KL estimate)")
        policy = losses.sequence_logps(forward(model, b.tokens), b.targets, b.mask, self.fp32)
        ref = self.reference_logps(b, forward)
        out = kto_halves(policy, ref, reward > 0, self.pt)
        return out.losses.mean(), kto_metrics(out, policy, reward > 0)


def kto_halves(
    policy: torch.Tensor, ref: torch.Tensor, desirable: torch.Tensor, pt: Any
) -> losses.KTOOutput:
    """KTO per example where each half's KL point comes from the other half."""
    h = policy.shape[0] // 2
    halves = [slice(0, h), slice(h, None)]
    kls = [losses.kto_kl_estimate(policy[s], ref[s]) for s in halves]
    parts = [
        losses.kto_loss(
            policy[s],
            ref[s],
            desirable[s],
            kls[1 - i],
            pt.kto_beta,
            pt.kto_desirable_weight,
            pt.kto_undesirable_weight,
        )
        for i, s in enumerate(halves)
    ]
    return losses.KTOOutput(
        torch.cat([p.losses for p in parts]),
        torch.cat([p.rewards for p in parts]),
        torch.stack(kls).mean(),
    )


def kto_metrics(
    out: losses.KTOOutput, policy: torch.Tensor, desirable: torch.Tensor
) -> dict[str, float]:
    """TRL's KTO metric names (present only when the micro-batch has that kind)."""
    m: dict[str, float] = {"kl": float(out.kl)}
    if bool(desirable.any()):
        m["rewards/chosen"] = float(out.rewards[desirable].mean())
        m["logps/chosen"] = float(policy.detach()[desirable].mean())
    if bool((~desirable).any()):
        m["rewards/rejected"] = float(out.rewards[~desirable].mean())
        m["logps/rejected"] = float(policy.detach()[~desirable].mean())
    if "rewards/chosen" in m and "rewards/rejected" in m:
        m["rewards/margins"] = m["rewards/chosen"] - m["rewards/rejected"]
    return m


class RewardModelling(_Base):
    """Bradley–Terry on a scalar head read at the last trained position (`z_loss`)."""

    name = "rm"

    def build_model(self, cfg: NeoxConfig, seed: int) -> torch.nn.Module:
        from neox_posttrain.reward_model import build_reward_model

        return build_reward_model(cfg.model, seed)

    def checkpoint_module(self, model: torch.nn.Module, finetune: bool) -> torch.nn.Module:
        from neox_posttrain.reward_model import LanguageModelPart

        return LanguageModelPart(model) if finetune else model  # type: ignore[arg-type]

    def loss(self, model, sample, forward: Forward):
        b = pair_batch(sample)
        scores = forward(model, b.tokens).float()
        at = last_trained_position(b.mask)
        picked = scores.gather(-1, at.unsqueeze(-1)).squeeze(-1)
        chosen, rejected = picked.chunk(2)
        loss = losses.reward_loss(chosen, rejected, self.pt.z_loss)
        d = (chosen - rejected).detach()
        return loss, {
            "accuracy": float((d > 0).float().mean()),
            "margin": float(d.mean()),
            "rewards/chosen": float(chosen.detach().mean()),
            "rewards/rejected": float(rejected.detach().mean()),
            "mean_reward": float(picked.detach().mean()),
        }


# entry points (pyproject: [project.entry-points."neox.train_impl"])
def sft(cfg: NeoxConfig) -> SFT:
    return SFT(cfg)


def dpo(cfg: NeoxConfig) -> DPO:
    return DPO(cfg)


def kto(cfg: NeoxConfig) -> KTO:
    return KTO(cfg)


def rm(cfg: NeoxConfig) -> RewardModelling:
    return RewardModelling(cfg)
