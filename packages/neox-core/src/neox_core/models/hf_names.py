"""Map neox parameter names to and from HF `GPTNeoXForCausalLM` / `LlamaForCausalLM` /
`MistralForCausalLM` (LLaMA's names, no biases, sliding-window attention).

neox keeps GPT-NeoX's fused layouts: one `qkv` matrix (per-head [q; k; v] blocks, or all q,
all k, all v rows with grouped-query attention) and one `fc_in` holding SwiGLU's [up; gate].
HF GPT-NeoX uses the same per-head fused QKV, so its tensors copy over; HF LLaMA keeps q/k/v
and gate/up apart, so they are fused and split here. Nothing here imports transformers.

Sliding windows count differently: HF's `sliding_window` W lets a query see W keys including
itself, GPT-NeoX's `sliding_window_width` w lets it see itself and w before it, so W = w + 1.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from neox_core.config.schema import ModelConfig

Tensors = dict[str, torch.Tensor]

# GPT-NeoX's untied head: "embed_out.weight" in HF checkpoint files (and transformers 4.x);
# transformers 5 names the module "lm_head" and renames "embed_out" when loading files.
GPT_NEOX_HEAD_NAMES = ("embed_out.weight", "lm_head.weight")


class NameMappingError(ValueError):
    """Weights whose names or shapes do not fit the model they are loaded into."""


def hf_architecture(cfg: ModelConfig) -> str:
    """The HF class that computes what this config computes; raises when none does."""
    problems = []
    if cfg.architecture == "gpt_neox":
        if cfg.norm != "layernorm" or not cfg.norm_bias:
            problems.append("HF GPT-NeoX needs LayerNorm with bias")
        if cfg.activation != "gelu":
            problems.append("HF GPT-NeoX needs GELU")
        if not cfg.mlp_bias:
            problems.append("HF GPT-NeoX's MLP always has biases")
        if cfg.sliding_window_width is not None:
            problems.append("HF GPT-NeoX has no sliding-window attention")
        if (cfg.num_kv_heads or cfg.num_attention_heads) != cfg.num_attention_heads:
            problems.append("HF GPT-NeoX has no grouped-query attention")
        name = "GPTNeoXForCausalLM"
    else:
        if cfg.norm != "rmsnorm" or cfg.norm_bias:
            problems.append("HF LLaMA needs RMSNorm without bias")
        if cfg.activation != "swiglu":
            problems.append("HF LLaMA needs SwiGLU")
        if cfg.gpt_j_residual:
            problems.append("HF LLaMA has no parallel residual")
        if cfg.rotary_pct != 1.0:
            problems.append("HF LLaMA rotates whole heads (rotary_pct 1)")
        name = "LlamaForCausalLM"
        if cfg.sliding_window_width is not None:
            if cfg.attention_bias or cfg.mlp_bias:
                problems.append("HF Mistral (sliding-window attention) has no linear biases")
            name = "MistralForCausalLM"
    if problems:
        raise NameMappingError(f"no HF equivalent for this model: {'; '.join(problems)}")
    return name


def hf_config_kwargs(cfg: ModelConfig) -> dict[str, Any]:
    """Keyword arguments for HF's GPTNeoXConfig / LlamaConfig of the same model."""
    common = {
        "vocab_size": cfg.padded_vocab_size,
        "hidden_size": cfg.hidden_size,
        "num_hidden_layers": cfg.num_layers,
        "num_attention_heads": cfg.num_attention_heads,
        "intermediate_size": cfg.intermediate_size,
        "max_position_embeddings": cfg.max_position_embeddings,
        "tie_word_embeddings": cfg.tie_embeddings,
        "initializer_range": cfg.init_std,
        "attention_dropout": 0.0,
    }
    if hf_architecture(cfg) == "GPTNeoXForCausalLM":
        return {
            **common,
            "hidden_act": "gelu",
            "rotary_pct": cfg.rotary_pct,
            "rotary_emb_base": cfg.rotary_emb_base,
            "layer_norm_eps": cfg.norm_eps,
            "use_parallel_residual": cfg.gpt_j_residual,
            "attention_bias": cfg.attention_bias,
            "hidden_dropout": 0.0,
        }
    llama_like = {
        **common,
        "num_key_value_heads": cfg.num_kv_heads or cfg.num_attention_heads,
        "hidden_act": "silu",
        "rms_norm_eps": cfg.norm_eps,
        "rope_theta": float(cfg.rotary_emb_base),
    }
    if cfg.sliding_window_width is not None:
        return {**llama_like, "sliding_window": cfg.sliding_window_width + 1}
    return {**llama_like, "attention_bias": cfg.attention_bias, "mlp_bias": cfg.mlp_bias}


def model_config_from_hf(hf: Mapping[str, Any]) -> ModelConfig:
    """A neox ModelConfig from an HF config.json dict (transformers 4.x or 5.x spellings).

    The vocabulary is taken as already padded (HF stores the embedding's row count).
    """
    model_type = hf.get("model_type")
    rope = dict(hf.get("rope_parameters") or hf.get("rope_scaling") or {})
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    if rope_type != "default":
        raise NameMappingError(f"HF rope scaling {rope_type!r} is not yet supported by neox")
    heads = hf["num_attention_heads"]
    hidden = hf["hidden_size"]
    if hf.get("head_dim") not in (None, hidden // heads):
        raise NameMappingError(
            f"HF head_dim {hf['head_dim']} differs from hidden_size / heads; not supported"
        )
    common = dict(
        num_layers=hf["num_hidden_layers"],
        hidden_size=hidden,
        num_attention_heads=heads,
        intermediate_size=hf["intermediate_size"],
        max_position_embeddings=hf.get("max_position_embeddings"),
        vocab_size=hf["vocab_size"],
        padded_vocab_size=hf["vocab_size"],
        make_vocab_size_divisible_by=1,
        tie_embeddings=bool(hf.get("tie_word_embeddings", False)),
        init_std=hf.get("initializer_range", 0.02),
        hidden_dropout=0.0,
        attention_dropout=0.0,
    )
    if model_type == "gpt_neox":
        if hf.get("hidden_act", "gelu") != "gelu":
            raise NameMappingError(f"HF GPT-NeoX hidden_act {hf['hidden_act']!r} is not GELU")
        return ModelConfig(
            architecture="gpt_neox",
            num_kv_heads=heads,
            norm="layernorm",
            norm_eps=hf.get("layer_norm_eps", 1e-5),
            norm_bias=True,
            activation="gelu",
            rotary_pct=rope.get("partial_rotary_factor", hf.get("rotary_pct", 0.25)),
            rotary_emb_base=int(rope.get("rope_theta", hf.get("rotary_emb_base", 10000))),
            gpt_j_residual=bool(hf.get("use_parallel_residual", True)),
            attention_bias=bool(hf.get("attention_bias", True)),
            mlp_bias=True,
            **common,
        )
    if model_type in ("llama", "mistral"):
        if hf.get("hidden_act", "silu") != "silu":
            raise NameMappingError(f"HF {model_type} hidden_act {hf['hidden_act']!r} is not SiLU")
        window = hf.get("sliding_window") if model_type == "mistral" else None
        return ModelConfig(
            architecture="llama",
            num_kv_heads=hf.get("num_key_value_heads") or heads,
            norm="rmsnorm",
            norm_eps=hf.get("rms_norm_eps", 1e-6),
            norm_bias=False,
            activation="swiglu",
            rotary_pct=1.0,
            rotary_emb_base=int(rope.get("rope_theta", hf.get("rope_theta", 10000))),
            gpt_j_residual=False,
            attention_bias=bool(hf.get("attention_bias", False)),
            mlp_bias=bool(hf.get("mlp_bias", False)),
            sliding_window_width=None if window is None else int(window) - 1,
            **common,
        )
    raise NameMappingError(f"HF model_type {model_type!r}: neox maps gpt_neox, llama and mistral")


# -- fused QKV ---------------------------------------------------------------------------------


def fuse_qkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cfg: ModelConfig) -> torch.Tensor:
    """Separate q/k/v (weights [out, in] or biases [out]) -> neox's fused `qkv` layout."""
    heads, kv = cfg.num_attention_heads, cfg.num_kv_heads or cfg.num_attention_heads
    if kv != heads:
        return torch.cat((q, k, v), dim=0)
    d = cfg.hidden_size // heads
    rest = q.shape[1:]
    parts = [t.reshape(heads, d, *rest) for t in (q, k, v)]
    return torch.cat(parts, dim=1).reshape(3 * heads * d, *rest)


def split_qkv(qkv: torch.Tensor, cfg: ModelConfig) -> tuple[torch.Tensor, ...]:
    """neox's fused `qkv` (weight or bias) -> separate q, k, v."""
    heads, kv = cfg.num_attention_heads, cfg.num_kv_heads or cfg.num_attention_heads
    d = cfg.hidden_size // heads
    if kv != heads:
        return tuple(qkv.split((heads * d, kv * d, kv * d), dim=0))
    rest = qkv.shape[1:]
    blocks = qkv.reshape(heads, 3 * d, *rest)
    return tuple(b.reshape(heads * d, *rest) for b in blocks.split(d, dim=1))


# -- name tables -------------------------------------------------------------------------------

_NEOX_HF_GPT_NEOX_LAYER = {
    "input_norm": "input_layernorm",
    "post_attention_norm": "post_attention_layernorm",
    "attention.qkv": "attention.query_key_value",
    "attention.out": "attention.dense",
    "mlp.fc_in": "mlp.dense_h_to_4h",
    "mlp.fc_out": "mlp.dense_4h_to_h",
}


def _suffixes(cfg: ModelConfig, module: str) -> tuple[str, ...]:
    """The tensors of a module ("input_norm", "attention.qkv", "mlp.fc_in", ...)."""
    if "norm" in module:
        bias = cfg.norm_bias
    elif module.startswith("attention"):
        bias = cfg.attention_bias
    elif module.startswith("mlp"):
        bias = cfg.mlp_bias
    else:
        raise ValueError(module)
    return ("weight", "bias") if bias else ("weight",)


def to_hf(state: Mapping[str, torch.Tensor], cfg: ModelConfig) -> Tensors:
    """neox state dict -> HF state dict of `hf_architecture(cfg)` (tensors shared, not copied)."""
    arch = hf_architecture(cfg)
    out: Tensors = {}
    if arch == "GPTNeoXForCausalLM":
        out["gpt_neox.embed_in.weight"] = state["embed.weight"]
        for i in range(cfg.num_layers):
            for ours, theirs in _NEOX_HF_GPT_NEOX_LAYER.items():
                for suffix in _suffixes(cfg, ours):
                    hf_name = f"gpt_neox.layers.{i}.{theirs}.{suffix}"
                    out[hf_name] = state[f"layers.{i}.{ours}.{suffix}"]
        for suffix in ("weight", "bias"):
            out[f"gpt_neox.final_layer_norm.{suffix}"] = state[f"final_norm.{suffix}"]
        head = state["embed.weight" if cfg.tie_embeddings else "lm_head.weight"]
        out[GPT_NEOX_HEAD_NAMES[0]] = head
        return out
    out["model.embed_tokens.weight"] = state["embed.weight"]
    for i in range(cfg.num_layers):
        ours, theirs = f"layers.{i}", f"model.layers.{i}"
        out[f"{theirs}.input_layernorm.weight"] = state[f"{ours}.input_norm.weight"]
        out[f"{theirs}.post_attention_layernorm.weight"] = state[
            f"{ours}.post_attention_norm.weight"
        ]
        for suffix in _suffixes(cfg, "attention"):
            q, k, v = split_qkv(state[f"{ours}.attention.qkv.{suffix}"], cfg)
            out[f"{theirs}.self_attn.q_proj.{suffix}"] = q
            out[f"{theirs}.self_attn.k_proj.{suffix}"] = k
            out[f"{theirs}.self_attn.v_proj.{suffix}"] = v
            out[f"{theirs}.self_attn.o_proj.{suffix}"] = state[f"{ours}.attention.out.{suffix}"]
        for suffix in _suffixes(cfg, "mlp"):
            up, gate = state[f"{ours}.mlp.fc_in.{suffix}"].chunk(2, dim=0)
            out[f"{theirs}.mlp.up_proj.{suffix}"] = up
            out[f"{theirs}.mlp.gate_proj.{suffix}"] = gate
            out[f"{theirs}.mlp.down_proj.{suffix}"] = state[f"{ours}.mlp.fc_out.{suffix}"]
    out["model.norm.weight"] = state["final_norm.weight"]
    out["lm_head.weight"] = state["embed.weight" if cfg.tie_embeddings else "lm_head.weight"]
    return out


def from_hf(hf_state: Mapping[str, torch.Tensor], cfg: ModelConfig) -> Tensors:
    """HF state dict -> neox state dict; missing HF tensors raise NameMappingError."""
    arch = hf_architecture(cfg)

    def get(name: str) -> torch.Tensor:
        if name not in hf_state:
            raise NameMappingError(f"HF {arch} state dict has no tensor {name!r}")
        return hf_state[name]

    out: Tensors = {}
    if arch == "GPTNeoXForCausalLM":
        out["embed.weight"] = get("gpt_neox.embed_in.weight")
        for i in range(cfg.num_layers):
            for ours, theirs in _NEOX_HF_GPT_NEOX_LAYER.items():
                for suffix in _suffixes(cfg, ours):
                    out[f"layers.{i}.{ours}.{suffix}"] = get(
                        f"gpt_neox.layers.{i}.{theirs}.{suffix}"
                    )
        for suffix in ("weight", "bias"):
            out[f"final_norm.{suffix}"] = get(f"gpt_neox.final_layer_norm.{suffix}")
        if not cfg.tie_embeddings:
            present = [n for n in GPT_NEOX_HEAD_NAMES if n in hf_state]
            out["lm_head.weight"] = get(present[0] if present else GPT_NEOX_HEAD_NAMES[0])
        return out
    out["embed.weight"] = get("model.embed_tokens.weight")
    for i in range(cfg.num_layers):
        ours, theirs = f"layers.{i}", f"model.layers.{i}"
        out[f"{ours}.input_norm.weight"] = get(f"{theirs}.input_layernorm.weight")
        out[f"{ours}.post_attention_norm.weight"] = get(f"{theirs}.post_attention_layernorm.weight")
        for suffix in _suffixes(cfg, "attention"):
            out[f"{ours}.attention.qkv.{suffix}"] = fuse_qkv(
                get(f"{theirs}.self_attn.q_proj.{suffix}"),
                get(f"{theirs}.self_attn.k_proj.{suffix}"),
                get(f"{theirs}.self_attn.v_proj.{suffix}"),
                cfg,
            )
            out[f"{ours}.attention.out.{suffix}"] = get(f"{theirs}.self_attn.o_proj.{suffix}")
        for suffix in _suffixes(cfg, "mlp"):
            out[f"{ours}.mlp.fc_in.{suffix}"] = torch.cat(
                (get(f"{theirs}.mlp.up_proj.{suffix}"), get(f"{theirs}.mlp.gate_proj.{suffix}")),
                dim=0,
            )
            out[f"{ours}.mlp.fc_out.{suffix}"] = get(f"{theirs}.mlp.down_proj.{suffix}")
    out["final_norm.weight"] = get("model.norm.weight")
    if not cfg.tie_embeddings:
        out["lm_head.weight"] = get("lm_head.weight")
    return out


# -- loading by name ---------------------------------------------------------------------------


def load_by_name(model: nn.Module, tensors: Mapping[str, torch.Tensor]) -> None:
    """Copy `tensors` into `model` by neox name; every parameter must be given, with its shape.

    Unlike `load_state_dict`, the error lists what is missing, unexpected or misshapen by name.
    """
    own = model.state_dict()
    missing = sorted(set(own) - set(tensors))
    unexpected = sorted(set(tensors) - set(own))
    misshapen = [
        f"{n}: model {tuple(own[n].shape)}, given {tuple(tensors[n].shape)}"
        for n in sorted(set(own) & set(tensors))
        if own[n].shape != tensors[n].shape
    ]
    if missing or unexpected or misshapen:
        parts = []
        if missing:
            parts.append(f"missing {missing[:8]}{' ...' if len(missing) > 8 else ''}")
        if unexpected:
            parts.append(f"unexpected {unexpected[:8]}{' ...' if len(unexpected) > 8 else ''}")
        if misshapen:
            parts.append(f"wrong shape {misshapen[:8]}")
        raise NameMappingError("weights do not fit the model: " + "; ".join(parts))
    with torch.no_grad():
        for name, target in own.items():
            target.copy_(tensors[name].to(dtype=target.dtype, device=target.device))


def load_hf_state_dict(model: nn.Module, hf_state: Mapping[str, torch.Tensor]) -> None:
    """Load an HF GPTNeoXForCausalLM/LlamaForCausalLM state dict into a neox model."""
    load_by_name(model, from_hf(hf_state, model.config))


def hf_state_dict(model: nn.Module) -> Tensors:
    """The neox model's weights under HF names (for `save_pretrained`-style export)."""
    return to_hf(model.state_dict(), model.config)


def save_weights(model: nn.Module, path: str) -> None:
    """Write the model's weights by neox name to a safetensors file, atomically."""
    import os
    import tempfile

    from safetensors.torch import save_file

    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=".safetensors")
    os.close(fd)
    try:
        tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
        save_file(tensors, tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def load_weights(model: nn.Module, path: str) -> None:
    """Load a safetensors file written by `save_weights` (names checked)."""
    from safetensors.torch import load_file

    load_by_name(model, load_file(path))
