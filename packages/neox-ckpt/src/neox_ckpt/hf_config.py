"""HF `config.json` <-> neox model settings, for the architectures neox computes exactly.

Import reads the config through transformers' own config class (so defaults and renamed keys
across transformers versions resolve as transformers resolves them) and writes GPT-NeoX YAML
keys; anything neox would compute differently (scaled RoPE, approximate GELU, a head size other
than hidden/heads, ...) is refused with the key that causes it. Mistral's `sliding_window` W
(W keys per query, itself included) becomes GPT-NeoX's `sliding_window_width` W - 1.
Export builds the HF config from `neox_core.models.hf_names.hf_config_kwargs`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from neox_ckpt.errors import ConversionError

SUPPORTED_MODEL_TYPES = ("gpt_neox", "llama", "mistral")
# the output head's name in HF LLaMA/Mistral and GPT-NeoX models
HF_HEADS = ("lm_head.weight", "embed_out.weight")


def _rope(cfg: Any) -> tuple[float, float, str | None]:
    """(theta, rotary fraction, rope type) across transformers 4.x and 5.x spellings."""
    params = getattr(cfg, "rope_parameters", None) or {}
    scaling = getattr(cfg, "rope_scaling", None) or {}
    theta = params.get("rope_theta")
    if theta is None:
        theta = getattr(cfg, "rope_theta", None) or getattr(cfg, "rotary_emb_base", None)
    pct = params.get("partial_rotary_factor")
    if pct is None:
        pct = getattr(cfg, "rotary_pct", None) or getattr(cfg, "partial_rotary_factor", None)
    rope_type = params.get("rope_type") or scaling.get("rope_type") or scaling.get("type")
    return float(theta if theta is not None else 10000.0), float(pct or 1.0), rope_type


def neox_model_keys(folder: str | Path) -> tuple[dict[str, Any], str]:
    """GPT-NeoX YAML model keys for the HF model in `folder`, and its HF model type."""
    import json

    raw = json.loads((Path(folder) / "config.json").read_text(encoding="utf-8"))
    where = f"{Path(folder) / 'config.json'}"
    model_type = raw.get("model_type")
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise ConversionError(
            f"{where}: model_type {model_type!r} is not supported; neox converts "
            f"{', '.join(SUPPORTED_MODEL_TYPES)} (LLaMA-shaped)"
        )
    from transformers import AutoConfig

    cfg = AutoConfig.from_pretrained(str(folder))
    problems: list[str] = []
    theta, pct, rope_type = _rope(cfg)
    if rope_type not in (None, "default"):
        problems.append(f"rope scaling {rope_type!r} (only plain RoPE is supported)")
    if theta != int(theta):
        problems.append(f"rope_theta {theta} is not an integer (neox stores rotary_emb_base)")
    heads = int(cfg.num_attention_heads)
    hidden = int(cfg.hidden_size)
    if hidden % heads:
        problems.append(f"hidden_size {hidden} is not divisible by num_attention_heads {heads}")
    head_dim = getattr(cfg, "head_dim", None)
    if head_dim is not None and int(head_dim) * heads != hidden:
        problems.append(f"head_dim {head_dim} differs from hidden_size / num_attention_heads")
    keys: dict[str, Any] = {
        "num_layers": int(cfg.num_hidden_layers),
        "hidden_size": hidden,
        "num_attention_heads": heads,
        "max_position_embeddings": int(cfg.max_position_embeddings),
        "pos_emb": "rotary",
        "rotary_emb_base": int(theta),
        "no_weight_tying": not bool(getattr(cfg, "tie_word_embeddings", False)),
        "vocab_size": int(cfg.vocab_size),  # HF rows; hf_to_neox turns it into GPT-NeoX keys
        "init_method_std": float(getattr(cfg, "initializer_range", 0.02)),
        "attention_dropout": float(getattr(cfg, "attention_dropout", 0.0) or 0.0),
    }
    act = getattr(cfg, "hidden_act", None)
    if model_type == "gpt_neox":
        if act != "gelu":
            problems.append(f"hidden_act {act!r} (neox's GPT-NeoX uses exact 'gelu')")
        keys.update(
            {
                "rotary_pct": pct,
                "gpt_j_residual": bool(cfg.use_parallel_residual),
                "norm": "layernorm",
                "layernorm_epsilon": float(cfg.layer_norm_eps),
                "use_bias_in_norms": True,
                "use_bias_in_attn_linear": bool(getattr(cfg, "attention_bias", True)),
                "use_bias_in_mlp": True,
                "activation": "gelu",
                "intermediate_size": int(cfg.intermediate_size),
                "hidden_dropout": float(getattr(cfg, "hidden_dropout", 0.0) or 0.0),
            }
        )
    else:
        if act != "silu":
            problems.append(f"hidden_act {act!r} (LLaMA's SwiGLU uses 'silu')")
        if pct != 1.0:
            problems.append(f"partial rotary factor {pct} (LLaMA rotates whole heads)")
        window = getattr(cfg, "sliding_window", None) if model_type == "mistral" else None
        if window is not None:
            if int(window) < 1:
                problems.append(f"sliding_window {window} (must be at least 1)")
            keys["sliding_window_width"] = int(window) - 1
        attn_bias = bool(getattr(cfg, "attention_bias", False))
        mlp_bias = bool(getattr(cfg, "mlp_bias", False))
        kv = getattr(cfg, "num_key_value_heads", None) or heads
        keys.update(
            {
                "num_kv_heads": int(kv),
                "gpt_j_residual": False,
                "norm": "rmsnorm",
                "rms_norm_epsilon": float(cfg.rms_norm_eps),
                "use_bias_in_norms": False,
                "use_bias_in_attn_linear": attn_bias,
                "use_bias_in_mlp": mlp_bias,
                "activation": "swiglu",
                # GPT-NeoX sizes gated MLPs from 3x the width (shrunk by 2/3, halved)
                "intermediate_size": 3 * int(cfg.intermediate_size),
                "mlp_multiple_of": 1,
                "hidden_dropout": 0.0,
            }
        )
    if problems:
        raise ConversionError(f"{where}: cannot convert to neox: {'; '.join(problems)}")
    return keys, model_type


def hf_config_json(
    model_cfg: Any,
    dtype: str,
    token_ids: dict[str, Any] | None = None,
    sequence_classification: bool = False,
) -> str:
    """config.json text of the HF model equivalent to a neox `ModelConfig` (a one-label
    `*ForSequenceClassification` for a reward model)."""
    import torch
    import transformers

    from neox_core.models.hf_names import NameMappingError, hf_architecture, hf_config_kwargs

    try:
        arch = hf_architecture(model_cfg)
    except NameMappingError as e:
        raise ConversionError(str(e)) from None
    config_class = getattr(transformers, arch.replace("ForCausalLM", "Config"))
    kwargs = hf_config_kwargs(model_cfg)
    kwargs.update({k: v for k, v in (token_ids or {}).items() if v is not None})
    if sequence_classification:
        arch = arch.replace("ForCausalLM", "ForSequenceClassification")
        kwargs["num_labels"] = 1
    config = config_class(**kwargs, architectures=[arch])
    config.dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[dtype]
    return config.to_json_string(use_diff=False)
