"""GPT-NeoX-compatible configuration: typed dataclasses, YAML loading, validation."""

from neox_core.config.errors import ConfigError
from neox_core.config.loader import config_from_dict, config_to_dict, load_config, with_world_size
from neox_core.config.schema import (
    GROUPS,
    CheckpointConfig,
    DataConfig,
    FusionConfig,
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
    "ConfigError",
    "DataConfig",
    "FusionConfig",
    "LauncherConfig",
    "LoggingConfig",
    "ModelConfig",
    "NeoxConfig",
    "OptimizerConfig",
    "ParallelConfig",
    "PrecisionConfig",
    "ScheduleConfig",
    "TrainingConfig",
    "config_from_dict",
    "config_to_dict",
    "load_config",
    "with_world_size",
]
