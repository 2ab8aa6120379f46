"""`neox-train`'s training entry: set a run up from the config, train, save, exit.

`main_train(cfg)` is what `neox_core.cli` calls. It returns the process exit code: 0 when
training finished or stopped cleanly on SIGTERM/SIGUSR1 (after saving), 1 on a NaN stop.
"""

from __future__ import annotations

import random
import sys
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from neox_core.checkpoint import (
    CheckpointError,
    Ranks,
    capture_rng_state,
    delete_old_checkpoints,
    layout,
    load_checkpoint,
    resolve_checkpoint_dir,
    save_checkpoint,
)
from neox_core.checkpoint.sharding import fused_tp_blocks
from neox_core.config import NeoxConfig, config_to_dict, with_world_size
from neox_core.evaluation.during_training import build_training_harness
from neox_core.training.launch import LaunchEnv, init_process_group, pick_device, read_launch_env
from neox_core.training.loop import Loop, run_eval, train
from neox_core.training.optimizer import build_optimizer
from neox_core.training.precision import DynamicLossScaler, StaticLossScaler
from neox_core.training.schedules import build_schedule
from neox_core.training.signals import StopRequest
from neox_core.training.state import Progress
from neox_core.training.step import NonFiniteLossError, StepSettings
from neox_core.training.throughput import (
    H100_BF16_PEAK_FLOPS,
    flops_per_token,
    non_embedding_params,
)
from neox_core.training.trackers import TrackerError, Trackers
from neox_core.training.train_impl import TrainImplError, resolve_train_impl


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def config_file_texts(cfg: NeoxConfig) -> dict[str, str]:
    """The YAML files the config came from (named in `cfg.sources`), read now, by name."""
    files: dict[str, str] = {}
    for source in cfg.sources.values():
        path = source.rsplit(":", 1)[0] if ":" in source else None
        if path and path not in files and Path(path).is_file():
            files[path] = Path(path).read_text(encoding="utf-8")
    return {Path(p).name: text for p, text in files.items()}


def _make_logger(rank: int):
    def log(msg: str) -> None:
        if rank == 0:
            print(msg, flush=True)

    return log


def _reduce_mean(launch: LaunchEnv):
    if not launch.distributed:
        return lambda x: x

    def reduce(x: float) -> float:
        t = torch.tensor([x], dtype=torch.float64)
        if torch.distributed.get_backend() == "nccl":
            t = t.cuda()
        torch.distributed.all_reduce(t)
        return float(t.item()) / launch.world_size

    return reduce


def _reduce_step(launch: LaunchEnv):
    """The step's mean loss and whether any rank was asked to stop, in one all-reduce."""
    if not launch.distributed:
        return lambda loss, stop: (loss, stop)

    def reduce(loss: float, stop: bool) -> tuple[float, bool]:
        t = torch.tensor([loss, float(stop)], dtype=torch.float64)
        if torch.distributed.get_backend() == "nccl":
            t = t.cuda()
        torch.distributed.all_reduce(t)  # a sum: any rank's 1 makes the flag positive
        total, stops = t.tolist()
        return total / launch.world_size, stops > 0

    return reduce


def _gather_rng_states(launch: LaunchEnv, device: torch.device):
    """Every rank's RNG state (its own device's CUDA state only), for rank 0 to save.

    all_gather_object rather than gather_object: with gather_object, gloo aborted at exit
    ("terminate called without an active exception") in about 1 run of 4 here.
    """
    if not launch.distributed:
        return None
    gathered: list = [None] * launch.world_size
    torch.distributed.all_gather_object(gathered, capture_rng_state(device))
    return dict(enumerate(gathered)) if launch.rank == 0 else None


def main_train(cfg: NeoxConfig, args: Any = None) -> int:
    """Train as configured; see the module docstring for the exit codes."""
    launch = read_launch_env()
    log = _make_logger(launch.rank)
    device = pick_device(launch)
    init_process_group(launch, device)
    if launch.world_size > 1 or cfg.parallel.data_parallel_size != 1:
        cfg = with_world_size(cfg, launch.world_size)
    stop = StopRequest().install()
    try:
        return _run(cfg, launch, device, stop, log)
    except NonFiniteLossError as e:
        print(f"neox-train: stopping: {e}", file=sys.stderr, flush=True)
        return 1
    except (TrackerError, TrainImplError) as e:
        print(f"neox-train: error: {e}", file=sys.stderr, flush=True)
        return 2
    finally:
        stop.uninstall()
        if launch.distributed and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def _run(cfg: NeoxConfig, launch: LaunchEnv, device: torch.device, stop: StopRequest, log) -> int:
    from neox_core.data import build_datasets, make_loader
    from neox_core.models import build_model

    t, ck, m = cfg.training, cfg.checkpoint, cfg.model
    dp = launch.world_size // (cfg.parallel.tensor_parallel_size * cfg.parallel.pipe_parallel_size)
    train_batch_size = t.train_batch_size or t.micro_batch_size * t.gradient_accumulation_steps * dp
    seed_everything(t.seed)

    impl = resolve_train_impl(cfg)  # None: next-token prediction; else a neox.train_impl plug-in
    model = (
        impl.build_model(cfg, t.seed) if impl else build_model(m, seed=t.seed, dtype="fp32")
    ).to(device)
    n_params = sum(p.numel() for p in model.parameters())
    optimizer = build_optimizer(
        model,
        type=cfg.optimizer.type,
        lr=cfg.optimizer.lr,
        betas=cfg.optimizer.betas,
        eps=cfg.optimizer.eps,
        weight_decay=cfg.optimizer.weight_decay,
    )
    schedule = build_schedule(
        lr=cfg.optimizer.lr,
        min_lr=cfg.schedule.min_lr,
        warmup=cfg.schedule.warmup,
        lr_decay_iters=cfg.schedule.lr_decay_iters,
        train_iters=t.train_iters,
        decay_style=cfg.schedule.lr_decay_style,
    )
    pr = cfg.precision
    scaler: DynamicLossScaler | StaticLossScaler | None = None
    if pr.dtype == "fp16":
        scaler = (
            DynamicLossScaler.from_config(
                pr.initial_scale_power, pr.loss_scale_window, pr.hysteresis, pr.min_loss_scale
            )
            if not pr.loss_scale
            else StaticLossScaler(float(pr.loss_scale))
        )

    progress = Progress()
    if ck.load:
        loaded = impl.checkpoint_module(model, ck.finetune) if impl else model
        progress = _load(cfg, loaded, optimizer, schedule, scaler, log, launch.rank)
    if impl:
        impl.prepare(model, cfg, device, log)
    schedule.apply(optimizer)

    log(f" > model: {m.architecture}, {n_params:,} parameters, {pr.dtype} on {device}")
    if ck.save:
        log(f" > saving checkpoints to {Path(ck.save).resolve()} (global_step<N>/ and latest)")
    else:
        log(" > checkpoints will not be saved: no `save` directory in the config")

    datasets = (partial(impl.build_datasets, cfg) if impl else partial(build_datasets, cfg.data))(
        train_iters=t.train_iters,
        eval_interval=t.eval_interval,
        eval_iters=t.eval_iters,
        train_batch_size=train_batch_size,
        seed=t.seed,
        build=launch.rank == 0,
        barrier=torch.distributed.barrier if launch.distributed else None,
        log=log,
    )
    if datasets.train is None:
        raise ValueError("data: the training split is empty")
    pin = device.type == "cuda"
    loader_kw = dict(
        micro_batch_size=t.micro_batch_size,
        dp_rank=launch.rank // (launch.world_size // dp),
        dp_size=dp,
        num_workers=cfg.data.num_workers,
        pin_memory=pin,
    )
    train_data = make_loader(
        datasets.train, start_sample=progress.train_samples_consumed, **loader_kw
    )
    valid_data = (
        make_loader(datasets.valid, start_sample=progress.valid_samples_consumed, **loader_kw)
        if datasets.valid is not None and t.eval_iters > 0
        else None
    )

    trained: torch.nn.Module = model
    if launch.distributed:
        trained = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )

    config_dict = config_to_dict(cfg)
    config_files = config_file_texts(cfg)
    blocks = fused_tp_blocks(
        (n for n, _ in model.named_parameters()),
        num_heads=m.num_attention_heads,
        num_kv_heads=m.num_kv_heads or m.num_attention_heads,
        head_dim=m.hidden_size // m.num_attention_heads,
        intermediate_size=m.intermediate_size or 0,
        gated_mlp=m.activation == "swiglu",
    )

    def save(p: Progress) -> None:
        rng_states = _gather_rng_states(launch, device)
        if launch.rank == 0:
            path = save_checkpoint(
                ck.save,  # type: ignore[arg-type]
                p.iteration,
                model=model,
                optimizer=optimizer,
                trainer_state=p.to_trainer_state(
                    schedule.state_dict(), scaler.state_dict() if scaler else None
                ),
                config=config_dict,
                config_files=config_files,
                ranks=Ranks(dp_world_size=dp),
                tp_blocks=blocks,
                rng_states=rng_states,
            )
            delete_old_checkpoints(ck.save, ck.keep_last_n_checkpoints)  # type: ignore[arg-type]
            log(f" > saved checkpoint {path}")
        if launch.distributed:
            torch.distributed.barrier()
        p.last_saved = p.iteration

    trackers = Trackers(
        tensorboard_dir=cfg.logging.tensorboard_dir,
        use_wandb=cfg.logging.use_wandb,
        wandb_project=cfg.logging.wandb_project,
        wandb_group=cfg.logging.wandb_group,
        wandb_team=cfg.logging.wandb_team,
        wandb_mode=cfg.logging.wandb_mode,
        config=config_dict,
        rank=launch.rank,
    )
    n_flops = non_embedding_params(model, tied_embeddings=m.tie_embeddings)
    per_token = flops_per_token(n_flops, m.num_layers, m.hidden_size, cfg.data.seq_length)
    loop = Loop(
        model=trained,
        optimizer=optimizer,
        schedule=schedule,
        scaler=scaler,
        settings=StepSettings(
            precision=pr.dtype,
            gradient_accumulation_steps=t.gradient_accumulation_steps,
            clip_grad=cfg.optimizer.clip_grad,
            on_nan=t.on_nan,
            device=device,
            log_grad_norm=cfg.logging.log_grad_norm,
            log_param_norm=cfg.logging.log_param_norm,
            log_grad_pct_zeros=cfg.logging.log_grad_pct_zeros,
            impl=impl,
        ),
        train_data=train_data,
        valid_data=valid_data,
        progress=progress,
        train_iters=t.train_iters,
        train_batch_size=train_batch_size,
        seq_length=cfg.data.seq_length,
        log_interval=max(1, cfg.logging.log_interval),
        eval_interval=t.eval_interval,
        eval_iters=t.eval_iters,
        checkpoint_factor=ck.checkpoint_factor,
        extra_save_iters=ck.extra_save_iters,
        flops_per_iteration=per_token * train_batch_size * cfg.data.seq_length,
        peak_flops=H100_BF16_PEAK_FLOPS,
        world_size=launch.world_size,
        trackers=trackers,
        stop=stop,
        save=save if ck.save else None,
        reduce_mean=_reduce_mean(launch),
        reduce_step=_reduce_step(launch),
        log=log,
        harness=build_training_harness(
            cfg,
            trained,
            trackers=trackers,
            log=log,
            rank=launch.rank,
            barrier=torch.distributed.barrier if launch.distributed else None,
        ),
    )
    try:
        if ck.save and ck.extra_save_iters and 0 in ck.extra_save_iters and progress.iteration == 0:
            save(progress)
        log(" > training ...")
        train(loop)
        if ck.save and progress.iteration and progress.last_saved != progress.iteration:
            save(progress)
        if not loop.stopped and progress.iteration >= t.train_iters:
            run_eval(loop, "the end of training for val data")
            if datasets.test is not None and t.eval_iters > 0:
                test_data = make_loader(datasets.test, **loader_kw)  # type: ignore[arg-type]
                run_eval(loop, "the end of training for test data", test_data, "test")
    finally:
        trackers.close()
    return 0


def _load(cfg: NeoxConfig, model, optimizer, schedule, scaler, log, rank: int = 0) -> Progress:
    ck = cfg.checkpoint
    assert ck.load is not None
    try:
        ckpt = resolve_checkpoint_dir(ck.load, ck.iteration)
    except CheckpointError:
        if ck.iteration is not None:
            raise
        log(f" > no checkpoint in {ck.load} yet: starting from iteration 0")
        return Progress()
    own_rng = (ckpt / layout.rng_files(rank)[0]).is_file()
    if not own_rng and not ck.finetune:
        print(
            f"neox-train: rank {rank}: {ckpt} has no RNG state for this rank (saved by fewer "
            "ranks); it keeps its seeded RNG, so the run will not repeat bit for bit",
            file=sys.stderr,
            flush=True,
        )
    loaded = load_checkpoint(
        ck.load,
        model=model,
        optimizer=None if ck.finetune else optimizer,
        iteration=ck.iteration,
        weights_only=ck.finetune,
        restore_rng=own_rng,
        ranks=Ranks(global_rank=rank),  # the optimizer state is dp rank 0's (replicated)
    )
    if ck.finetune:
        log(f" > loaded weights from {loaded.path} (finetune: starting at iteration 0)")
        return Progress()
    state = loaded.trainer_state
    changed = schedule.load_state_dict(state["scheduler"])
    if changed:
        log(
            " > lr schedule: the config differs from the checkpoint (checkpoint -> config, "
            f"the config's values are used): {', '.join(changed)}"
        )
    if scaler is not None and state.get("loss_scaler"):
        scaler.load_state_dict(state["loss_scaler"])
    log(f" > resumed from {loaded.path} at iteration {loaded.iteration}")
    return Progress.from_trainer_state(loaded.iteration, state)
