"""`eval_tasks` at training's eval steps: the harness on rank 0, training state untouched.

The harness seeds Python's, NumPy's and torch's global generators; the run's RNG states are
saved before and restored after, and the model is put back in training mode, so a run with
`eval_tasks` trains exactly as one without. Any failure (a task, the results file) is logged
with the task name and training continues.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch

from neox_core.config.errors import ConfigError
from neox_core.config.schema import NeoxConfig


@contextlib.contextmanager
def preserved_rng() -> Iterator[None]:
    """Restore Python, NumPy, torch CPU and CUDA generator states on exit."""
    py, npy, cpu = random.getstate(), np.random.get_state(), torch.get_rng_state()
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    try:
        yield
    finally:
        random.setstate(py)
        np.random.set_state(npy)
        torch.set_rng_state(cpu)
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)


def build_training_harness(
    cfg: NeoxConfig,
    model: torch.nn.Module,
    *,
    trackers: Any,
    log: Callable[[str], None],
    rank: int = 0,
    barrier: Callable[[], None] | None = None,
) -> Callable[[int], None] | None:
    """A function the loop calls at eval steps, or None when `eval_tasks` is unset.

    `model` may be wrapped (DDP); the harness runs the unwrapped module on rank 0 only, and
    every rank then meets at `barrier`.
    """
    tasks = cfg.evaluation.eval_tasks
    if not tasks:
        return None
    try:
        import lm_eval  # noqa: F401
    except ImportError:
        raise ConfigError(
            "eval_tasks needs lm-evaluation-harness: install neox-core's eval extra "
            "(pip install 'neox-core[eval]')"
        ) from None
    from neox_core.evaluation.harness import (
        metric_scalars,
        results_path,
        run_tasks,
        save_report,
        summarise,
    )
    from neox_core.evaluation.harness_lm import NeoxLM
    from neox_core.generation.loading import build_tokenizer_for

    tokenizer = build_tokenizer_for(cfg) if rank == 0 else None
    module = getattr(model, "module", model)
    ev = cfg.evaluation
    batch_size = ev.eval_batch_size or cfg.training.micro_batch_size

    def run(iteration: int) -> None:
        log("Running evaluation harness")
        if rank == 0:
            was_training = module.training
            try:
                with preserved_rng(), torch.no_grad():
                    module.eval()
                    lm = NeoxLM(
                        module,
                        tokenizer,
                        max_length=cfg.data.seq_length,
                        batch_size=batch_size,
                        seed=cfg.training.seed,
                    )
                    report = run_tasks(lm, tasks, include_path=ev.eval_include_path, log=log)
                log(summarise(report))
                if report.results is not None:
                    scalars = metric_scalars(report.results)
                    for key, value in scalars.items():
                        log(f" {key}: {value:.6g}")
                    trackers.log(scalars, iteration)
                path = results_path(ev.eval_results_prefix, iteration, cfg.checkpoint.save)
                save_report(report, path)
                log(f" > evaluation harness results: {path}")
            except Exception as e:
                log(f"evaluation harness failed at iteration {iteration} (tasks {tasks}): {e!r}")
            finally:
                module.train(was_training)
        if barrier is not None:
            barrier()

    return run
