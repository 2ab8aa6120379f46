"""The neox YAML config written next to a converted checkpoint, ready for `neox-train`.

It holds the model shape (GPT-NeoX keys), the parallel layout of the checkpoint and
`finetune: true` + `load:` pointing at it; users merge it with their data/training YAML:
`neox-train <output>/neox.yml my_data_and_schedule.yml`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from neox_ckpt.errors import ConversionError

YAML_NAME = "neox.yml"
DEFAULT_SEQ_LENGTH = 2048


def render_yaml(
    model_keys: dict[str, Any],
    *,
    source: str,
    load_dir: Path,
    iteration: int,
    tp: int,
    pp: int,
    dtype: str,
    vocab_file: Path | None,
) -> str:
    lines = [
        f"# neox config written by neox-ckpt for {source}.",
        "# Merge it with your data and training settings:",
        f"#   neox-train {load_dir / YAML_NAME} my_finetune.yml",
        "{",
        "  # parallel layout of the converted checkpoint",
        f'  "model-parallel-size": {tp},',
        f'  "pipe-parallel-size": {pp},',
        "",
        "  # model shape (from the HF config)",
    ]
    for key, value in model_keys.items():
        lines.append(f"  {json.dumps(key.replace('_', '-'))}: {json.dumps(value)},")
    seq = min(int(model_keys["max_position_embeddings"]), DEFAULT_SEQ_LENGTH)
    lines += [
        f'  "seq-length": {seq},',
        f'  "precision": {json.dumps(dtype)},',
        "",
        "  # start from the converted weights with a fresh optimizer and schedule",
        f'  "load": {json.dumps(str(load_dir))},',
        f'  "iteration": {iteration},',
        '  "finetune": true,',
    ]
    if vocab_file is not None:
        lines += [
            "",
            '  "tokenizer-type": "HFTokenizer",',
            f'  "vocab-file": {json.dumps(str(vocab_file))},',
        ]
    lines.append("}")
    return "\n".join(lines) + "\n"


def load_written_yaml(path: Path) -> Any:
    """Load the YAML as neox-train would (at TP/PP 1: neox-core trains on one rank so far)."""
    from neox_core.config import ConfigError, load_config

    try:
        return load_config([path], overrides={"model_parallel_size": 1, "pipe_parallel_size": 1})
    except ConfigError as e:
        raise ConversionError(f"the written config {path} does not load: {e}") from None
