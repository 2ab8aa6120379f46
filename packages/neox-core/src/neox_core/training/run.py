"""`neox-train`'s training entry: set a run up from the config, train, save, exit.

`main_train(cfg)` is what `neox_core.cli` calls. It returns the process exit code: 0 when
training finished or stopped cleanly on SIGTERM/SIGUSR1 (after saving), 1 on a NaN stop.

`_run` reads as the table of contents of a run; each `build_*` step below makes one part
(model and its parallel layout, optimizer and schedule, data, checkpointer, trackers).
"""

from __future__ import annotations

import gc
import random
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from neox_core.checkpoint import (
    Checkpointer,
    CheckpointError,
    DamagedCheckpointError,
    layout,
    newest_usable_step,
    resolve_checkpoint_dir,
)
from neox_core.config import ConfigError, NeoxConfig, config_to_dict, with_world_size
from neox_core.data.checks import DataCheckError
from neox_core.distributed.attention_backend import (
    AttentionShape,
    choose_attention,
    set_attention_kernel,
)
from neox_core.distributed.compile import compile_enabled
from neox_core.distributed.parallel_dims import ParallelDims
from neox_core.evaluation.during_training import build_training_harness
from neox_core.training.data_resume import check_data_resume, record_data_config
from neox_core.training.launch import (
    LaunchEnv,
    LaunchError,
    init_process_group,
    nccl_transport_line,
    pick_device,
    read_launch_env,
)
from neox_core.training.loop import Loop, run_eval, train
from neox_core.training.optimizer import build_optimizer
from neox_core.training.precision import DynamicLossScaler, StaticLossScaler
from neox_core.training.schedules import AnnealingSchedule, build_schedule
from neox_core.training.signals import StopRequest
from neox_core.training.state import Progress
from neox_core.training.step import NonFiniteLossError, StepSettings
from neox_core.training.stop_vote import StopVote
from neox_core.training.throughput import (
    H100_BF16_PEAK_FLOPS,
    flops_per_token,
    non_embedding_params,
)
from neox_core.training.trackers import TrackerError, Trackers
from neox_core.training.train_impl import TrainImpl, TrainImplError, resolve_train_impl

Log = Callable[[str], None]
Scaler = DynamicLossScaler | StaticLossScaler | None


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


def _make_logger(rank: int) -> Log:
    def log(msg: str) -> None:
        if rank == 0:
            print(msg, flush=True)

    return log


def _all_reduce_sum(values: list[float]) -> list[float]:
    t = torch.tensor(values, dtype=torch.float64)
    if torch.distributed.get_backend() == "nccl":
        t = t.cuda()
    torch.distributed.all_reduce(t)
    return t.tolist()


def _reduce_mean(launch: LaunchEnv, pp: int = 1) -> Callable[[float], float]:
    """The mean over all ranks (TP ranks hold the same value, so it is the data-parallel mean;
    under pipeline parallelism only the last stage's ranks hold a loss, the others 0)."""
    if not launch.distributed:
        return lambda x: x
    return lambda x: _all_reduce_sum([x])[0] / (launch.world_size // pp)


def _reduce_step(launch: LaunchEnv, pp: int = 1) -> Callable[[float, bool], tuple[float, bool]]:
    """The step's mean loss and whether any rank was asked to stop, in one all-reduce."""
    if not launch.distributed:
        return lambda loss, stop: (loss, stop)

    def reduce(loss: float, stop: bool) -> tuple[float, bool]:
        total, stops = _all_reduce_sum([loss, float(stop)])  # any rank's 1 makes it positive
        return total / (launch.world_size // pp), stops > 0

    return reduce


def main_train(cfg: NeoxConfig, args: Any = None) -> int:
    """Train as configured; see the module docstring for the exit codes."""
    launch = read_launch_env()
    log = _make_logger(launch.rank)
    try:
        ParallelDims.from_config(cfg, launch.world_size)  # layout errors before any allocation
        device = pick_device(launch)
    except (ConfigError, LaunchError) as e:
        print(f"neox-train: error: {e}", file=sys.stderr, flush=True)
        return 2
    init_process_group(launch, device)
    nccl = nccl_transport_line(device)  # every rank: a barrier creates NCCL's communicator
    if nccl:
        log(nccl)
    if launch.world_size > 1 or cfg.parallel.data_parallel_size != 1:
        cfg = with_world_size(cfg, launch.world_size)
    stop = StopRequest().install()
    try:
        return _run(cfg, launch, device, stop, log)
    except NonFiniteLossError as e:
        print(f"neox-train: stopping: {e}", file=sys.stderr, flush=True)
        return 1
    except (ConfigError, TrackerError, TrainImplError, DataCheckError) as e:
        print(f"neox-train: error: {e}", file=sys.stderr, flush=True)
        return 2
    except CheckpointError as e:  # every rank raises the same error; one line is enough
        if launch.rank == 0:
            print(f"neox-train: error: {e}", file=sys.stderr, flush=True)
        return 2
    finally:
        stop.uninstall()
        _shutdown(launch)


def _shutdown(launch: LaunchEnv) -> None:
    """Leave the process group together and while Python is fully alive.

    A gloo worker thread that drops the last reference to a tensor created in Python takes
    the GIL to free it; if that happens while the interpreter is finalizing, the thread is
    killed inside C++ and the process aborts ("terminate called without an active
    exception", SIGABRT after a good run). So: free what still holds process groups and
    tensors (DDP/FSDP2 hooks form reference cycles, loaders own worker threads) with a
    collection now, let every rank finish its collectives (barrier), and destroy the groups
    here, which joins gloo's threads, rather than at interpreter exit.
    """
    if not (launch.distributed and torch.distributed.is_initialized()):
        return
    gc.collect()
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()
    gc.collect()


# -- the run, as a table of contents -------------------------------------------------------


def _run(cfg: NeoxConfig, launch: LaunchEnv, device: torch.device, stop: StopRequest, log) -> int:
    seed_everything(cfg.training.seed)
    dims = ParallelDims.from_config(cfg, launch.world_size)
    impl = resolve_objective(cfg, dims)
    model = build_parallel_model(cfg, dims, device, log, impl)
    opt = build_optimizer_and_schedule(cfg, model)
    checkpointer = build_checkpointer(cfg, model, opt, device, log)
    progress = restore(cfg, checkpointer, opt, launch.rank, log, impl)
    if impl:
        impl.prepare(model.module, cfg, device, log)
    opt.schedule.apply(opt.optimizer)
    data = build_data(cfg, model, progress, launch, device, log, impl)
    trackers = build_trackers(cfg, launch)
    loop = build_loop(
        cfg, model, opt, data, progress, checkpointer, trackers, launch, stop, log, impl
    )
    try:
        train_and_finish(cfg, loop, data)
    finally:
        trackers.close()
    return 0


# -- the training objective ------------------------------------------------------------------


def resolve_objective(cfg: NeoxConfig, dims: ParallelDims) -> TrainImpl | None:
    """None for next-token prediction; else the `train_impl` plug-in (DPO, KTO, RM, ...)."""
    impl = resolve_train_impl(cfg)
    if impl is not None and (dims.tp > 1 or cfg.parallel.zero_stage > 0):
        source = cfg.sources.get("posttrain.train_impl", "config")
        raise TrainImplError(
            f"{source}: train_impl {cfg.posttrain.train_impl} (or z_loss) with "
            f"model_parallel_size {dims.tp} and ZeRO stage {cfg.parallel.zero_stage} is not yet "
            "supported: post-training objectives run with model_parallel_size 1 and ZeRO "
            "stage 0 (data parallel) for now"
        )
    return impl


# -- model and its parallel layout ---------------------------------------------------------


@dataclass
class ParallelModel:
    module: torch.nn.Module  # parameters as the checkpoints name them (DTensors under TP/ZeRO)
    trained: torch.nn.Module  # what the loop calls: `module`, or its DDP wrapper
    mesh: Any  # DeviceMesh ("dp", "tp") or ("pp", "dp", "tp"), None in a single process
    dims: ParallelDims
    pipeline: Any = None  # distributed.pipeline.Pipeline when pipe_parallel_size > 1
    n_params: int | None = None  # the whole model's parameters (a pipeline rank holds a part)


def build_parallel_model(
    cfg: NeoxConfig, dims: ParallelDims, device: torch.device, log: Log, impl: TrainImpl | None
) -> ParallelModel:
    """Build the fp32 model on this rank's device, then TP and the ZeRO stage around it."""
    from neox_core.models import build_model

    seed = cfg.training.seed
    model = (
        impl.build_model(cfg, seed) if impl else build_model(cfg.model, seed=seed, dtype="fp32")
    ).to(device)
    n_params = sum(p.numel() for p in model.parameters())
    log(
        f" > model: {cfg.model.architecture}, {n_params:,} parameters, {cfg.precision.dtype} "
        f"on {device}"
    )
    from neox_core.distributed.parallelize import parallelize

    mesh = None
    if torch.distributed.is_initialized():
        from neox_core.distributed.mesh import build_mesh

        mesh = build_mesh(dims, device.type)
    if dims.pp > 1:
        return _build_pipeline_model(cfg, dims, model, mesh, device, log)
    trained = parallelize(model, mesh, cfg, device, log)
    log(describe_speed_settings(cfg, device))
    if mesh is None:
        return ParallelModel(model, trained, None, dims)
    p = cfg.parallel
    log(
        f" > parallel: {dims.describe()}"
        + (" (sequence parallel)" if p.sequence_parallel else "")
        + f", ZeRO stage {p.zero_stage}"
        + (", CPU offload" if (p.offload_optimizer or p.offload_param) else "")
    )
    return ParallelModel(model, trained, mesh, dims)


def _build_pipeline_model(cfg, dims, model, mesh, device, log) -> ParallelModel:
    """Pipeline parallelism: this rank's stages of the model (distributed/pipeline.py)."""
    from neox_core.distributed.pipeline import build_pipeline
    from neox_core.training.throughput import non_embedding_params

    n_params = non_embedding_params(model, tied_embeddings=cfg.model.tie_embeddings)
    pipe = build_pipeline(model, mesh, cfg, device)
    log(describe_speed_settings(cfg, device))
    p = cfg.parallel
    log(
        f" > parallel: {dims.describe()}, ZeRO stage {p.zero_stage}, pipe_schedule "
        f"{p.pipe_schedule}, {pipe.n_microbatches} micro batches, partition "
        f"{p.pipe_partition_method}"
    )
    for line in pipe.describe():
        log(f" > {line}")
    return ParallelModel(pipe.module, pipe.module, mesh, dims, pipe, n_params)


def describe_speed_settings(cfg: NeoxConfig, device: torch.device) -> str:
    """One log line: compiled or eager, activation checkpointing mode."""
    from neox_core.distributed.parallelize import activation_checkpointing_mode

    compiled = compile_enabled(cfg.training.compile, device)
    return (
        f" > speed: {'torch.compile per layer' if compiled else 'eager'} (compile: "
        f"{cfg.training.compile}), activation checkpointing {activation_checkpointing_mode(cfg)}"
    )


# -- optimizer and schedule ----------------------------------------------------------------


@dataclass
class OptimizerParts:
    optimizer: torch.optim.Optimizer
    schedule: AnnealingSchedule
    scaler: Scaler


def build_optimizer_and_schedule(cfg: NeoxConfig, model: ParallelModel) -> OptimizerParts:
    """AdamW over the parameters parallelize left (local shards; neox-kernels' FusedAdamW where
    the fused kernels run), the LR schedule, fp16 scaler."""
    o, t = cfg.optimizer, cfg.training
    optimizer = build_optimizer(
        model.module,
        type=o.type,
        lr=o.lr,
        betas=o.betas,
        eps=o.eps,
        weight_decay=o.weight_decay,
        fused_kernels=cfg.model.fused_kernels,
    )
    schedule = build_schedule(
        lr=o.lr,
        min_lr=cfg.schedule.min_lr,
        warmup=cfg.schedule.warmup,
        lr_decay_iters=cfg.schedule.lr_decay_iters,
        train_iters=t.train_iters,
        decay_style=cfg.schedule.lr_decay_style,
    )
    pr = cfg.precision
    scaler: Scaler = None
    if pr.dtype == "fp16":
        scaler = (
            StaticLossScaler(float(pr.loss_scale))
            if pr.loss_scale
            else DynamicLossScaler.from_config(
                pr.initial_scale_power, pr.loss_scale_window, pr.hysteresis, pr.min_loss_scale
            )
        )
    return OptimizerParts(optimizer, schedule, scaler)


# -- checkpointer --------------------------------------------------------------------------


def build_checkpointer(
    cfg: NeoxConfig, model: ParallelModel, opt: OptimizerParts, device: torch.device, log: Log
) -> Checkpointer:
    """Every rank saves and loads its own shards; any layout loads (see checkpoint/)."""
    ck = cfg.checkpoint
    if ck.save:
        log(f" > saving checkpoints to {Path(ck.save).resolve()} (global_step<N>/ and latest)")
    else:
        log(" > checkpoints will not be saved: no `save` directory in the config")
    return Checkpointer(
        model.module,
        opt.optimizer,
        mesh=model.mesh,
        model_cfg=cfg.model,
        device=device,
        config=config_to_dict(cfg),
        config_files=config_file_texts(cfg),
        keep_last_n=ck.keep_last_n_checkpoints,
        log=log,
    )


def damaged_resume_message(e: DamagedCheckpointError, load: str, verify: str) -> str:
    """One line: the damaged file, and the newest older step that verifies (never loaded
    in its place: the user decides)."""
    older = newest_usable_step(load, layout.step_of(e.ckpt), verify)
    if older is None:
        hint = f"no older step in {load} verifies"
    else:
        step = layout.step_of(older)
        hint = (
            f"the newest older step that verifies is {older.name}: set `iteration: {step}` "
            f"or write {older.name} into {Path(load) / layout.LATEST_FILE}"
        )
    return f"checkpoint {e.ckpt} is damaged, not resuming from it: {e}; {hint}"


def restore(
    cfg: NeoxConfig,
    checkpointer: Checkpointer,
    opt: OptimizerParts,
    rank: int,
    log: Log,
    impl: TrainImpl | None = None,
) -> Progress:
    """Resume from `load` (weights, optimizer, RNG, schedule, scaler), or start at 0."""
    ck = cfg.checkpoint
    if not ck.load:
        return Progress()
    if ck.iteration is None and not (Path(ck.load) / layout.LATEST_FILE).exists():
        log(f" > no checkpoint in {ck.load} yet: starting from iteration 0")
        return Progress()
    ckpt = resolve_checkpoint_dir(ck.load, ck.iteration)  # a broken `latest` is an error
    own_rng = (ckpt / layout.rng_files(rank)[0]).is_file()
    if not own_rng and not ck.finetune:
        print(
            f"neox-train: rank {rank}: {ckpt} has no RNG state for this rank (saved by fewer "
            "ranks); it keeps its seeded RNG, so the run will not repeat bit for bit",
            file=sys.stderr,
            flush=True,
        )
    if impl is not None and ck.finetune:
        # a plug-in may start from a plain LM checkpoint (a reward model from an SFT one)
        target = impl.checkpoint_module(checkpointer.model, True)
        if target is not checkpointer.model:
            # (plug-ins run unsharded: resolve_objective refuses TP and ZeRO for them)
            checkpointer = Checkpointer(
                target, None, model_cfg=cfg.model, device=checkpointer.device, log=log
            )
    try:
        loaded = checkpointer.load(
            ck.load,
            ck.iteration,
            weights_only=ck.finetune,
            restore_rng=own_rng,
            verify=ck.checkpoint_verify,
        )
    except DamagedCheckpointError as e:
        raise CheckpointError(damaged_resume_message(e, ck.load, ck.checkpoint_verify)) from None
    if ck.finetune:
        log(f" > loaded weights from {loaded.path} (finetune: starting at iteration 0)")
        return Progress()
    state = loaded.trainer_state
    check_data_resume(cfg, state, loaded.iteration, f"{loaded.path}/trainer_state.json", log)
    changed = opt.schedule.load_state_dict(state["scheduler"])
    if changed:
        log(
            " > lr schedule: the config differs from the checkpoint (checkpoint -> config, "
            f"the config's values are used): {', '.join(changed)}"
        )
    if opt.scaler is not None and state.get("loss_scaler"):
        opt.scaler.load_state_dict(state["loss_scaler"])
    log(f" > resumed from {loaded.path} at iteration {loaded.iteration}")
    return Progress.from_trainer_state(loaded.iteration, state)


# -- data ----------------------------------------------------------------------------------


@dataclass
class Data:
    train: Iterator[dict[str, torch.Tensor]]
    valid: Iterator[dict[str, torch.Tensor]] | None
    make_test: Callable[[], Iterator[dict[str, torch.Tensor]] | None]
    train_batch_size: int


def build_data(
    cfg: NeoxConfig,
    model: ParallelModel,
    progress: Progress,
    launch: LaunchEnv,
    device: torch.device,
    log: Log,
    impl: TrainImpl | None = None,
) -> Data:
    """Loaders for this data-parallel rank; the TP ranks of one group read the same samples."""
    from neox_core.data import build_datasets, make_loader

    t = cfg.training
    dp_rank, dp_size = 0, model.dims.dp
    if model.mesh is not None:
        from neox_core.distributed.mesh import dp_rank_and_size

        dp_rank, dp_size = dp_rank_and_size(model.mesh)
    train_batch_size = (
        t.train_batch_size or t.micro_batch_size * t.gradient_accumulation_steps * dp_size
    )
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
    loader_kw = dict(
        micro_batch_size=t.micro_batch_size,
        dp_rank=dp_rank,
        dp_size=dp_size,
        num_workers=cfg.data.num_workers,
        pin_memory=device.type == "cuda",
    )
    valid = None
    if datasets.valid is not None and t.eval_iters > 0:
        valid = make_loader(
            datasets.valid, start_sample=progress.valid_samples_consumed, **loader_kw
        )

    def make_test():
        if datasets.test is None or t.eval_iters <= 0:
            return None
        return make_loader(datasets.test, **loader_kw)  # type: ignore[arg-type]

    return Data(
        train=make_loader(
            datasets.train, start_sample=progress.train_samples_consumed, **loader_kw
        ),
        valid=valid,
        make_test=make_test,
        train_batch_size=train_batch_size,
    )


# -- trackers and the loop -----------------------------------------------------------------


def build_trackers(cfg: NeoxConfig, launch: LaunchEnv) -> Trackers:
    lg = cfg.logging
    return Trackers(
        tensorboard_dir=lg.tensorboard_dir,
        use_wandb=lg.use_wandb,
        wandb_project=lg.wandb_project,
        wandb_group=lg.wandb_group,
        wandb_team=lg.wandb_team,
        wandb_mode=lg.wandb_mode,
        config=config_to_dict(cfg),
        rank=launch.rank,
    )


def build_loop(
    cfg: NeoxConfig,
    model: ParallelModel,
    opt: OptimizerParts,
    data: Data,
    progress: Progress,
    checkpointer: Checkpointer,
    trackers: Trackers,
    launch: LaunchEnv,
    stop: StopRequest,
    log: Log,
    impl: TrainImpl | None = None,
) -> Loop:
    t, ck, m = cfg.training, cfg.checkpoint, cfg.model

    def save(p: Progress) -> None:
        scaler = opt.scaler.state_dict() if opt.scaler else None
        state = p.to_trainer_state(opt.schedule.state_dict(), scaler)
        record_data_config(state, cfg)
        checkpointer.save(ck.save, p.iteration, state)  # type: ignore[arg-type]
        p.last_saved = p.iteration

    # model FLOPs of the whole model (DTensor numel is the global size) per iteration; the
    # log line divides by the world size: TFLOPS and MFU per GPU under any layout
    n_flops = model.n_params or non_embedding_params(model.module, tied_embeddings=m.tie_embeddings)
    per_token = flops_per_token(n_flops, m.num_layers, m.hidden_size, cfg.data.seq_length)
    device = checkpointer.device or torch.device("cpu")
    return Loop(
        model=model.trained,
        optimizer=opt.optimizer,
        schedule=opt.schedule,
        scaler=opt.scaler,
        settings=build_step_settings(cfg, device, log, impl, model),
        train_data=data.train,
        valid_data=data.valid,
        progress=progress,
        train_iters=t.train_iters,
        train_batch_size=data.train_batch_size,
        seq_length=cfg.data.seq_length,
        log_interval=max(1, cfg.logging.log_interval),
        eval_interval=t.eval_interval,
        eval_iters=t.eval_iters,
        checkpoint_factor=ck.checkpoint_factor,
        extra_save_iters=ck.extra_save_iters,
        flops_per_iteration=per_token * data.train_batch_size * cfg.data.seq_length,
        peak_flops=H100_BF16_PEAK_FLOPS,
        world_size=launch.world_size,
        trackers=trackers,
        stop=stop,
        save=save if ck.save else None,
        reduce_mean=_reduce_mean(launch, model.dims.pp),
        reduce_step=_reduce_step(launch, model.dims.pp),
        pipeline=model.pipeline,
        stop_vote=StopVote(device) if launch.distributed else None,
        log=log,
        harness=build_training_harness(
            cfg,
            model.trained,
            trackers=trackers,
            log=log,
            rank=launch.rank,
            barrier=torch.distributed.barrier if launch.distributed else None,
        ),
        timed_first_steps=2 if compile_enabled(cfg.training.compile, device) else 0,
    )


def build_step_settings(
    cfg: NeoxConfig,
    device: torch.device,
    log: Log,
    impl: TrainImpl | None,
    model: ParallelModel | None = None,
) -> StepSettings:
    """How `train_step` runs: precision, accumulation, clipping, attention kernel, host syncs.

    The attention kernel is set on `model`'s attention layers here too (None: SDPA's only).
    """
    t, m = cfg.training, cfg.model
    tp = cfg.parallel.tensor_parallel_size
    shape = AttentionShape(
        batch=t.micro_batch_size,
        heads=max(m.num_attention_heads // tp, 1),
        kv_heads=max((m.num_kv_heads or m.num_attention_heads) // tp, 1),
        seq=cfg.data.seq_length,
        head_dim=m.hidden_size // m.num_attention_heads,
    )
    request = t.attention_kernel if model is not None else "sdpa"
    try:
        attention = choose_attention(request, device, cfg.precision.dtype, shape)
    except ValueError as e:  # `attention_kernel: fa4` where FA4 cannot run
        raise ConfigError(f"{cfg.sources.get('training.attention_kernel', 'config')}: {e}") from e
    if model is not None:
        set_attention_kernel(model.module, attention.kernel)
    log(f" > attention: {attention.line}")
    pipeline = model.pipeline if model is not None else None
    return StepSettings(
        precision=cfg.precision.dtype,
        gradient_accumulation_steps=t.gradient_accumulation_steps,
        clip_grad=cfg.optimizer.clip_grad,
        on_nan=t.on_nan,
        device=device,
        log_grad_norm=cfg.logging.log_grad_norm,
        log_param_norm=cfg.logging.log_param_norm,
        log_grad_pct_zeros=cfg.logging.log_grad_pct_zeros,
        impl=impl,
        attention_backends=attention.sdpa_backends,
        # results stay on the GPU between log intervals where the step allows (step.py's
        # can_defer); several processes all-reduce them on the device and vote on stopping
        defer_sync=True,
        pipeline=pipeline,
    )


def train_and_finish(cfg: NeoxConfig, loop: Loop, data: Data) -> None:
    """Train; save the last step; evaluate on validation and test data at the end."""
    ck, p = cfg.checkpoint, loop.progress
    if loop.save and ck.extra_save_iters and 0 in ck.extra_save_iters and p.iteration == 0:
        loop.save(p)
    loop.log(" > training ...")
    train(loop)
    if loop.save and p.iteration and p.last_saved != p.iteration:
        loop.save(p)
    if not loop.stopped and p.iteration >= cfg.training.train_iters:
        run_eval(loop, "the end of training for val data")
        test_data = data.make_test()
        if test_data is not None:
            run_eval(loop, "the end of training for test data", test_data, "test")
