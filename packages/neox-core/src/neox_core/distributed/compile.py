"""`torch.compile` of each decoder layer, applied from outside the model.

Per layer rather than the whole model (as torchtitan does): the layers are identical, so one
compiled graph serves them all and compile time is that of one layer; FSDP2's per-layer
all-gather/reduce-scatter hooks and the activation-checkpoint wrapping sit at layer
boundaries, where a whole-model graph would have to trace through them; and `Module.compile`
compiles in place, so parameter names (and checkpoints) do not change. What runs outside
the layers (embedding, final norm, head and loss) is a few percent of a step.

Compiling also tags torch.compile's on-disk caches with a digest of neox's custom-op sources
(`tag_compile_caches`), so that a neox upgrade or edit does not reuse a stale compiled graph.
"""

from __future__ import annotations

import hashlib
from importlib.util import find_spec
from pathlib import Path

import torch
from torch import nn

# The modules whose custom ops' fake kernels tell torch.compile their outputs' shapes and
# strides. Inductor's caches key a compiled graph on the traced code and the config, not on
# those fake kernels, so a graph cached before one of them changed keeps the old promise (seen
# on an H100, 2026-12-06: a fixed FA4 backward fake kept failing inductor's stride check until
# the cache directory changed). A digest of their sources therefore goes into
# torch.compiler.config.cache_key_tag, which inductor's and AOT autograd's cache keys include.
CUSTOM_OP_PACKAGES = ("neox_kernels.ops",)
CUSTOM_OP_MODULES = ("neox_core.models.flash_attention4",)
_TAG_PREFIX = "neox-ops-"


def compile_enabled(setting: str, device: torch.device) -> bool:
    """The `compile` key: "true", "false", or "auto" (on for CUDA, off for CPU)."""
    if setting == "auto":
        return device.type == "cuda"
    if setting not in ("true", "false"):
        raise ValueError(f"compile {setting!r}: expected true, false or auto")
    return setting == "true"


def custom_op_sources() -> list[Path]:
    """The source files of neox's custom ops, fake kernels included (their packages are imported
    to find them, the modules themselves need not be)."""
    files: list[Path] = []
    for name in (*CUSTOM_OP_PACKAGES, *CUSTOM_OP_MODULES):
        spec = find_spec(name)
        if spec is None or not spec.origin:
            continue
        origin = Path(spec.origin)  # a package's __init__.py, or the module itself
        files += sorted(origin.parent.glob("*.py")) if name in CUSTOM_OP_PACKAGES else [origin]
    return files


def sources_digest(files: list[Path]) -> str:
    """sha256 over the files' names and bytes, first 16 hex digits."""
    h = hashlib.sha256()
    for f in files:
        h.update(f.name.encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def tag_compile_caches() -> str:
    """Put the custom ops' source digest into torch.compile's cache keys (keeping any tag the
    user set, e.g. with TORCH_COMPILE_CACHE_KEY_TAG); returns the whole tag."""
    config = torch.compiler.config
    if not hasattr(config, "cache_key_tag"):  # older torch: nothing to key on
        return ""
    ours = _TAG_PREFIX + sources_digest(custom_op_sources())
    kept = [t for t in config.cache_key_tag.split(",") if t and not t.startswith(_TAG_PREFIX)]
    config.cache_key_tag = ",".join([*kept, ours])
    return config.cache_key_tag


def apply_compile(model: nn.Module, backend: str = "inductor") -> None:
    """Compile each of `model.layers` in place (after TP and activation checkpointing)."""
    tag_compile_caches()
    layers = getattr(model, "layers", None)
    if layers is None:
        raise ValueError(f"{type(model).__name__} has no `layers` to compile")
    for layer in layers:
        layer.compile(dynamic=False, backend=backend)
