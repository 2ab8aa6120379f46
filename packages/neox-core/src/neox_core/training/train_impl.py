"""The extension point for training objectives other than next-token prediction.

GPT-NeoX's `train_impl` (`dpo`, `kto`, `rm`; `normal` is built in) selects a plug-in that
supplies the datasets, the model, the loss of one micro-batch and its metrics, while the
loop, precision, optimizer, checkpoints and logging stay neox-core's. Plug-ins are found
through the Python entry-point group `neox.train_impl` (name -> factory taking the config),
so neox-core never imports the package that provides them (neox-posttrain).
"""

from __future__ import annotations

from collections.abc import Callable
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    import torch

    from neox_core.config import NeoxConfig
    from neox_core.data.build import Datasets

ENTRY_POINT_GROUP = "neox.train_impl"
BUILT_IN = "normal"

# forward(model, tokens [B, S]) -> the model's output under the run's autocast
Forward = Callable[["torch.nn.Module", "torch.Tensor"], "torch.Tensor"]


class TrainImplError(RuntimeError):
    """A `train_impl` that no installed plug-in provides."""


@runtime_checkable
class TrainImpl(Protocol):
    """What a plug-in implements; the loop calls these and nothing else of it."""

    name: str

    def build_model(self, cfg: NeoxConfig, seed: int) -> torch.nn.Module:
        """The trained module (a `CausalLM` or one with the same parameter names)."""
        ...

    def build_datasets(self, cfg: NeoxConfig, **kwargs: Any) -> Datasets:
        """train/valid/test datasets of samples (dicts of arrays) for `loss`; `kwargs` are
        `neox_core.data.build_datasets`'s (train_iters, ..., build, barrier, log)."""
        ...

    def checkpoint_module(self, model: torch.nn.Module, finetune: bool) -> torch.nn.Module:
        """The module whose weights a checkpoint load fills (finetune may start from an LM)."""
        ...

    def prepare(
        self, model: torch.nn.Module, cfg: NeoxConfig, device: torch.device, log: Callable
    ) -> None:
        """Called once after the weights are loaded (e.g. to freeze a reference copy)."""
        ...

    def loss(
        self, model: torch.nn.Module, sample: dict[str, torch.Tensor], forward: Forward
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """(loss to minimise, metrics) of one micro-batch; metrics use TRL's names."""
        ...


def available() -> dict[str, Any]:
    """Installed plug-ins: train_impl name -> entry point."""
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def resolve_train_impl(cfg: NeoxConfig) -> TrainImpl | None:
    """The plug-in for `cfg.posttrain.train_impl`; None for GPT-NeoX's `normal` LM training
    without post-training extras (z_loss)."""
    name = cfg.posttrain.train_impl
    if name == BUILT_IN and not cfg.posttrain.z_loss:
        return None
    lookup = "sft" if name == BUILT_IN else name
    found = available()
    if lookup not in found:
        source = cfg.sources.get("posttrain.train_impl", "config")
        what = f"train_impl: {name}" if name != BUILT_IN else "z_loss with train_impl: normal"
        raise TrainImplError(
            f"{source}: {what} needs the neox-posttrain package, which is not installed "
            f"(no '{lookup}' in the entry-point group {ENTRY_POINT_GROUP}; installed: "
            f"{', '.join(sorted(found)) or 'none'}). Install it: `uv sync --all-packages` in "
            "the neox workspace, or `pip install neox-posttrain`"
        )
    factory = found[lookup].load()
    impl = factory(cfg)
    if not isinstance(impl, TrainImpl):
        raise TrainImplError(f"{found[lookup].value}: does not implement neox's TrainImpl")
    return impl
