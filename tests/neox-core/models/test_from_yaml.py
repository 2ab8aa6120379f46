"""From a GPT-NeoX YAML file to logits: the config translation feeds the model correctly.

Tiny Pythia-style and LLaMA-style files (GPT-NeoX spellings) are loaded, the model built, and its
logits compared with the transformers model that the same weights describe.
"""

from __future__ import annotations

import textwrap

import pytest
import torch

from neox_core.config import load_config
from neox_core.models import build_model
from neox_core.models.hf_names import hf_architecture, hf_config_kwargs, hf_state_dict

transformers = pytest.importorskip("transformers")

PYTHIA_STYLE = """\
{
  "num-layers": 2, "hidden-size": 64, "num-attention-heads": 4,
  "seq-length": 32, "max-position-embeddings": 32,
  "pos-emb": "rotary", "rotary-pct": 0.25, "no-weight-tying": true, "gpt-j-residual": true,
  "attention-config": [[["flash"], 2]], "bias-gelu-fusion": true,
  "init_method": "small_init", "output_layer_init_method": "wang_init",
  "vocab_size": 200,
}
"""
LLAMA_STYLE = """\
{
  "num_layers": 2, "hidden_size": 96, "num_attention_heads": 6, "num_kv_heads": 2,
  "seq_length": 32, "max_position_embeddings": 32, "make_vocab_size_divisible_by": 1,
  "pos_emb": "rotary", "rotary_pct": 1, "rotary_emb_base": 50000, "no_weight_tying": false,
  "norm": "rmsnorm", "rms_norm_epsilon": 1.0e-5, "use_bias_in_norms": false,
  "use_bias_in_attn_linear": false, "mlp_type": "llama", "activation": "silu",
  "vocab_size": 200,
}
"""


@pytest.mark.parametrize("text", [PYTHIA_STYLE, LLAMA_STYLE], ids=["pythia", "llama"])
def test_yaml_to_logits_matches_transformers(tmp_path, text: str) -> None:
    path = tmp_path / "model.yml"
    path.write_text(textwrap.dedent(text))
    cfg = load_config([path]).model
    model = build_model(cfg, seed=0).eval()
    arch = hf_architecture(cfg)
    config_class = getattr(transformers, arch.replace("ForCausalLM", "Config"))
    hf = getattr(transformers, arch)(config_class(**hf_config_kwargs(cfg))).eval()
    weights = hf_state_dict(model)
    if "embed_out.weight" in weights:  # transformers 5 names GPT-NeoX's head lm_head
        weights["lm_head.weight"] = weights.pop("embed_out.weight")
    missing, unexpected = hf.load_state_dict(weights, strict=False)
    assert not unexpected and set(missing) <= {"lm_head.weight"}  # tied head
    ids = torch.randint(0, cfg.vocab_size, (2, 32))
    with torch.no_grad():
        diff = (model(ids) - hf(ids).logits).abs().max().item()
    assert diff < 1e-5
