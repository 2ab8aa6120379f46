"""HF -> `neox-ckpt hf-to-neox --tp 2` -> `torchrun --nproc-per-node 2 --no-python neox-train
neox.yml finetune.yml` -> `neox-ckpt neox-to-hf` -> transformers, as the README shows.

The same fine-tune on one process (the TP-2 checkpoint resharded on load to TP 1) gives the
same exported weights within 1e-4 relative, so the export is the TP-2 training's result and
not the untouched conversion.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from neox_ckpt.cli import main

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "examples" / "tiny"


def _train(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    bin_dir = str(Path(sys.executable).parent)
    env = dict(
        os.environ,
        PATH=bin_dir + os.pathsep + os.environ.get("PATH", ""),
        OMP_NUM_THREADS="1",
        CUDA_VISIBLE_DEVICES="",
    )
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=cwd, env=env)


def test_hf_to_tp2_finetune_to_hf(tmp_path: Path) -> None:
    import transformers
    from safetensors.torch import load_file

    hf = tmp_path / "hf"
    config = transformers.GPTNeoXConfig(
        vocab_size=768,  # the 633-token tiny tokenizer padded to a multiple of 128 x TP 2
        hidden_size=64,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=64,
        rotary_pct=0.25,
    )
    torch.manual_seed(0)
    transformers.GPTNeoXForCausalLM(config).save_pretrained(hf)
    shutil.copyfile(TINY / "tokenizer.json", hf / "tokenizer.json")
    data = tmp_path / "data"
    data.mkdir()
    for suffix in (".bin", ".idx"):
        shutil.copyfile(TINY / "data" / f"tiny_text_document{suffix}", data / f"t{suffix}")
    neox = tmp_path / "neox"
    assert main(["hf-to-neox", "--hf-model", str(hf), "--output-dir", str(neox), "--tp", "2"]) == 0
    assert (neox / "neox.yml").is_file()
    exported = {}
    for name, launch in (
        ("tp2", [sys.executable, "-m", "torch.distributed.run", "--standalone",
                 "--nproc-per-node", "2", "--no-python", "neox-train"]),
        ("tp1", ["neox-train"]),
    ):  # fmt: skip
        tp = 2 if name == "tp2" else 1
        (tmp_path / f"{name}.yml").write_text(
            "{\n"
            f'  "data-path": "{data / "t"}", "split": "949,50,1", "num-workers": 0,\n'
            f'  "model-parallel-size": {tp},\n'
            '  "seq-length": 64, "train_micro_batch_size_per_gpu": 4, "train-iters": 3,\n'
            '  "optimizer": {"type": "Adam", "params": {"lr": 0.001}},\n'
            '  "eval-interval": 100, "eval-iters": 2, "log-interval": 1,\n'
            f'  "save": "{tmp_path / name}", "checkpoint-factor": 3,\n'
            "}\n"
        )
        done = _train([*launch, str(neox / "neox.yml"), str(tmp_path / f"{name}.yml")], tmp_path)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        assert "loaded weights from" in done.stdout
        if name == "tp2":
            ckpt = tmp_path / "tp2" / "global_step3"
            assert (ckpt / "model_tp00_pp00.safetensors").is_file()
            assert (ckpt / "model_tp01_pp00.safetensors").is_file()
        out = tmp_path / f"{name}_hf"
        assert (
            main(["neox-to-hf", "--input-dir", str(tmp_path / name), "--output-dir", str(out),
                  "--tokenizer", str(hf / "tokenizer.json")])
            == 0
        )  # fmt: skip
        model = transformers.AutoModelForCausalLM.from_pretrained(out)
        assert model.config.vocab_size == 768
        ids = torch.tensor([[1, 2, 3, 4, 5]])
        assert torch.isfinite(model(ids).logits).all()
        exported[name] = load_file(str(next(out.glob("*.safetensors"))))
    original = load_file(str(next(hf.glob("*.safetensors"))))
    moved = 0
    for key, t2 in exported["tp2"].items():
        t1 = exported["tp1"][key]
        assert torch.allclose(t2, t1, rtol=1e-4, atol=1e-5), key
        if key in original and not torch.equal(original[key], t2):
            moved += 1
    assert moved > len(exported["tp2"]) // 2  # the fine-tune changed the weights
