"""What `neox-eval` does once its config is read: load, evaluate, print, save, log scalars."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from neox_core.config.schema import NeoxConfig
from neox_core.evaluation.harness import (
    metric_scalars,
    results_path,
    run_tasks,
    save_report,
    summarise,
)
from neox_core.evaluation.harness_lm import NeoxLM
from neox_core.generation.loading import build_tokenizer_for, load_inference_model


def eval_batch_size(cfg: NeoxConfig) -> int:
    return cfg.evaluation.eval_batch_size or cfg.training.micro_batch_size


def run_eval_cli(cfg: NeoxConfig, args: argparse.Namespace) -> int:
    """Returns 0 when every task ran, 1 when some failed (their errors are in the report)."""
    from neox_core.training.trackers import Trackers

    tasks = cfg.evaluation.eval_tasks
    if not tasks:
        print(
            "neox-eval: error: no tasks: pass --tasks or set eval_tasks in the config",
            file=sys.stderr,
        )
        return 2
    loaded = load_inference_model(
        cfg, load_dir=args.load, iteration=args.iteration, device=args.device, dtype=args.dtype
    )
    lm = NeoxLM(
        loaded.model,
        build_tokenizer_for(cfg),
        max_length=cfg.data.seq_length,
        batch_size=args.batch_size or eval_batch_size(cfg),
        seed=cfg.training.seed,
    )
    print(f"neox-eval: {loaded.checkpoint} (iteration {loaded.iteration}), tasks {tasks}")
    report = run_tasks(
        lm,
        tasks,
        include_path=cfg.evaluation.eval_include_path,
        num_fewshot=args.num_fewshot,
        limit=args.limit,
        bootstrap_iters=args.bootstrap_iters,
        seed=cfg.training.seed,
    )
    print(summarise(report))
    save_dir = loaded.checkpoint.parent if loaded.checkpoint is not None else None
    path = (
        Path(args.output)
        if args.output
        else results_path(cfg.evaluation.eval_results_prefix, loaded.iteration, save_dir)
    )
    save_report(report, path)
    print(f"neox-eval: wrote {report.path}")
    if report.results is not None:
        lg = cfg.logging
        trackers = Trackers(
            tensorboard_dir=lg.tensorboard_dir,
            use_wandb=lg.use_wandb,
            wandb_project=lg.wandb_project,
            wandb_group=lg.wandb_group,
            wandb_team=lg.wandb_team,
            wandb_mode=lg.wandb_mode,
        )
        trackers.log(metric_scalars(report.results), loaded.iteration)
        trackers.close()
    return 1 if report.failures else 0
