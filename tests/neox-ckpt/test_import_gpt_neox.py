"""import-gpt-neox on legacy GPT-NeoX checkpoints written here from tiny HF models.

The legacy files are built the way GPT-NeoX lays them out (tools/ckpts and
../shared/reference): `layer_<LL>-model_<TT>-model_states.pt` plain dicts per pipeline layer
(00 embedding, 02.. transformer layers, L+3 final norm, L+4 head) or `mp_rank_<TT>` files with
`sequential.<LL>.<name>` keys; QKV per query head [q_h; its k share; its v share]; LLaMA MLP as
w1 (gate) / w3 (up) / w2 (down) and RMSNorm `scale`; column-parallel tensors cut along dim 0,
row-parallel weights along dim 1; row-parallel biases split into shares that sum to the bias
under gpt_j_residual. The import must reproduce transformers' logits.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from neox_ckpt.cli import main

TP = 2


class DeepSpeedBookkeeping:
    """Stands for the non-tensor objects DeepSpeed pickles; its methods must never run."""

    def __init__(self) -> None:
        self.steps = 3

    def __setstate__(self, state):  # pragma: no cover - proves placeholders are used
        raise AssertionError("code from the checkpoint ran")


def _chunks(t: torch.Tensor, dim: int) -> list[torch.Tensor]:
    return [c.clone() for c in t.chunk(TP, dim=dim)]


def _bias_shares(b: torch.Tensor) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    share = torch.randn(b.shape, generator=g)
    return [b - share, share]


def _neox_layers(sd: dict[str, torch.Tensor], n: int) -> list[dict[str, list[torch.Tensor]]]:
    out = []
    for i in range(n):
        p = f"gpt_neox.layers.{i}."
        layer = {}
        for key in ("input_layernorm", "post_attention_layernorm"):
            for s in ("weight", "bias"):
                layer[f"{key}.{s}"] = [sd[p + f"{key}.{s}"].clone() for _ in range(TP)]
        for key in ("attention.query_key_value", "mlp.dense_h_to_4h"):
            for s in ("weight", "bias"):
                layer[f"{key}.{s}"] = _chunks(sd[p + f"{key}.{s}"], 0)
        for key in ("attention.dense", "mlp.dense_4h_to_h"):
            layer[f"{key}.weight"] = _chunks(sd[p + f"{key}.weight"], 1)
            layer[f"{key}.bias"] = _bias_shares(sd[p + f"{key}.bias"])
        layer["attention.rotary_emb.inv_freq"] = [torch.ones(4)] * TP
        out.append(layer)
    return out


def _llama_layers(sd: dict[str, torch.Tensor], n: int, heads: int) -> list[dict]:
    out = []
    for i in range(n):
        p = f"model.layers.{i}."
        q, k, v = (sd[p + f"self_attn.{x}_proj.weight"] for x in "qkv")
        hidden = q.shape[1]
        per_head = [t.reshape(heads, -1, hidden) for t in (q, k, v)]
        qkv = [
            torch.cat([c[r] for c in (t.chunk(TP, 0) for t in per_head)], dim=1).reshape(-1, hidden)
            for r in range(TP)
        ]
        out.append(
            {
                "attention.query_key_value.weight": qkv,
                "attention.dense.weight": _chunks(sd[p + "self_attn.o_proj.weight"], 1),
                "mlp.w1.weight": _chunks(sd[p + "mlp.gate_proj.weight"], 0),
                "mlp.w3.weight": _chunks(sd[p + "mlp.up_proj.weight"], 0),
                "mlp.w2.weight": _chunks(sd[p + "mlp.down_proj.weight"], 1),
                "input_layernorm.scale": [sd[p + "input_layernorm.weight"]] * TP,
                "post_attention_layernorm.scale": [sd[p + "post_attention_layernorm.weight"]] * TP,
            }
        )
    return out


def _legacy_layers(arch: str, hf_dir: Path) -> list[dict[str, list[torch.Tensor]]]:
    """Pipeline layers in order (embedding, transformer layers, final norm, head)."""
    from safetensors.torch import load_file

    sd = load_file(hf_dir / "model.safetensors")
    cfg = json.loads((hf_dir / "config.json").read_text())
    n = cfg["num_hidden_layers"]
    if arch == "pythia":
        embed, norm = sd["gpt_neox.embed_in.weight"], "gpt_neox.final_layer_norm"
        head = sd.get("embed_out.weight", sd.get("lm_head.weight"))
        final = {f"norm.{s}": [sd[f"{norm}.{s}"]] * TP for s in ("weight", "bias")}
        blocks = _neox_layers(sd, n)
    else:
        embed, head = sd["model.embed_tokens.weight"], sd["lm_head.weight"]
        final = {"norm.scale": [sd["model.norm.weight"]] * TP}
        blocks = _llama_layers(sd, n, cfg["num_attention_heads"])
    return [
        {"word_embeddings.weight": _chunks(embed, 0)},
        *blocks,
        final,
        {"final_linear.weight": _chunks(head, 0)},
    ]


def _write_legacy(layers, step: Path, kind: str) -> None:
    step.mkdir(parents=True)
    n = len(layers) - 3
    numbers = [0, *range(2, n + 2), n + 3, n + 4]
    for r in range(TP):
        meta = {
            "iteration": 7,
            "dp_world_size": 1,
            "mp_world_size": TP,
            "ds": DeepSpeedBookkeeping(),
        }
        if kind == "pipeline":
            for num, layer in zip(numbers, layers, strict=True):
                torch.save(
                    {k: v[r] for k, v in layer.items()},
                    step / f"layer_{num:02d}-model_{r:02d}-model_states.pt",
                )
            torch.save({**meta, "module": None}, step / f"mp_rank_{r:02d}_model_states.pt")
        else:
            module = {
                f"sequential.{num}.{k}": v[r]
                for num, layer in zip(numbers, layers, strict=True)
                for k, v in layer.items()
            }
            torch.save({**meta, "module": module}, step / f"mp_rank_{r:02d}_model_states.pt")
    (step.parent / "latest").write_text(step.name)


_YAML = {
    "pythia": """{
  "pipe-parallel-size": 1, "model-parallel-size": 2,
  "num-layers": 3, "hidden-size": 64, "num-attention-heads": 4,
  "seq-length": 64, "max-position-embeddings": 64, "pos-emb": "rotary", "rotary-pct": 0.25,
  "no-weight-tying": true, "gpt-j-residual": true, "norm": "layernorm",
  "intermediate-size": 128, "hidden-dropout": 0, "attention-dropout": 0,
  "tokenizer-type": "HFTokenizer", "vocab-file": "/cluster/data/tokenizer.json",
}""",
    "llama": """{
  "pipe-parallel-size": 0, "model-parallel-size": 2,
  "num-layers": 3, "hidden-size": 64, "num-attention-heads": 4, "num-kv-heads": 2,
  "seq-length": 64, "max-position-embeddings": 64, "pos-emb": "rotary", "rotary-pct": 1.0,
  "no-weight-tying": true, "norm": "rmsnorm", "rms-norm-epsilon": 1.0e-6,
  "use-bias-in-norms": false, "use-bias-in-attn-linear": false,
  "mlp-type": "llama", "activation": "silu", "llama-mlp-multiple-of": 1,
}""",
}


@pytest.fixture(scope="module")
def llama_hf_dir(tmp_path_factory) -> Path:
    """A GQA LLaMA sized as GPT-NeoX's `mlp_type: llama` sizes it (8/3 h -> 170)."""
    import transformers

    config = transformers.LlamaConfig(
        vocab_size=96,
        hidden_size=64,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=170,
        max_position_embeddings=64,
        rms_norm_eps=1e-6,
    )
    torch.manual_seed(11)
    model = transformers.LlamaForCausalLM(config)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.add_(0.1 * torch.randn_like(p))
    folder = tmp_path_factory.mktemp("llama170")
    model.save_pretrained(folder)
    return folder


@pytest.mark.parametrize(
    ("arch", "kind"),
    [
        ("pythia", "pipeline"),
        ("pythia", "sequential"),
        ("llama", "pipeline"),
        ("llama", "sequential"),
    ],
)
def test_import_matches_transformers(
    arch, kind, hf_dirs, llama_hf_dir, hf_logits, neox_logits, tmp_path
) -> None:
    hf_dir = hf_dirs["pythia"] if arch == "pythia" else llama_hf_dir
    step = tmp_path / "legacy" / "global_step7"
    _write_legacy(_legacy_layers(arch, hf_dir), step, kind)
    (step / "configs").mkdir()
    (step / "configs" / "model.yml").write_text(_YAML[arch])
    out = tmp_path / "neox"
    assert (
        main(["import-gpt-neox", "--input-dir", str(tmp_path / "legacy"), "--output-dir", str(out)])
        == 0
    )
    assert (out / "latest").read_text().strip() == "global_step7"
    diff = (neox_logits(out) - hf_logits(hf_dir)).abs().max().item()
    assert diff < 1e-5, f"{arch}/{kind}: {diff:.3e}"


def test_import_needs_a_config(hf_dirs, tmp_path, capsys) -> None:
    step = tmp_path / "legacy" / "global_step7"
    _write_legacy(_legacy_layers("pythia", hf_dirs["pythia"]), step, "pipeline")
    rc = main(["import-gpt-neox", "--input-dir", str(step), "--output-dir", str(tmp_path / "o")])
    assert rc == 2 and "--config" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def _bare_step(step: Path) -> None:
    """A step directory holding one legacy layer file: enough to be told apart, not imported."""
    step.mkdir(parents=True)
    torch.save(
        {"word_embeddings.weight": torch.ones(4, 2)}, step / "layer_00-model_00-model_states.pt"
    )


def test_iteration_not_saved_is_refused_not_replaced_by_latest(tmp_path, capsys) -> None:
    save = tmp_path / "legacy"
    _bare_step(save / "global_step7")
    (save / "latest").write_text("global_step7")
    out = tmp_path / "o"
    rc = main(
        ["import-gpt-neox", "--input-dir", str(save), "--output-dir", str(out), "--iteration", "9"]
    )
    err = capsys.readouterr().err
    assert rc == 2 and str(save / "global_step9") in err and "available: [7]" in err
    assert not out.exists()


def test_step_dir_of_another_iteration_is_refused(tmp_path, capsys) -> None:
    step = tmp_path / "legacy" / "global_step7"
    _bare_step(step)
    out = tmp_path / "o"
    rc = main(
        ["import-gpt-neox", "--input-dir", str(step), "--output-dir", str(out), "--iteration", "9"]
    )
    assert rc == 2 and "is iteration 7, not 9" in capsys.readouterr().err
    assert not out.exists()
