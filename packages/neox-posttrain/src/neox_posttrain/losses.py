"""Post-training losses as functions of log-probabilities and scores, on plain tensors.

Each follows the formula TRL's trainers use (tests compare them with TRL's own trainers on
the same batches) and GPT-NeoX's `train_impl` names its keys after:

- DPO (sigmoid): -log σ(β·((π_c − ref_c) − (π_r − ref_r))), rewards β·(π − ref).
- KTO: desirable 1 − σ(β·(log-ratio − KL)), undesirable 1 − σ(β·(KL − log-ratio)), each
  weighted; KL is a detached, batch-level estimate clamped at 0.
- Reward model (Bradley–Terry): -log σ(r_c − r_r), plus GPT-NeoX's `z_loss`·(r_c² + r_r²).
- SFT z-loss (PaLM): `z_loss`·mean(logsumexp(logits)²) over trained tokens.

Log-probabilities of a sequence are sums over its trained (label >= 0) positions.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


def token_logps(logits: torch.Tensor, targets: torch.Tensor, fp32: bool = True) -> torch.Tensor:
    """log p(target) at every position: logits [B, S, V], targets [B, S] (ids >= 0)."""
    if fp32:
        logits = logits.float()
    logps = torch.log_softmax(logits, dim=-1)
    return torch.gather(logps, -1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)


def sequence_logps(
    logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor, fp32: bool = True
) -> torch.Tensor:
    """Sum of the target log-probabilities over the positions where `mask` is set: [B]."""
    per_token = token_logps(logits, targets, fp32)
    return (per_token * mask.to(per_token.dtype)).sum(-1)


@dataclass
class PreferenceOutput:
    losses: torch.Tensor  # [N] per example
    chosen_rewards: torch.Tensor  # [N] detached
    rejected_rewards: torch.Tensor  # [N] detached


def dpo_loss(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    ref_chosen: torch.Tensor | None,
    ref_rejected: torch.Tensor | None,
    beta: float,
) -> PreferenceOutput:
    """Per-pair sigmoid DPO loss; `ref_*` None means reference-free (a reference of 0)."""
    if ref_chosen is None or ref_rejected is None:
        ref_chosen = torch.zeros_like(policy_chosen)
        ref_rejected = torch.zeros_like(policy_rejected)
    chosen_ratio = policy_chosen - ref_chosen
    rejected_ratio = policy_rejected - ref_rejected
    losses = -F.logsigmoid(beta * (chosen_ratio - rejected_ratio))
    return PreferenceOutput(losses, beta * chosen_ratio.detach(), beta * rejected_ratio.detach())


@dataclass
class KTOOutput:
    losses: torch.Tensor  # [N] per example, weighted, in batch order
    rewards: torch.Tensor  # [N] β·log-ratio, detached
    kl: torch.Tensor  # [] the clamped KL estimate used


def kto_kl_estimate(policy_logps: torch.Tensor, ref_logps: torch.Tensor) -> torch.Tensor:
    """KTO's reference point: mean log-ratio over a sample of completions, clamped at 0."""
    if policy_logps.numel() == 0:
        return torch.zeros((), dtype=policy_logps.dtype, device=policy_logps.device)
    return (policy_logps - ref_logps).mean().detach().clamp(min=0)


def kto_loss(
    policy_logps: torch.Tensor,
    ref_logps: torch.Tensor,
    desirable: torch.Tensor,
    kl: torch.Tensor,
    beta: float,
    desirable_weight: float = 1.0,
    undesirable_weight: float = 1.0,
) -> KTOOutput:
    """Per-example KTO loss for a batch mixing desirable (True) and undesirable examples."""
    ratio = policy_logps - ref_logps
    kl = kl.detach()
    good = 1 - torch.sigmoid(beta * (ratio - kl))
    bad = 1 - torch.sigmoid(beta * (kl - ratio))
    losses = torch.where(desirable, desirable_weight * good, undesirable_weight * bad)
    return KTOOutput(losses, beta * ratio.detach(), kl)


def reward_loss(
    chosen_scores: torch.Tensor, rejected_scores: torch.Tensor, z_loss: float = 0.0
) -> torch.Tensor:
    """Bradley–Terry loss of a scalar reward head, mean over pairs; optional score z-loss."""
    loss = -F.logsigmoid(chosen_scores - rejected_scores).mean()
    if z_loss:
        loss = loss + (z_loss * (chosen_scores**2 + rejected_scores**2)).mean()
    return loss


def sft_loss(
    logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor, z_loss: float = 0.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean cross entropy over trained tokens [+ z-loss], the z-loss term alone)."""
    logits = logits.float()
    vocab = logits.shape[-1]
    flat_mask = mask.reshape(-1).float()
    ce = F.cross_entropy(
        logits.reshape(-1, vocab), targets.reshape(-1).clamp(min=0), reduction="none"
    )
    denom = flat_mask.sum().clamp(min=1.0)
    loss = (ce * flat_mask).sum() / denom
    z = torch.zeros((), device=logits.device)
    if z_loss:
        lse = torch.logsumexp(logits.reshape(-1, vocab), dim=-1)
        z = z_loss * (lse.square() * flat_mask).sum() / denom
        loss = loss + z
    return loss, z.detach()
