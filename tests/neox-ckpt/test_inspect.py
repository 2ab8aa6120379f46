"""inspect reports files, tensors (full shapes, norms), parameter count, config and step."""

from __future__ import annotations

import json
import math

import torch
from safetensors.torch import load_file

from neox_ckpt.cli import main


def _hf_params(folder) -> int:
    return sum(t.numel() for t in load_file(folder / "model.safetensors").values())


def test_inspect_neox_json(hf_dirs, tmp_path, capsys) -> None:
    out = tmp_path / "neox"
    hf = hf_dirs["llama_gqa"]
    assert (
        main(
            [
                "hf-to-neox",
                "--hf-model",
                str(hf),
                "--output-dir",
                str(out),
                "--tp",
                "2",
                "--iteration",
                "5",
            ]
        )
        == 0
    )
    capsys.readouterr()
    assert main(["inspect", str(out), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["kind"] == "neox" and info["format_version"] == 3 and info["iteration"] == 5
    assert info["parallel"]["tensor_parallel_size"] == 2
    assert info["num_parameters"] == _hf_params(hf)  # tied head counted once
    assert info["config"]["num_kv_heads"] == 4
    names = {f["path"] for f in info["files"]}
    assert {"model_tp00_pp00.safetensors", "model_tp01_pp00.safetensors", "manifest.json"} <= names
    embed = next(t for t in info["tensors"] if t["name"] == "embed.weight")
    expected = torch.linalg.vector_norm(
        load_file(hf / "model.safetensors")["model.embed_tokens.weight"].double()
    )
    assert embed["shape"] == [96, 64] and math.isclose(embed["norm"], float(expected), rel_tol=1e-9)


def test_inspect_text_and_hf(hf_dirs, capsys) -> None:
    assert main(["inspect", str(hf_dirs["pythia"])]) == 0
    text = capsys.readouterr().out
    assert text.startswith("hf checkpoint:")
    assert f"parameters: {_hf_params(hf_dirs['pythia']):,}" in text
    assert "gpt_neox.layers.0.attention.query_key_value.weight" in text and "norm=" in text
    assert main(["inspect", str(hf_dirs["pythia"] / "model.safetensors"), "--no-norms"]) == 0
    assert "norm=" not in capsys.readouterr().out


def test_inspect_legacy_pt_files(tmp_path, capsys) -> None:
    torch.save(
        {"word_embeddings.weight": torch.ones(4, 2)}, tmp_path / "layer_00-model_00-model_states.pt"
    )
    assert main(["inspect", str(tmp_path), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["kind"] == "gpt-neox-legacy"
    assert info["tensors"][0]["name"] == "word_embeddings.weight"
    assert info["tensors"][0]["norm"] == 8**0.5


def test_help_lists_every_command(capsys) -> None:
    assert main([]) == 0
    text = capsys.readouterr().out
    for cmd in ("hf-to-neox", "neox-to-hf", "reshard", "inspect", "import-gpt-neox"):
        assert cmd in text


def _strict_json(text: str):
    """json.loads refusing NaN/Infinity, which Python writes but JSON does not allow."""

    def refuse(name: str):
        raise ValueError(f"not JSON: {name}")

    return json.loads(text, parse_constant=refuse)


def test_json_has_no_nan_for_integer_or_non_finite_tensors(tmp_path, capsys) -> None:
    torch.save(
        {
            "position_ids": torch.arange(6),
            "mask": torch.ones(3, dtype=torch.bool),
            "broken": torch.tensor([1.0, float("inf")]),
            "nan": torch.tensor([float("nan")], dtype=torch.bfloat16),
            "fine": torch.full((4,), 2.0),
        },
        tmp_path / "mp_rank_00_model_states.pt",
    )
    assert main(["inspect", str(tmp_path), "--json"]) == 0
    info = _strict_json(capsys.readouterr().out)
    norms = {t["name"]: t["norm"] for t in info["tensors"]}
    assert norms == {"position_ids": None, "mask": None, "broken": None, "nan": None, "fine": 4.0}
    assert main(["inspect", str(tmp_path)]) == 0
    text = capsys.readouterr().out
    assert "norm=4" in text and "norm=nan" not in text and "norm=inf" not in text
    broken = next(line for line in text.splitlines() if line.strip().startswith("broken "))
    assert "norm=-" in broken


def test_iteration_picks_that_legacy_step_not_latest(tmp_path, capsys) -> None:
    for step, cols in ((7, 2), (9, 3)):
        (tmp_path / f"global_step{step}").mkdir()
        torch.save(
            {"word_embeddings.weight": torch.ones(4, cols)},
            tmp_path / f"global_step{step}" / "layer_00-model_00-model_states.pt",
        )
    (tmp_path / "latest").write_text("global_step9")
    assert main(["inspect", str(tmp_path), "--json", "--iteration", "7"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["path"] == str(tmp_path / "global_step7")
    assert info["tensors"][0]["shape"] == [4, 2]
    assert main(["inspect", str(tmp_path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["tensors"][0]["shape"] == [4, 3]
    assert main(["inspect", str(tmp_path), "--iteration", "8"]) == 2
    assert str(tmp_path / "global_step8") in capsys.readouterr().err
