"""Where this process runs: rank and world from torchrun/srun variables, and its device."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from neox_core.distributed.nccl_report import capture_nccl_info, describe, transport_line

_NCCL_INFO: Path | None = None  # where this process's NCCL info lines are being captured


@dataclass(frozen=True)
class LaunchEnv:
    rank: int
    world_size: int
    local_rank: int
    master_addr: str | None
    master_port: int | None

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def _int(env: Mapping[str, str], *keys: str, default: int) -> int:
    for key in keys:
        if env.get(key, "") != "":
            try:
                return int(env[key])
            except ValueError:
                raise ValueError(
                    f"environment variable {key}={env[key]!r} is not an integer"
                ) from None
    return default


def read_launch_env(env: Mapping[str, str] | None = None) -> LaunchEnv:
    """torchrun sets RANK/WORLD_SIZE/LOCAL_RANK; srun sets SLURM_PROCID/NTASKS/LOCALID."""
    env = os.environ if env is None else env
    port = env.get("MASTER_PORT")
    return LaunchEnv(
        rank=_int(env, "RANK", "SLURM_PROCID", default=0),
        world_size=_int(env, "WORLD_SIZE", "SLURM_NTASKS", default=1),
        local_rank=_int(env, "LOCAL_RANK", "SLURM_LOCALID", default=0),
        master_addr=env.get("MASTER_ADDR"),
        master_port=int(port) if port else None,
    )


class LaunchError(RuntimeError):
    """The processes started do not fit the devices this node shows them."""


def pick_device(launch: LaunchEnv, env: Mapping[str, str] | None = None) -> torch.device:
    """CUDA device `local_rank` if CUDA is present, else the CPU.

    srun with one GPU per task shows each process its own device as cuda:0, so the local rank
    wraps round the visible devices. torchrun starts LOCAL_WORLD_SIZE processes that all see the
    same devices: more of them than GPUs would share one, which NCCL refuses deep inside its
    first collective ("invalid usage"), so that is an error here, before the process group.
    """
    env = os.environ if env is None else env
    if torch.cuda.is_available():
        n = torch.cuda.device_count()
        local_world = _int(env, "LOCAL_WORLD_SIZE", default=0)
        if local_world > n:
            raise LaunchError(
                f"{local_world} processes on this node (LOCAL_WORLD_SIZE) but {n} CUDA "
                f"device(s) visible: start one process per GPU (torchrun --nproc-per-node {n}), "
                "or hide the GPUs (CUDA_VISIBLE_DEVICES=) to train on the CPU with gloo"
            )
        device = torch.device("cuda", launch.local_rank % n)
        torch.cuda.set_device(device)
        return device
    return torch.device("cpu")


def init_process_group(launch: LaunchEnv, device: torch.device) -> None:
    """Join the process group when launched with more than one process (NCCL or gloo).

    Under NCCL, NCCL's own account of its transports is captured for `nccl_transport_line`
    (distributed/nccl_report.py) unless the user set NCCL_DEBUG.
    """
    global _NCCL_INFO
    if not launch.distributed or torch.distributed.is_initialized():
        return
    if launch.master_addr is None:
        raise ValueError("WORLD_SIZE > 1 but MASTER_ADDR is not set (launch with torchrun or srun)")
    os.environ.setdefault("MASTER_PORT", "29500")
    if device.type == "cuda":
        _NCCL_INFO = capture_nccl_info()
    torch.distributed.init_process_group(
        backend="nccl" if device.type == "cuda" else "gloo",
        rank=launch.rank,
        world_size=launch.world_size,
    )


def nccl_transport_line(device: torch.device) -> str | None:
    """After the first NCCL collective (a barrier, every rank must call this), the log line
    saying which network and links NCCL chose; None without NCCL."""
    global _NCCL_INFO
    dist = torch.distributed
    if device.type != "cuda" or not dist.is_initialized() or dist.get_backend() != "nccl":
        return None
    dist.barrier(device_ids=[device.index])
    version = ".".join(map(str, torch.cuda.nccl.version()))
    if _NCCL_INFO is None:
        return describe(version, None, dict(os.environ))
    folder, _NCCL_INFO = _NCCL_INFO, None
    return transport_line(folder, version)
