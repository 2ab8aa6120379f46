"""reshard is driven by shard metadata alone: 2 -> 4 -> 1 gives the TP-1 tensors bit for bit."""

from __future__ import annotations

import pytest
import torch

from neox_ckpt.cli import main
from neox_ckpt.neox_reader import NeoxCheckpoint
from neox_ckpt.safetensors_stream import SafetensorsReader


def _files(step) -> dict[str, dict[str, torch.Tensor]]:
    out = {}
    for f in sorted(step.glob("model_*.safetensors")):
        r = SafetensorsReader(f)
        out[f.name] = {n: r.read(n) for n in r.entries}
    return out


@pytest.mark.parametrize("arch", ["llama_gqa", "pythia"])
def test_reshard_2_4_1_is_bit_identical(arch, hf_dirs, tmp_path) -> None:
    hf = str(hf_dirs[arch])
    assert main(["hf-to-neox", "--hf-model", hf, "--output-dir", str(tmp_path / "tp1")]) == 0
    assert (
        main(["hf-to-neox", "--hf-model", hf, "--output-dir", str(tmp_path / "tp2"), "--tp", "2"])
        == 0
    )
    assert (
        main(["reshard", str(tmp_path / "tp2"), "--output-dir", str(tmp_path / "tp4"), "--tp", "4"])
        == 0
    )
    assert (
        main(
            ["reshard", str(tmp_path / "tp4"), "--output-dir", str(tmp_path / "back"), "--tp", "1"]
        )
        == 0
    )
    direct2 = _files(tmp_path / "tp2" / "global_step0")
    direct1 = _files(tmp_path / "tp1" / "global_step0")
    back = _files(tmp_path / "back" / "global_step0")
    assert set(back) == set(direct1) == {"model_tp00_pp00.safetensors"}
    for name, t in direct1["model_tp00_pp00.safetensors"].items():
        assert torch.equal(back["model_tp00_pp00.safetensors"][name], t), name
    # the TP-4 pieces are the TP-2 pieces cut in two (per fused block where there are blocks)
    four = NeoxCheckpoint(tmp_path / "tp4")
    assert four.tp == 4
    for name in direct2["model_tp00_pp00.safetensors"]:
        assert torch.equal(four.read_full(name), direct1["model_tp00_pp00.safetensors"][name])
    config = four.config()
    assert config["parallel"]["tensor_parallel_size"] == 4


def test_reshard_pipeline_stages(hf_dirs, tmp_path, neox_logits, hf_logits) -> None:
    hf = str(hf_dirs["neox_seq_tied"])
    assert main(["hf-to-neox", "--hf-model", hf, "--output-dir", str(tmp_path / "a")]) == 0
    assert (
        main(
            [
                "reshard",
                str(tmp_path / "a"),
                "--output-dir",
                str(tmp_path / "b"),
                "--tp",
                "2",
                "--pp",
                "3",
            ]
        )
        == 0
    )
    ck = NeoxCheckpoint(tmp_path / "b")
    assert (ck.tp, ck.pp) == (2, 3)
    assert ck.tensors["layers.0.attention.qkv.weight"].stages == [0]
    assert ck.tensors["layers.2.attention.qkv.weight"].stages == [2]
    assert ck.tensors["embed.weight"].stages == [0, 2]  # tied head: a copy on the last stage
    assert ck.tensors["final_norm.weight"].stages == [2]
    diff = (neox_logits(tmp_path / "b") - hf_logits(hf_dirs["neox_seq_tied"])).abs().max()
    assert diff < 1e-5


def test_reshard_refuses_a_split_that_cuts_heads(hf_dirs, tmp_path, capsys) -> None:
    hf = str(hf_dirs["llama_gqa"])
    assert main(["hf-to-neox", "--hf-model", hf, "--output-dir", str(tmp_path / "a")]) == 0
    rc = main(["reshard", str(tmp_path / "a"), "--output-dir", str(tmp_path / "b"), "--tp", "3"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "--tp 3 does not divide num_attention_heads 8" in err
    assert not (tmp_path / "b").exists()
