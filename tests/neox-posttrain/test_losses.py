"""SFT with z-loss and the loss functions' edge cases, on plain tensors."""

from __future__ import annotations

import torch

from neox_core.config import NeoxConfig
from neox_core.config.schema import PostTrainConfig
from neox_core.training.batch import make_batch, masked_lm_loss
from neox_posttrain.batches import last_trained_position
from neox_posttrain.impls import SFT
from neox_posttrain.losses import dpo_loss, kto_kl_estimate, kto_loss, reward_loss


def config(**posttrain) -> NeoxConfig:
    return NeoxConfig(posttrain=PostTrainConfig(**posttrain))


def _sample() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    text = torch.randint(0, 50, (3, 9), generator=g)
    label = text.clone()
    label[:, :4] = -100
    return {"text": text, "label": label}


def test_sft_without_z_loss_is_neox_cores_lm_loss() -> None:
    sample = _sample()
    logits = torch.randn(3, 8, 64, generator=torch.Generator().manual_seed(1))
    loss, metrics = SFT(config(z_loss=0.0)).loss(None, sample, lambda m, t: logits)
    assert torch.allclose(loss, masked_lm_loss(logits, make_batch(sample)))
    assert metrics == {"z_loss": 0.0}


def test_sft_z_loss_adds_palm_z_loss_on_trained_tokens() -> None:
    sample = _sample()
    logits = torch.randn(3, 8, 64, generator=torch.Generator().manual_seed(1))
    loss, metrics = SFT(config(z_loss=1e-3)).loss(None, sample, lambda m, t: logits)
    b = make_batch(sample)
    lse = torch.logsumexp(logits, -1)
    z = 1e-3 * (lse.square() * b.loss_mask).sum() / b.loss_mask.sum()
    assert torch.allclose(loss, masked_lm_loss(logits, b) + z)
    assert abs(metrics["z_loss"] - z.item()) < 1e-7


def test_dpo_at_equal_policy_and_reference_is_log2() -> None:
    x = torch.tensor([-3.0, -7.0])
    out = dpo_loss(x, x - 1, x, x - 1, beta=0.3)
    assert torch.allclose(out.losses, torch.full((2,), 0.6931472))
    assert torch.equal(out.chosen_rewards, torch.zeros(2))


def test_kto_kl_is_clamped_and_detached() -> None:
    p = torch.tensor([-1.0, -2.0], requires_grad=True)
    kl = kto_kl_estimate(p, torch.tensor([0.0, 0.0]))
    assert kl.item() == 0.0 and not kl.requires_grad
    out = kto_loss(p, torch.zeros(2), torch.tensor([True, False]), kl, beta=1.0)
    assert out.losses.shape == (2,)


def test_reward_loss_z_term_and_reward_position() -> None:
    c, r = torch.tensor([1.0, 2.0]), torch.tensor([0.0, 3.0])
    base = reward_loss(c, r)
    assert torch.allclose(reward_loss(c, r, z_loss=0.1), base + (0.1 * (c**2 + r**2)).mean())
    mask = torch.tensor([[0, 1, 1, 0], [1, 0, 0, 0]], dtype=torch.bool)
    assert last_trained_position(mask).tolist() == [2, 0]
