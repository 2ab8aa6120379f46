"""neox checkpoint format v3: `<save>/global_step<N>/` + `latest`, safetensors + JSON."""

from neox_core.checkpoint.checkpointer import Checkpointer, unwrap_model
from neox_core.checkpoint.errors import DamagedCheckpointError
from neox_core.checkpoint.integrity import VERIFY_MODES, file_problems, file_records
from neox_core.checkpoint.layout import FORMAT_VERSION, list_step_dirs, step_dir_name
from neox_core.checkpoint.load import (
    CheckpointError,
    LoadedCheckpoint,
    load_checkpoint,
    load_model_weights,
    newest_usable_step,
    read_manifest,
    read_shard_infos,
    resolve_checkpoint_dir,
)
from neox_core.checkpoint.retention import delete_old_checkpoints, is_save_iteration
from neox_core.checkpoint.rng import capture_rng_state
from neox_core.checkpoint.save import Ranks, save_checkpoint
from neox_core.checkpoint.sharding import ShardInfo, shard_infos, tp_split_dim

__all__ = [
    "FORMAT_VERSION",
    "VERIFY_MODES",
    "CheckpointError",
    "Checkpointer",
    "DamagedCheckpointError",
    "LoadedCheckpoint",
    "Ranks",
    "ShardInfo",
    "capture_rng_state",
    "delete_old_checkpoints",
    "file_problems",
    "file_records",
    "is_save_iteration",
    "list_step_dirs",
    "load_checkpoint",
    "load_model_weights",
    "newest_usable_step",
    "read_manifest",
    "read_shard_infos",
    "resolve_checkpoint_dir",
    "save_checkpoint",
    "shard_infos",
    "step_dir_name",
    "tp_split_dim",
    "unwrap_model",
]
