"""The reward model: neox's decoder with a scalar score head instead of next-token logits.

It is a `CausalLM` (same parameter names, so an SFT checkpoint loads into it and neox-ckpt
reads it) plus `score.weight` [1, hidden], GPT-NeoX's one-output head for `train_impl: rm`
and HF's `*ForSequenceClassification.score` with `num_labels: 1`. The LM head of an untied
model is kept (unused) so checkpoints keep every tensor they were loaded with.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from neox_core.config.schema import ModelConfig
from neox_core.models.decoder import CausalLM


class RewardModel(CausalLM):
    """forward(input_ids [B, S]) -> scores [B, S] (fp32): the reward after each prefix."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__(cfg)
        self.score = nn.Linear(cfg.hidden_size, 1, bias=False)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        x = self.embed(input_ids)
        for layer in self.layers:
            if self.checkpoint_activations and self.training and torch.is_grad_enabled():
                x = checkpoint(layer, x, use_reentrant=False)
            else:
                x = layer(x)
        return self.score(self.final_norm(x)).squeeze(-1).float()


class LanguageModelPart(nn.Module):
    """The same parameters as a `RewardModel` without `score`: what an LM checkpoint fills.

    Fine-tuning a reward model starts from an SFT (LM) checkpoint, which has no score head;
    loading through this view fills everything else and leaves the seeded head in place.
    """

    def __init__(self, model: RewardModel) -> None:
        super().__init__()
        self.embed = model.embed
        self.layers = model.layers
        self.final_norm = model.final_norm
        if model.lm_head is not None:
            self.lm_head = model.lm_head


def build_reward_model(cfg: ModelConfig, seed: int) -> RewardModel:
    """A `RewardModel` initialised as neox initialises a `CausalLM`; the head N(0, 1/(h+1))."""
    from neox_core.models.init import init_weights

    with torch.random.fork_rng(devices=[]):
        model = RewardModel(cfg)
    init_weights(model, cfg, seed)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        std = 1.0 / (cfg.hidden_size + 1) ** 0.5  # TRL/HF's value-head scale
        model.score.weight.copy_(torch.randn(model.score.weight.shape, generator=g) * std)
    return model
