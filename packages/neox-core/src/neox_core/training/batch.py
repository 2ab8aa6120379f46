"""Turn dataset samples (`text`, optional `label`, seq_length+1 each) into model inputs.

As GPT-NeoX's `_get_batch`: inputs are `text[:, :-1]`, targets the next token; a target is
trained on only where it is >= 0 (labels of -100, padding of -100). With a label dataset
the targets come from `label` instead of `text`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class Batch:
    tokens: torch.Tensor  # [B, S] int64 inputs
    labels: torch.Tensor  # [B, S] int64 targets (masked positions hold 0)
    loss_mask: torch.Tensor  # [B, S] float32, 1 where the target is trained on


def make_batch(sample: dict[str, torch.Tensor]) -> Batch:
    text = sample["text"].long()
    target_source = sample["label"].long() if "label" in sample else text
    targets = target_source[:, 1:]
    mask = targets >= 0
    return Batch(
        tokens=text[:, :-1].clamp(min=0).contiguous(),
        labels=torch.where(mask, targets, torch.zeros_like(targets)).contiguous(),
        loss_mask=mask.float().contiguous(),
    )


def masked_lm_loss(logits: torch.Tensor, batch: Batch) -> torch.Tensor:
    """Mean cross entropy over trained positions, in fp32 (GPT-NeoX's `cross_entropy`).

    A micro-batch with no trained position gives 0, not 0/0.
    """
    vocab = logits.shape[-1]
    losses = F.cross_entropy(
        logits.float().reshape(-1, vocab), batch.labels.reshape(-1), reduction="none"
    )
    mask = batch.loss_mask.reshape(-1)
    return (losses * mask).sum() / mask.sum().clamp(min=1.0)
