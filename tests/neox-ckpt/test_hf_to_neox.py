"""HF -> neox at TP 1, 2 and 4: neox-core's forward on the converted weights gives
transformers' logits (fp32, within 1e-5) for every architecture, GQA and tied heads included."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from neox_ckpt.cli import main

TOLERANCE = 1e-5


def _convert(hf_dir: Path, out: Path, *extra: str) -> Path:
    assert main(["hf-to-neox", "--hf-model", str(hf_dir), "--output-dir", str(out), *extra]) == 0
    return out


@pytest.mark.parametrize("tp", [1, 2, 4])
def test_logits_match_transformers(arch, tp, hf_dirs, hf_logits, neox_logits, tmp_path) -> None:
    out = _convert(hf_dirs[arch], tmp_path / "neox", "--tp", str(tp))
    step = out / "global_step0"
    files = sorted(p.name for p in step.glob("model_*.safetensors"))
    assert files == [f"model_tp{r:02d}_pp00.safetensors" for r in range(tp)]
    got, expected = neox_logits(out), hf_logits(hf_dirs[arch])
    assert got.shape == expected.shape
    diff = (got - expected).abs().max().item()
    assert diff < TOLERANCE, f"{arch} tp{tp}: max abs diff {diff:.3e}"


def test_pipeline_split_gives_the_same_logits(hf_dirs, hf_logits, neox_logits, tmp_path) -> None:
    out = _convert(hf_dirs["llama_gqa"], tmp_path / "neox", "--tp", "2", "--pp", "2")
    step = out / "global_step0"
    assert len(list(step.glob("model_tp*_pp*.safetensors"))) == 4
    manifest = json.loads((step / "manifest.json").read_text())
    assert manifest["parallel"] == {
        "tensor_parallel_size": 2,
        "pipe_parallel_size": 2,
        "data_parallel_size": 1,
    }
    diff = (neox_logits(out) - hf_logits(hf_dirs["llama_gqa"])).abs().max().item()
    assert diff < TOLERANCE


def test_yaml_config_finetunes_from_the_checkpoint(hf_dirs, hf_logits, ids, tmp_path) -> None:
    """The written neox.yml loads with neox-core and `load`/`finetune` restore the weights."""
    from neox_core.checkpoint import load_checkpoint
    from neox_core.config import load_config
    from neox_core.models import build_model

    out = _convert(hf_dirs["pythia"], tmp_path / "neox", "--iteration", "1000")
    cfg = load_config([out / "neox.yml"])
    assert cfg.checkpoint.finetune is True
    assert Path(cfg.checkpoint.load) == out.absolute()
    assert cfg.checkpoint.iteration == 1000
    assert (out / "latest").read_text().strip() == "global_step1000"
    model = build_model(cfg.model, seed=1).eval()
    loaded = load_checkpoint(
        cfg.checkpoint.load, model=model, iteration=cfg.checkpoint.iteration, weights_only=True
    )
    assert loaded.iteration == 0  # finetune starts over
    with torch.no_grad():
        diff = (model(ids) - hf_logits(hf_dirs["pythia"])).abs().max().item()
    assert diff < TOLERANCE


def test_shard_metadata_follows_the_format(hf_dirs, tmp_path) -> None:
    from neox_core.checkpoint import read_manifest, read_shard_infos

    out = _convert(hf_dirs["llama_gqa"], tmp_path / "neox", "--tp", "2")
    step = out / "global_step0"
    manifest = read_manifest(step)  # neox-core's own reader accepts it
    assert manifest["format_version"] == 3 and manifest["contents"]["weights"]
    infos = read_shard_infos(step / "model_tp01_pp00.safetensors")
    qkv = infos["layers.0.attention.qkv.weight"]
    # 8 query heads + 4 kv heads of 8 rows each, cut per block across the 2 ranks
    assert (qkv.tp_dim, qkv.tp_rank, qkv.tp_world_size) == (0, 1, 2)
    assert qkv.full_shape == (128, 64) and qkv.tp_blocks == (64, 32, 32)
    assert infos["layers.0.mlp.fc_in.weight"].tp_blocks == (80, 80)
    assert infos["layers.0.attention.out.weight"].tp_dim == 1
    assert infos["layers.0.input_norm.weight"].tp_dim is None
    assert infos["embed.weight"].tp_dim == 0


def test_bf16_dtype_is_stored(hf_dirs, tmp_path) -> None:
    from neox_ckpt.neox_reader import NeoxCheckpoint

    out = _convert(hf_dirs["llama"], tmp_path / "neox", "--dtype", "bf16")
    ck = NeoxCheckpoint(out)
    assert {t.dtype for t in ck.tensors.values()} == {torch.bfloat16}
    assert "bf16" in (out / "neox.yml").read_text()


def test_tokenizer_files_are_copied_and_used(hf_dirs, tmp_path) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers

    from neox_core.config import load_config

    src = tmp_path / "hf"
    src.mkdir()
    for f in hf_dirs["llama"].iterdir():
        (src / f.name).write_bytes(f.read_bytes())
    tok = Tokenizer(models.WordLevel({f"w{i}": i for i in range(96)}, unk_token="w0"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.save(str(src / "tokenizer.json"))
    out = _convert(src, tmp_path / "neox")
    assert (out / "tokenizer" / "tokenizer.json").is_file()
    cfg = load_config([out / "neox.yml"])
    assert cfg.data.tokenizer_type == "HFTokenizer"
    assert Path(cfg.data.vocab_file) == out.absolute() / "tokenizer" / "tokenizer.json"


def test_vocab_not_divisible_by_tp_is_padded(tmp_path, ids) -> None:
    import transformers

    from neox_ckpt.neox_reader import NeoxCheckpoint

    config = transformers.LlamaConfig(
        vocab_size=90,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=4,
        intermediate_size=48,
        max_position_embeddings=32,
    )
    torch.manual_seed(0)
    transformers.LlamaForCausalLM(config).save_pretrained(tmp_path / "hf")
    out = _convert(tmp_path / "hf", tmp_path / "neox", "--tp", "4")
    ck = NeoxCheckpoint(out)
    embed = ck.read_full("embed.weight")
    assert embed.shape == (92, 32) and embed[90:].eq(0).all()


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "pre-zip"])
def test_pytorch_bin_checkpoints_load_weights_only(
    zip_format, hf_dirs, hf_logits, neox_logits, tmp_path
) -> None:
    """Older HF repositories ship pytorch_model.bin, the oldest in torch's pre-zip format
    (which cannot be memory-mapped); both are read with weights_only=True."""
    from safetensors.torch import load_file

    src = tmp_path / "hf"
    src.mkdir()
    (src / "config.json").write_bytes((hf_dirs["pythia"] / "config.json").read_bytes())
    torch.save(
        load_file(hf_dirs["pythia"] / "model.safetensors"),
        src / "pytorch_model.bin",
        _use_new_zipfile_serialization=zip_format,
    )
    if not zip_format:
        with pytest.raises(RuntimeError, match="mmap"):  # what a plain mmap=True load meets
            torch.load(src / "pytorch_model.bin", weights_only=True, mmap=True)
    out = _convert(src, tmp_path / "neox", "--tp", "2")
    diff = (neox_logits(out) - hf_logits(hf_dirs["pythia"])).abs().max().item()
    assert diff < TOLERANCE


def test_tp_that_would_cut_kv_heads_is_refused(hf_dirs, tmp_path, capsys) -> None:
    rc = main(
        [
            "hf-to-neox",
            "--hf-model",
            str(hf_dirs["llama_gqa"]),
            "--output-dir",
            str(tmp_path / "o"),
            "--tp",
            "8",
        ]
    )
    assert rc == 2
    assert "num_kv_heads 4" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("same", [True, False])
def test_tied_model_with_a_stored_head(same, hf_dirs, hf_logits, neox_logits, tmp_path, capsys):
    """Some tied checkpoints store lm_head.weight too: accepted when it equals the embedding."""
    import shutil

    from safetensors.torch import load_file, save_file

    src = tmp_path / "hf"
    shutil.copytree(hf_dirs["llama_gqa"], src)
    state = load_file(src / "model.safetensors")
    head = state["model.embed_tokens.weight"].clone()
    state["lm_head.weight"] = head if same else head + 1
    save_file(state, src / "model.safetensors", metadata={"format": "pt"})
    rc = main(["hf-to-neox", "--hf-model", str(src), "--output-dir", str(tmp_path / "o")])
    if same:
        assert rc == 0
        diff = (neox_logits(tmp_path / "o") - hf_logits(hf_dirs["llama_gqa"])).abs().max()
        assert diff < TOLERANCE
    else:
        assert rc == 2 and "lm_head.weight differs" in capsys.readouterr().err


def test_mixed_dtypes_are_kept_per_tensor(hf_dirs, tmp_path) -> None:
    """bf16 matrices with fp32 norms (as some releases ship) keep each tensor's dtype."""
    import shutil

    from safetensors.torch import load_file, save_file

    from neox_ckpt.neox_reader import NeoxCheckpoint

    src = tmp_path / "hf"
    shutil.copytree(hf_dirs["llama_gqa"], src)
    state = load_file(src / "model.safetensors")
    mixed = {n: t if "norm" in n else t.to(torch.bfloat16) for n, t in state.items()}
    save_file(mixed, src / "model.safetensors", metadata={"format": "pt"})
    out = _convert(src, tmp_path / "neox", "--tp", "2")
    ck = NeoxCheckpoint(out)
    assert ck.tensors["layers.0.input_norm.weight"].dtype == torch.float32
    assert ck.tensors["layers.0.attention.qkv.weight"].dtype == torch.bfloat16
    assert torch.equal(ck.read_full("final_norm.weight"), mixed["model.norm.weight"])
    assert torch.equal(ck.read_full("embed.weight"), mixed["model.embed_tokens.weight"])


def test_mistral_sliding_window_converts_both_ways(hf_dirs, hf_logits, tmp_path) -> None:
    """HF's sliding_window 6 (6 keys per query) is GPT-NeoX's sliding_window_width 5."""
    import transformers

    from neox_core.config import load_config

    out = _convert(hf_dirs["mistral_window"], tmp_path / "neox")
    yaml_cfg = load_config([next(out.glob("*.yml"))])
    assert yaml_cfg.model.sliding_window_width == 5
    back = tmp_path / "back"
    assert main(["neox-to-hf", "--input-dir", str(out), "--output-dir", str(back)]) == 0
    config = json.loads((back / "config.json").read_text())
    assert (config["model_type"], config["sliding_window"]) == ("mistral", 6)
    model = transformers.AutoModelForCausalLM.from_pretrained(back, dtype=torch.float32)
    assert type(model).__name__ == "MistralForCausalLM"
    assert torch.equal(hf_logits(back), hf_logits(hf_dirs["mistral_window"]))


def test_independent_biases_survive_both_ways(hf_dirs, tmp_path) -> None:
    """LLaMA with MLP biases only, GPT-NeoX without attention biases: as GPT-NeoX trains them."""
    from neox_core.config import load_config

    for name, attn, mlp in (
        ("llama_mlp_bias", False, True),
        ("neox_no_attention_bias", False, True),
    ):
        out = _convert(hf_dirs[name], tmp_path / name)
        m = load_config([next(out.glob("*.yml"))]).model
        assert (m.attention_bias, m.mlp_bias) == (attn, mlp), name
        back = tmp_path / f"{name}-back"
        assert main(["neox-to-hf", "--input-dir", str(out), "--output-dir", str(back)]) == 0
        config = json.loads((back / "config.json").read_text())
        assert config["attention_bias"] is attn, name
