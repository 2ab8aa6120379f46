"""GPT-NeoX-compatible configuration: typed dataclasses, YAML loading, validation."""

from neox_core.config.schema import (
    GROUPS,
    CheckpointConfig,
    DataConfig,
    LauncherConfig,
    LoggingConfig,
    ModelConfig,
    NeoxConfig,
    OptimizerConfig,
    ParallelConfig,
    PrecisionConfig,
    ScheduleConfig,
    TrainingConfig,
)

__all__ = [
    "GROUPS",
    "CheckpointConfig",
    "DataConfig",
    "LauncherConfig",
    "LoggingConfig",
    "ModelConfig",
    "NeoxConfig",
    "OptimizerConfig",
    "ParallelConfig",
    "PrecisionConfig",
    "ScheduleConfig",
    "TrainingConfig",
]
