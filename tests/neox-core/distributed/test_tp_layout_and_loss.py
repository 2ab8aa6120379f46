"""One-process checks of the TP layout mapping, the loss and the layout errors.

The layout is checked against neox-ckpt's `tp_split` (the writer of TP checkpoints): a TP
rank's local piece must be exactly the checkpoint's shard.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from neox_ckpt import tp_split
from neox_core.checkpoint.sharding import fused_tp_blocks
from neox_core.config.schema import ModelConfig
from neox_core.distributed.loss import lm_loss, vocab_parallel_cross_entropy
from neox_core.distributed.tensor_parallel import (
    TensorParallelError,
    check_tensor_parallel_layout,
)
from neox_core.distributed.tp_layout import (
    canonical_to_tp_global,
    tp_global_to_canonical,
    tp_local_shard,
    tp_param_layout,
)
from neox_core.training.batch import Batch, masked_lm_loss


def _llama(**kw) -> ModelConfig:
    fields = dict(
        num_layers=1, hidden_size=64, num_attention_heads=8, num_kv_heads=2,
        intermediate_size=96, padded_vocab_size=128, activation="swiglu", norm="rmsnorm",
        attention_bias=True, mlp_bias=True, tie_embeddings=False,
    )  # fmt: skip
    fields.update(kw)
    return ModelConfig(architecture="llama", **fields)


@pytest.mark.parametrize("tp", [1, 2, 4])
def test_local_shards_are_the_checkpoint_shards(tp: int) -> None:
    cfg = _llama()
    layout = tp_param_layout(cfg)
    assert layout["layers.0.attention.qkv.weight"] == (0, (64, 16, 16))
    assert layout["layers.0.mlp.fc_in.bias"] == (0, (96, 96))
    assert layout["layers.0.attention.out.weight"] == (1, None)
    assert layout["layers.0.input_norm.weight"] == (None, None)
    assert layout["embed.weight"] == (0, None) and layout["lm_head.weight"] == (0, None)
    g = torch.Generator().manual_seed(0)
    for name, (dim, blocks) in layout.items():
        full = torch.randn(_shape(cfg, name), generator=g)
        pieces = tp_split.split(full, dim, tp, blocks)
        glob = canonical_to_tp_global(full, dim, tp, blocks)
        for r in range(tp):
            local = tp_local_shard(full, dim, tp, r, blocks)
            assert torch.equal(local, pieces[r]), (name, r)
            if dim is not None:  # the DTensor's Shard(dim) chunk r of the global tensor
                assert torch.equal(glob.chunk(tp, dim=dim)[r], local), (name, r)
        assert torch.equal(tp_global_to_canonical(glob, dim, tp, blocks), full), name


def _shape(cfg: ModelConfig, name: str) -> tuple[int, ...]:
    from neox_core.models.decoder import CausalLM

    with torch.device("meta"):
        return tuple(dict(CausalLM(cfg).named_parameters())[name].shape)


def test_multi_head_qkv_needs_no_permutation() -> None:
    layout = tp_param_layout(_llama(num_kv_heads=8))
    assert layout["layers.0.attention.qkv.weight"] == (0, None)
    full = torch.randn(192, 64)
    assert canonical_to_tp_global(full, 0, 2, None) is full
    assert fused_tp_blocks(["a.attention.qkv.weight"], num_heads=8, num_kv_heads=8, head_dim=8,
                           intermediate_size=96, gated_mlp=True) == {}  # fmt: skip


def test_uneven_blocks_are_refused() -> None:
    with pytest.raises(ValueError, match="not divisible by TP size 4"):
        tp_local_shard(torch.zeros(70, 4), 0, 4, 0, (64, 3, 3))


def test_loss_matches_the_one_process_loss() -> None:
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 5, 11, generator=g, requires_grad=True)
    labels = torch.randint(0, 11, (2, 5), generator=g)
    mask = (torch.rand(2, 5, generator=g) > 0.3).float()
    ours = lm_loss(logits, labels, mask)
    reference = masked_lm_loss(logits, Batch(tokens=labels, labels=labels, loss_mask=mask))
    assert torch.equal(ours, reference)
    ignored = labels.clone()
    ignored[0, :2] = -100
    per_token = vocab_parallel_cross_entropy(logits, ignored)
    expected = F.cross_entropy(logits.reshape(-1, 11), ignored.reshape(-1), reduction="none")
    assert torch.equal(per_token, expected.view(2, 5))
    assert lm_loss(logits, labels, torch.zeros(2, 5)).item() == 0.0


@pytest.mark.parametrize(
    ("overrides", "tp", "message"),
    [
        (dict(num_attention_heads=8, num_kv_heads=8), 3, "num_attention_heads 8 is not divisible"),
        (dict(hidden_size=16, num_kv_heads=1), 4, "kv rows num_kv_heads x head_dim = 2"),
        (dict(num_attention_heads=16, num_kv_heads=6), 4, "num_kv_heads 6 must divide"),
        (dict(intermediate_size=90), 4, "intermediate_size 90"),
        (dict(padded_vocab_size=130), 4, "padded vocabulary 130"),
    ],
)
def test_layout_errors_name_the_keys(overrides: dict, tp: int, message: str) -> None:
    with pytest.raises(TensorParallelError, match=message):
        check_tensor_parallel_layout(_llama(**overrides), tp)


def test_layouts_that_split() -> None:
    for tp in (1, 2, 4, 8):
        check_tensor_parallel_layout(_llama(), tp)  # 8 > 2 kv heads: replicated
