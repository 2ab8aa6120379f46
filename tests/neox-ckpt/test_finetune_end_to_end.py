"""The written neox.yml is what `neox-train` finetunes from: HF -> neox -> a few training steps
on the tiny example corpus -> HF again, loadable by transformers with the tokenizer."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import torch

from neox_ckpt.cli import main

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "examples" / "tiny"


def test_hf_model_finetunes_with_neox_train_and_exports(tmp_path) -> None:
    import transformers

    hf = tmp_path / "hf"
    config = transformers.GPTNeoXConfig(
        vocab_size=640,  # the 633-token tiny tokenizer padded as Pythia pads (to 128s)
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
    assert main(["hf-to-neox", "--hf-model", str(hf), "--output-dir", str(tmp_path / "neox")]) == 0
    (tmp_path / "train.yml").write_text(
        "{\n"
        f'  "data-path": "{data / "t"}", "split": "949,50,1", "num-workers": 0,\n'
        '  "seq-length": 64, "train_micro_batch_size_per_gpu": 8, "train-iters": 2,\n'
        '  "optimizer": {"type": "Adam", "params": {"lr": 0.001}},\n'
        '  "eval-interval": 100, "eval-iters": 5, "log-interval": 1,\n'
        f'  "save": "{tmp_path / "run"}", "checkpoint-factor": 2,\n'
        "}\n"
    )
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "neox_core.cli",
            str(tmp_path / "neox" / "neox.yml"),
            str(tmp_path / "train.yml"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "loaded weights from" in done.stdout + done.stderr
    out = tmp_path / "back"
    rc = main(
        [
            "neox-to-hf",
            "--input-dir",
            str(tmp_path / "run"),
            "--output-dir",
            str(out),
            "--tokenizer",
            str(hf / "tokenizer.json"),
        ]
    )
    assert rc == 0
    model = transformers.AutoModelForCausalLM.from_pretrained(out)
    tokenizer = transformers.AutoTokenizer.from_pretrained(out)
    assert model.config.vocab_size == 640 and len(tokenizer) == 633
