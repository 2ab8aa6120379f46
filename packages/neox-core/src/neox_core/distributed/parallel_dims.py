"""The process layout (data x tensor x pipeline parallel) and its validation, without torch.

GPT-NeoX's rules: world size = TP x PP x DP; the tensor-parallel size must split the attention
heads, the kv heads (or be a multiple of them: kv heads are then replicated, as Megatron does),
the MLP width and the padded vocabulary. Every violation is a ConfigError naming the keys and
numbers; it is raised while the config loads (so `neox-train --dry-run` reports it) and again
with the real world size at launch, before any model memory is allocated.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from neox_core.config.errors import ConfigError

if TYPE_CHECKING:
    from neox_core.config.schema import NeoxConfig


def _src(cfg: NeoxConfig, keys: dict[str, str] | None, dotted: str, key: str) -> str:
    source = cfg.sources.get(dotted, "default")
    return f"{source}: {(keys or {}).get(dotted, key)}"


def check_model_split(cfg: NeoxConfig, keys: dict[str, str] | None = None) -> None:
    """The model's shapes split evenly over `model_parallel_size` ranks (no world size needed)."""
    tp = cfg.parallel.tensor_parallel_size
    if tp <= 1:
        return
    m = cfg.model
    tp_where = _src(cfg, keys, "parallel.tensor_parallel_size", "model_parallel_size")
    heads, kv = m.num_attention_heads, m.num_kv_heads or m.num_attention_heads
    if heads % tp:
        raise ConfigError(
            f"{tp_where} = {tp} does not divide num_attention_heads = {heads} "
            f"({_src(cfg, keys, 'model.num_attention_heads', 'num_attention_heads')})"
        )
    if kv % tp and tp % kv:
        raise ConfigError(
            f"{tp_where} = {tp} neither divides num_kv_heads = {kv} nor is a multiple of it "
            f"({_src(cfg, keys, 'model.num_kv_heads', 'num_kv_heads')})"
        )
    head_dim = m.hidden_size // heads
    if tp > kv and (kv * head_dim) % tp:
        raise ConfigError(
            f"{tp_where} = {tp} > num_kv_heads = {kv}: the {kv} x {head_dim} key/value rows "
            f"(num_kv_heads x hidden_size / num_attention_heads) must split into {tp} equal parts"
        )
    inter = m.intermediate_size
    if inter is not None and inter % tp:
        raise ConfigError(
            f"{tp_where} = {tp} does not divide the MLP width intermediate_size = {inter} "
            f"({_src(cfg, keys, 'model.intermediate_size', 'intermediate_size')})"
        )
    padded = m.padded_vocab_size
    if padded is not None and padded % tp:
        raise ConfigError(
            f"{tp_where} = {tp} does not divide padded_vocab_size = {padded} "
            f"({_src(cfg, keys, 'model.padded_vocab_size', 'padded_vocab_size')}); pad it to a "
            f"multiple of make_vocab_size_divisible_by x model_parallel_size"
        )
    if cfg.parallel.sequence_parallel and cfg.data.seq_length % tp:
        raise ConfigError(
            f"{_src(cfg, keys, 'parallel.sequence_parallel', 'sequence_parallel')} = true needs "
            f"seq_length = {cfg.data.seq_length} divisible by model_parallel_size = {tp}"
        )


@dataclass(frozen=True)
class ParallelDims:
    """How many ranks each kind of parallelism spans; `dp * tp * pp == world_size`."""

    dp: int
    tp: int
    pp: int = 1

    @property
    def world_size(self) -> int:
        return self.dp * self.tp * self.pp

    @property
    def dp_enabled(self) -> bool:
        return self.dp > 1

    @property
    def tp_enabled(self) -> bool:
        return self.tp > 1

    @classmethod
    def from_config(cls, cfg: NeoxConfig, world_size: int) -> ParallelDims:
        """The layout for `world_size` processes; a ConfigError names what does not fit."""
        p = cfg.parallel
        tp, pp = p.tensor_parallel_size, p.pipe_parallel_size
        if world_size < 1:
            raise ConfigError(f"world size {world_size} must be positive")
        if world_size % (tp * pp):
            raise ConfigError(
                f"world size {world_size} is not divisible by model_parallel_size x "
                f"pipe_parallel_size = {tp} x {pp}: the layout pipe x data x model parallel "
                f"must multiply to the world size "
                f"({_src(cfg, None, 'parallel.tensor_parallel_size', 'model_parallel_size')})"
            )
        dp = world_size // (tp * pp)
        given = cfg.sources.get("parallel.data_parallel_size", "default")
        if given not in ("default", "derived") and p.data_parallel_size != dp:
            raise ConfigError(
                f"{given}: data_parallel_size = {p.data_parallel_size} but world size "
                f"{world_size} / (model_parallel_size {tp} x pipe_parallel_size {pp}) = {dp}"
            )
        check_model_split(cfg)
        from neox_core.distributed.pipeline_partition import check_pipeline

        check_pipeline(cfg)
        return cls(dp=dp, tp=tp, pp=pp)

    def describe(self) -> str:
        text = f"world {self.world_size} = data-parallel {self.dp} x tensor-parallel {self.tp}"
        return text + (f" x pipeline-parallel {self.pp}" if self.pp > 1 else "")
