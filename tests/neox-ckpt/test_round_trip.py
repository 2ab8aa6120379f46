"""HF -> neox (TP 2) -> HF gives back the same tensors bit for bit, and transformers loads it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from neox_ckpt.cli import main


def _hf_tensors(folder: Path) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for f in sorted(folder.glob("*.safetensors")):
        out.update(load_file(f))
    return out


def _round_trip(hf_dir: Path, tmp: Path, *neox_args: str, hf_args: tuple[str, ...] = ()) -> Path:
    neox, back = tmp / "neox", tmp / "back"
    assert (
        main(["hf-to-neox", "--hf-model", str(hf_dir), "--output-dir", str(neox), *neox_args]) == 0
    )
    assert main(["neox-to-hf", "--input-dir", str(neox), "--output-dir", str(back), *hf_args]) == 0
    return back


def test_round_trip_is_bit_identical(arch, hf_dirs, hf_logits, tmp_path) -> None:
    back = _round_trip(hf_dirs[arch], tmp_path, "--tp", "2")
    original, returned = _hf_tensors(hf_dirs[arch]), _hf_tensors(back)
    assert set(returned) == set(original)
    for name, tensor in original.items():
        assert returned[name].dtype == tensor.dtype, name
        assert torch.equal(returned[name], tensor), name
    index = json.loads((back / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"]) == set(original)
    assert torch.equal(hf_logits(back), hf_logits(hf_dirs[arch]))
    config = json.loads((back / "config.json").read_text())
    source = json.loads((hf_dirs[arch] / "config.json").read_text())
    for key in ("hidden_size", "num_hidden_layers", "num_attention_heads", "vocab_size"):
        assert config[key] == source[key]
    assert (back / "generation_config.json").is_file()


def test_pipeline_and_sharded_output(hf_dirs, tmp_path) -> None:
    back = _round_trip(
        hf_dirs["pythia"], tmp_path, "--tp", "4", "--pp", "3", hf_args=("--max-shard-size", "100KB")
    )
    shards = sorted(back.glob("model-*.safetensors"))
    assert len(shards) > 1 and all(s.stat().st_size < 200_000 for s in shards)
    original, returned = _hf_tensors(hf_dirs["pythia"]), _hf_tensors(back)
    assert set(returned) == set(original)
    assert all(torch.equal(returned[n], t) for n, t in original.items())


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_precision_casts_and_loads(precision, hf_dirs, tmp_path) -> None:
    import transformers

    back = _round_trip(hf_dirs["llama_gqa"], tmp_path, hf_args=("--precision", precision))
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    original, returned = _hf_tensors(hf_dirs["llama_gqa"]), _hf_tensors(back)
    for name, t in original.items():
        assert returned[name].dtype == dtype
        assert torch.equal(returned[name], t.to(dtype)), name
    model = transformers.AutoModelForCausalLM.from_pretrained(back)
    assert model.dtype == dtype


def test_tokenizer_is_written(hf_dirs, tmp_path) -> None:
    import transformers
    from tokenizers import Tokenizer, models, pre_tokenizers

    tok = Tokenizer(models.WordLevel({f"w{i}": i for i in range(96)}, unk_token="w0"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.save(str(tmp_path / "tokenizer.json"))
    back = _round_trip(
        hf_dirs["llama"], tmp_path, hf_args=("--tokenizer", str(tmp_path / "tokenizer.json"))
    )
    loaded = transformers.AutoTokenizer.from_pretrained(back)
    assert loaded("w3 w5")["input_ids"][-2:] == [3, 5]


def test_config_can_come_from_yaml(hf_dirs, tmp_path) -> None:
    """`--config` takes the run's YAML instead of the config.json saved in the checkpoint."""
    neox = tmp_path / "neox"
    assert (
        main(["hf-to-neox", "--hf-model", str(hf_dirs["pythia"]), "--output-dir", str(neox)]) == 0
    )
    out = tmp_path / "back"
    args = ["neox-to-hf", "--input-dir", str(neox), "--output-dir", str(out)]
    assert main([*args, "--config", str(neox / "neox.yml")]) == 0
    original, returned = _hf_tensors(hf_dirs["pythia"]), _hf_tensors(out)
    assert set(returned) == set(original)
    assert all(torch.equal(returned[n], t) for n, t in original.items())
