"""Output directories: refused when non-empty without --force, replaced atomically with it,
and never left half-written when a conversion fails. Unsupported models fail with the key."""

from __future__ import annotations

import json
import shutil

import pytest

from neox_ckpt.cli import main


def test_non_empty_output_is_refused_without_force(hf_dirs, tmp_path, capsys) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    rc = main(["hf-to-neox", "--hf-model", str(hf_dirs["llama"]), "--output-dir", str(out)])
    assert rc == 2
    err = capsys.readouterr().err
    assert "not empty" in err and "--force" in err
    assert (out / "precious.txt").read_text() == "keep me"
    assert (
        main(
            ["hf-to-neox", "--hf-model", str(hf_dirs["llama"]), "--output-dir", str(out), "--force"]
        )
        == 0
    )
    assert not (out / "precious.txt").exists()
    assert (out / "latest").is_file()
    assert not list(tmp_path.glob(".tmp-*")) and not list(tmp_path.glob(".old-*"))


def test_failed_conversion_leaves_no_output(hf_dirs, tmp_path, capsys) -> None:
    src = tmp_path / "hf"
    shutil.copytree(hf_dirs["llama"], src)
    cfg = json.loads((src / "config.json").read_text())
    cfg["rope_scaling"] = {
        "rope_type": "llama3",
        "factor": 8.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 32,
    }
    cfg.pop("rope_parameters", None)
    (src / "config.json").write_text(json.dumps(cfg))
    rc = main(["hf-to-neox", "--hf-model", str(src), "--output-dir", str(tmp_path / "out")])
    assert rc == 2
    err = capsys.readouterr().err
    assert "config.json" in err and "llama3" in err
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".tmp-*"))


def test_weights_without_a_place_in_the_model_fail_the_conversion(
    hf_dirs, tmp_path, capsys
) -> None:
    from safetensors.torch import load_file, save_file

    src = tmp_path / "hf"
    shutil.copytree(hf_dirs["llama"], src)
    state = load_file(src / "model.safetensors")
    state["model.layers.0.self_attn.q_norm.weight"] = state["model.norm.weight"].clone()
    save_file(state, src / "model.safetensors", metadata={"format": "pt"})
    rc = main(["hf-to-neox", "--hf-model", str(src), "--output-dir", str(tmp_path / "out")])
    assert rc == 2
    assert "q_norm" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"model_type": "qwen2"}, "model_type 'qwen2'"),
        ({"hidden_act": "gelu_new"}, "hidden_act 'gelu_new'"),
    ],
)
def test_unsupported_configs_name_the_key(change, message, hf_dirs, tmp_path, capsys) -> None:
    src = tmp_path / "hf"
    shutil.copytree(hf_dirs["pythia"], src)
    cfg = json.loads((src / "config.json").read_text())
    cfg.update(change)
    (src / "config.json").write_text(json.dumps(cfg))
    assert main(["hf-to-neox", "--hf-model", str(src), "--output-dir", str(tmp_path / "o")]) == 2
    assert message in capsys.readouterr().err


def test_missing_hf_folder_and_bad_checkpoint(tmp_path, capsys) -> None:
    assert (
        main(
            [
                "hf-to-neox",
                "--hf-model",
                str(tmp_path / "nope"),
                "--output-dir",
                str(tmp_path / "o"),
            ]
        )
        == 2
    )
    assert "not a folder" in capsys.readouterr().err
    (tmp_path / "ck").mkdir()
    assert (
        main(
            ["neox-to-hf", "--input-dir", str(tmp_path / "ck"), "--output-dir", str(tmp_path / "o")]
        )
        == 2
    )
    assert "latest" in capsys.readouterr().err


def test_truncated_shard_is_detected(hf_dirs, tmp_path, capsys) -> None:
    out = tmp_path / "neox"
    assert main(["hf-to-neox", "--hf-model", str(hf_dirs["llama"]), "--output-dir", str(out)]) == 0
    shard = out / "global_step0" / "model_tp00_pp00.safetensors"
    shard.write_bytes(shard.read_bytes()[:-10])
    assert main(["neox-to-hf", "--input-dir", str(out), "--output-dir", str(tmp_path / "o")]) == 2
    assert "truncated" in capsys.readouterr().err
