"""Every parameter of neox's real models gets a tensor-parallel split record, and fused
layouts (SwiGLU [up; gate], grouped-query [q; k; v]) record their blocks."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from neox_core.checkpoint import load_checkpoint, read_shard_infos, save_checkpoint
from neox_core.checkpoint.sharding import fused_tp_blocks, shard_infos
from neox_core.config import load_config
from neox_core.models import build_model

ROOT = Path(__file__).resolve().parents[3]


@pytest.mark.parametrize(
    "config", ["pythia/160M.yml", "pythia/1B.yml", "llama/7B.yml", "llama/gqa-1B.yml"]
)
def test_every_parameter_of_the_example_models_has_a_split_rule(config: str) -> None:
    cfg = load_config([ROOT / "examples" / "configs" / config], {"vocab_size": 32000}).model
    model = build_model(cfg, seed=None, device="meta")
    shapes = {n: tuple(p.shape) for n, p in model.named_parameters()}
    infos = shard_infos(shapes)  # raises on a parameter no rule covers
    for name, info in infos.items():
        if name.endswith("qkv.weight") or name.endswith("fc_in.weight"):
            assert info.tp_dim == 0, name
        if name.endswith(("attention.out.weight", "fc_out.weight")):
            assert info.tp_dim == 1, name
        if "norm" in name:
            assert info.tp_dim is None, name
    heads, kv = cfg.num_attention_heads, cfg.num_kv_heads or cfg.num_attention_heads
    blocks = fused_tp_blocks(
        shapes,
        num_heads=heads,
        num_kv_heads=kv,
        head_dim=cfg.hidden_size // heads,
        intermediate_size=cfg.intermediate_size or 0,
        gated_mlp=cfg.activation == "swiglu",
    )
    for name, sizes in blocks.items():
        assert sum(sizes) == shapes[name][0], name
    assert any("fc_in" in n for n in blocks) == (cfg.activation == "swiglu")
    assert any("qkv" in n for n in blocks) == (kv != heads)


def test_real_model_round_trip_with_blocks(tmp_path: Path) -> None:
    cfg_file = tmp_path / "m.yml"
    cfg_file.write_text(
        '{"num-layers": 2, "hidden-size": 32, "num-attention-heads": 4, "num-kv-heads": 2, '
        '"seq-length": 16, "vocab_size": 64, "norm": "rmsnorm", "activation": "swiglu", '
        '"pos-emb": "rotary", "use_bias_in_attn_linear": false, "use_bias_in_mlp": false, '
        '"use_bias_in_norms": false, "mlp_multiple_of": 16}'
    )
    mcfg = load_config([cfg_file]).model
    model = build_model(mcfg, seed=3)
    names = [n for n, _ in model.named_parameters()]
    blocks = fused_tp_blocks(
        names,
        num_heads=4,
        num_kv_heads=mcfg.num_kv_heads or 4,
        head_dim=8,
        intermediate_size=mcfg.intermediate_size or 0,
        gated_mlp=mcfg.activation == "swiglu",
    )
    path = save_checkpoint(tmp_path / "ck", 1, model=model, tp_blocks=blocks)
    infos = read_shard_infos(path / "model_tp00_pp00.safetensors")
    qkv = infos["layers.0.attention.qkv.weight"]
    if mcfg.num_kv_heads != mcfg.num_attention_heads:
        assert qkv.tp_blocks == (32, 16, 16)
    if mcfg.activation == "swiglu":
        i = mcfg.intermediate_size
        assert infos["layers.1.mlp.fc_in.weight"].tp_blocks == (i, i)
    twin = build_model(mcfg, seed=4)
    load_checkpoint(tmp_path / "ck", model=twin)
    x = torch.randint(0, 64, (1, 8))
    torch.testing.assert_close(twin(x), model(x), rtol=0, atol=0)
