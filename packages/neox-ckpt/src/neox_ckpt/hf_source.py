"""An HF model folder (local, or downloaded from the hub at a revision), read tensor by tensor.

Weights come from `*.safetensors` (with or without an index) or, for older repositories,
`pytorch_model*.bin` loaded with `torch.load(weights_only=True, mmap=True)`.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from neox_ckpt.errors import ConversionError
from neox_ckpt.safetensors_stream import SafetensorsReader, TensorEntry
from neox_ckpt.torch_files import load_weights_only

TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "tokenizer.model",
    "vocab.json",
    "merges.txt",
    "added_tokens.json",
    "chat_template.jinja",
)
_HUB_PATTERNS = ["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja"]


def resolve_model_dir(name_or_path: str, revision: str | None = None) -> Path:
    """A local folder as is; otherwise a hub snapshot of `revision` (branch, tag or commit)."""
    local = Path(name_or_path).expanduser()
    if local.is_dir():
        if revision is not None:
            raise ConversionError(
                f"--revision {revision} applies to hub models; {local} is a local folder"
            )
        return local
    if local.exists() or name_or_path.startswith((".", "/", "~")):
        raise ConversionError(f"--hf-model {name_or_path}: not a folder")
    from huggingface_hub import snapshot_download
    from huggingface_hub.utils import HfHubHTTPError

    try:
        folder = snapshot_download(
            repo_id=name_or_path, revision=revision, allow_patterns=_HUB_PATTERNS
        )
    except (HfHubHTTPError, OSError, ValueError) as e:
        raise ConversionError(f"--hf-model {name_or_path} (revision {revision}): {e}") from None
    folder_path = Path(folder)
    if not any(folder_path.glob("*.safetensors")):  # old repositories ship only .bin files
        folder = snapshot_download(
            repo_id=name_or_path,
            revision=revision,
            allow_patterns=[*_HUB_PATTERNS, "pytorch_model*.bin"],
        )
        folder_path = Path(folder)
    return folder_path


class HFSource:
    """Names, dtypes and shapes of an HF checkpoint's tensors, and each tensor on demand."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        cfg = self.folder / "config.json"
        if not cfg.is_file():
            raise ConversionError(f"{self.folder}: no config.json; not an HF model folder")
        try:
            self.config: dict = json.loads(cfg.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise ConversionError(f"{cfg}: not valid JSON ({e})") from None
        self._readers: dict[str, SafetensorsReader] = {}
        self._where: dict[str, str] = {}  # tensor name -> file name
        self._bin: dict[str, dict[str, torch.Tensor]] = {}
        files = self._weight_files()
        for fname in files:
            path = self.folder / fname
            if fname.endswith(".safetensors"):
                reader = SafetensorsReader(path)
                self._readers[fname] = reader
                for n in reader.entries:
                    self._where[n] = fname
            else:
                state = _load_bin(path)
                self._bin[fname] = state
                for n in state:
                    self._where[n] = fname

    def _weight_files(self) -> list[str]:
        for index_name, single in (
            ("model.safetensors.index.json", "model.safetensors"),
            ("pytorch_model.bin.index.json", "pytorch_model.bin"),
        ):
            index = self.folder / index_name
            if index.is_file():
                try:
                    weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
                except (json.JSONDecodeError, KeyError) as e:
                    raise ConversionError(f"{index}: not an HF weight index ({e})") from None
                files = sorted(set(weight_map.values()))
                missing = [f for f in files if not (self.folder / f).is_file()]
                if missing:
                    raise ConversionError(f"{index} names missing files: {missing}")
                return files
            if (self.folder / single).is_file():
                return [single]
        raise ConversionError(
            f"{self.folder}: no model.safetensors(.index.json) or pytorch_model.bin(.index.json)"
        )

    def names(self) -> list[str]:
        return list(self._where)

    def __contains__(self, name: object) -> bool:
        return name in self._where

    def meta(self, name: str) -> torch.Tensor:
        """A tensor of the right dtype and shape on the meta device (no data read)."""
        fname = self._where[name]
        if fname in self._readers:
            e: TensorEntry = self._readers[fname].entries[name]
            return torch.empty(e.shape, dtype=e.dtype, device="meta")
        t = self._bin[fname][name]
        return torch.empty(t.shape, dtype=t.dtype, device="meta")

    def read(self, name: str) -> torch.Tensor:
        if name not in self._where:
            raise ConversionError(f"{self.folder}: no tensor {name!r}")
        fname = self._where[name]
        if fname in self._readers:
            return self._readers[fname].read(name)
        return self._bin[fname][name].clone()


def _load_bin(path: Path) -> dict[str, torch.Tensor]:
    state = load_weights_only(path)  # memory-mapped, or read whole for pre-zip files
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConversionError(f"{path}: expected a dict of tensors")
    return state
