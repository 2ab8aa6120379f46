"""Model inputs from post-training samples (seq_length + 1 tokens each), as GPT-NeoX shifts.

Inputs are `tokens[:, :-1]`; the target of position i is token i+1 (from the label dataset
when there is one) and is trained where it is >= 0. Pairs run as one batch, chosen rows first
(TRL's concatenated forward): `[pos; neg]`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class SequenceBatch:
    tokens: torch.Tensor  # [N, S] inputs
    targets: torch.Tensor  # [N, S] next tokens (0 where untrained)
    mask: torch.Tensor  # [N, S] bool, trained targets
    ref_logps: torch.Tensor | None  # [N, S] precomputed reference log-probs of the targets


def _one(sample: dict[str, torch.Tensor], key: str, label_key: str, ref_key: str) -> SequenceBatch:
    text = sample[key].long()
    source = sample[label_key].long() if label_key in sample else text
    targets = source[:, 1:]
    mask = targets >= 0
    ref = sample[ref_key].float()[:, :-1] if ref_key in sample else None
    return SequenceBatch(
        tokens=text[:, :-1].clamp(min=0).contiguous(),
        targets=torch.where(mask, targets, torch.zeros_like(targets)).contiguous(),
        mask=mask,
        ref_logps=ref,
    )


def sequence_batch(sample: dict[str, torch.Tensor]) -> SequenceBatch:
    """KTO / SFT samples: `text`, optional `label`, `ref`."""
    return _one(sample, "text", "label", "ref")


def pair_batch(sample: dict[str, torch.Tensor]) -> SequenceBatch:
    """Pairwise samples, chosen (`pos`) rows then rejected (`neg`) rows."""
    pos = _one(sample, "pos", "pos_label", "pos_ref")
    neg = _one(sample, "neg", "neg_label", "neg_ref")
    ref = None
    if pos.ref_logps is not None and neg.ref_logps is not None:
        ref = torch.cat([pos.ref_logps, neg.ref_logps])
    return SequenceBatch(
        torch.cat([pos.tokens, neg.tokens]),
        torch.cat([pos.targets, neg.targets]),
        torch.cat([pos.mask, neg.mask]),
        ref,
    )


def last_trained_position(mask: torch.Tensor) -> torch.Tensor:
    """Per row, the last position with a trained target: where a reward model is read.

    With GPT-NeoX's reward-model layout (tokens `..., eos, eos`, labels `..., -100, eos`)
    this is the first EOS, i.e. the score after the whole conversation and its EOS.
    """
    if not bool(mask.any(-1).all()):
        raise ValueError("a reward-model sample has no trained (label >= 0) position")
    s = mask.shape[-1]
    return s - 1 - torch.argmax(mask.flip(-1).to(torch.int8), dim=-1)
