"""Multi-GPU scaling of `neox-train`'s own step: data, tensor and pipeline parallel (issue #20).

One command per machine. Each (case, GPU count) runs in its own `torchrun` child (`python -m
torch.distributed.run --standalone`), so a crash, hang or OOM costs one row. The child is
neox-train's launch path (`read_launch_env`, `pick_device`, `init_process_group`,
`ParallelDims.from_config`, `with_world_size`, the seed) and its build (`build_parallel_model`,
`build_optimizer_and_schedule`, `build_step_settings` with the pipeline), then times
`train_step` as the loop calls it under several processes: a deferred step with the loop's
stop vote (`StopVote`), a synced one (fp16, pipeline) with its host all-reduce
(`_reduce_step`), on synthetic tokens. Rank 0 prints one `RESULT {json}` line; this parent,
which never imports torch, prints the table last. `--profile` adds three profiled steps per
row and a table of where rank 0's time goes: compute kernels by family, NCCL kernels, the
NCCL time no compute overlaps, and idle time.

Cases (GPT-NeoX YAML configs through neox-core's loader, bf16, fp32 master weights):
  dp-1B         Pythia-1B, ZeRO 1, micro batch 8, seq 2048, at every count in --gpus; weak-scaling
                efficiency = tokens/s per GPU / the 1-GPU tokens/s of the same command
  zero3-7B      LLaMA-7B shape (examples/configs/llama/7B.yml), ZeRO 3           } at the largest
  zero1-tp2-7B  ZeRO 1 + TP 2 (DP over the rest)                                  } count; MFU per
  tp2-7B/tp4-7B TP 2 / TP 4, DP over the rest                                     } GPU; PP rows
  pp2-7B/pp4-7B PP 2 / PP 4, 8 micro batches per step (1F1B)                      } add the bubble
  dp-1B-fp32gather, zero3-7B-fp32gather: dp-1B and zero3-7B with `zero_gather_dtype: fp32`
                (fp32 all-gathers; the default gathers the layers' parameters in bf16)
  dp-1B-gas4, dp-1B-gas4-zero2: dp-1B with 4 micro batches per step, ZeRO 1 (one all-gather
                and reduce-scatter per layer and step) against ZeRO 2 (per micro batch)
The PP rows give the measured bubble (1 - compute / schedule wall time, as neox-train's
"pipeline" log line, mean over ranks) beside (p - 1) / (m + p - 1). Every row gives peak memory
per GPU (max over ranks of torch.cuda.max_memory_allocated) beside `neox-train --dry-run`'s
estimate (neox_core.memory_estimate; it counts TP x DP, not the pipeline split).

    python3 benchmarks/scaling.py                          # every case, GPUs 1,2,4,8 (as present)
    python3 benchmarks/scaling.py --cases dp-1B --gpus 1,2 # weak scaling only
    python3 benchmarks/scaling.py --smoke                  # tiny model, CPU + gloo, 1-2 processes

Stopped by SIGTERM (`timeout` around the command, a scheduler's time limit), it kills the row
running, prints the table of the rows measured so far and exits 143.

The NCCL environment is printed once (NCCL version, torch, every NCCL_* variable);
NCCL_NVLS_ENABLE=0 is set unless given (NVLink multicast stays off on lent machines). Runs from
a plain checkout as benchmarks/train_step.py does (PYTHONPATH to the packages' src folders).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

# benchmarks/train_step.py (this folder is sys.path[0] when a script here runs): the same
# regime, synthetic tokens and source-tree imports; importing it does not import torch
from train_step import (
    FAMILIES,
    PEAK_FLOPS,
    family,
    idle_gaps,
    import_paths,
    kernel_spans,
    regime_overrides,
    synthetic_batch,
)

ROOT = Path(__file__).resolve().parents[1]
PYTHIA_1B = ROOT / "examples" / "configs" / "pythia" / "1B.yml"
LLAMA_7B = ROOT / "examples" / "configs" / "llama" / "7B.yml"
SMOKE_SHAPE: dict[str, Any] = {  # benchmarks/train_step.py's smoke model
    "num_layers": 2,
    "attention_config": [[["global"], 2]],
    "hidden_size": 64,
    "num_attention_heads": 4,
    "vocab_size": 256,
}


@dataclass(frozen=True)
class Case:
    config: Path
    seq: int
    micro_batch: int
    zero: int = 0
    tp: int = 1
    pp: int = 1
    accumulation: int = 1  # micro batches per step (the pipeline's m)
    sweep: bool = False  # every GPU count in --gpus (weak scaling), else only the largest
    gather: str = "auto"  # zero_gather_dtype (auto: bf16 under ZeRO 1-3)


CASES = {
    "dp-1B": Case(PYTHIA_1B, 2048, 8, zero=1, sweep=True),
    "zero3-7B": Case(LLAMA_7B, 2048, 2, zero=3),
    "zero1-tp2-7B": Case(LLAMA_7B, 2048, 2, zero=1, tp=2),
    "tp2-7B": Case(LLAMA_7B, 2048, 2, tp=2),
    "tp4-7B": Case(LLAMA_7B, 2048, 2, tp=4),
    "pp2-7B": Case(LLAMA_7B, 2048, 1, pp=2, accumulation=8),
    "pp4-7B": Case(LLAMA_7B, 2048, 1, pp=4, accumulation=8),
    "dp-1B-fp32gather": Case(PYTHIA_1B, 2048, 8, zero=1, sweep=True, gather="fp32"),
    "dp-1B-gas4": Case(PYTHIA_1B, 2048, 8, zero=1, accumulation=4, sweep=True),
    "dp-1B-gas4-zero2": Case(PYTHIA_1B, 2048, 8, zero=2, accumulation=4, sweep=True),
    "zero3-7B-fp32gather": Case(LLAMA_7B, 2048, 2, zero=3, gather="fp32"),
}
SMOKE_CASES = "dp-1B,tp2-7B"


@dataclass
class Result:
    case: str
    gpus: int
    layout: str = ""
    step_s: float = float("nan")
    tokens_per_s: float = float("nan")  # the global batch: micro batch x DP x accumulation x seq
    mfu: float = float("nan")  # per GPU
    peak_gib: float = float("nan")  # max over ranks
    estimate_gib: float = float("nan")  # neox-train --dry-run's per-rank peak
    bubble: float = float("nan")  # measured, PP only
    bubble_theory: float = float("nan")
    loss: float = float("nan")
    error: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


# -- the profile: compute, communication and idle time on rank 0 --------------------------


def _union(spans: list[tuple[float, float]]) -> list[tuple[float, float]]:
    out: list[tuple[float, float]] = []
    for start, end in sorted(spans):
        if out and start <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], end))
        else:
            out.append((start, end))
    return out


def _length(spans: list[tuple[float, float]]) -> float:
    return sum(end - start for start, end in spans)


def time_breakdown(spans: list[tuple[float, float, str]], wall_us: float, steps: int) -> dict:
    """ms per step: each compute family's kernel time, NCCL kernels ("comm"), the part of
    the NCCL time with no other kernel running ("exposed comm": communication the step waits
    for) and the wall time with no kernel at all ("idle": the GPU waits for the host)."""
    comm = [(a, b) for a, b, name in spans if "nccl" in name.lower()]
    compute = [(a, b) for a, b, name in spans if "nccl" not in name.lower()]
    out = {fam: 0.0 for fam, _ in FAMILIES} | {"other": 0.0}
    for a, b, name in spans:
        if "nccl" not in name.lower():
            out[family(name)] += b - a
    busy, computing = _length(_union(comm + compute)), _length(_union(compute))
    out |= {"comm": _length(_union(comm)), "exposed comm": busy - computing,
            "idle": max(0.0, wall_us - busy), "wall": wall_us}  # fmt: skip
    return {k: v / 1e3 / steps for k, v in out.items()}


def profile_steps(steps, first: int, n: int, sync) -> dict:
    """`n` more steps under torch.profiler (every rank, so all are slowed alike); rank 0's
    breakdown and its three longest idle gaps."""
    from torch.profiler import ProfilerActivity, profile

    sync()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        start = time.perf_counter()
        steps(first, n)
        sync()
        wall_us = (time.perf_counter() - start) * 1e6
    gaps = [(round(ms, 2), before[:60], after[:60]) for ms, before, after in idle_gaps(prof, 3)]
    return {"ms": time_breakdown(kernel_spans(prof), wall_us, n), "gaps": gaps}


# -- the worker: one torchrun process ------------------------------------------------------


def load_case_config(name: str, args: argparse.Namespace) -> Any:
    """The case's YAML through neox-core's loader, in the benchmark's regime and layout."""
    from neox_core.config import load_config

    case = CASES[name]
    seq = 32 if args.smoke else case.seq
    overrides = regime_overrides(seq, 2 if args.smoke else case.micro_batch, args)
    overrides |= {
        "model_parallel_size": case.tp,
        "pipe_parallel_size": case.pp,
        "zero_optimization": {"stage": case.zero},
        "vocab_size": 50277 if case.config == PYTHIA_1B else 32000,
    }
    if case.gather != "auto":
        overrides["zero_gather_dtype"] = case.gather
    if case.accumulation != 1:  # Pythia's YAML sets `gas: 1`; a second spelling is an error
        key = "gas" if case.config == PYTHIA_1B else "gradient_accumulation_steps"
        overrides[key] = case.accumulation
    if args.smoke:
        overrides.update(SMOKE_SHAPE)
    cfg = load_config([case.config], overrides)
    if cfg.training.gradient_accumulation_steps != case.accumulation:
        raise ValueError(f"{case.config}: {cfg.training.gradient_accumulation_steps} micro "
                         f"batches per step, the case wants {case.accumulation}")  # fmt: skip
    return cfg


def worker(args: argparse.Namespace) -> int:
    """One rank of one case: neox-train's launch and build, then timed `train_step`s."""
    import itertools

    import torch

    from neox_core import memory_estimate
    from neox_core.config import with_world_size
    from neox_core.distributed.parallel_dims import ParallelDims
    from neox_core.training.launch import (
        init_process_group,
        nccl_transport_line,
        pick_device,
        read_launch_env,
    )
    from neox_core.training.run import (
        _reduce_step,
        _shutdown,
        build_optimizer_and_schedule,
        build_parallel_model,
        build_step_settings,
        seed_everything,
    )
    from neox_core.training.step import resolve_results, train_step
    from neox_core.training.stop_vote import StopVote
    from neox_core.training.throughput import flops_per_token, non_embedding_params

    launch = read_launch_env()
    cfg = load_case_config(args.case, args)
    ParallelDims.from_config(cfg, launch.world_size)  # layout errors before any allocation
    device = pick_device(launch)
    init_process_group(launch, device)
    try:
        nccl = nccl_transport_line(device)  # as neox-train logs it: the transports NCCL chose
        if nccl and launch.rank == 0:
            print(nccl.strip(), flush=True)
        if launch.world_size > 1 or cfg.parallel.data_parallel_size != 1:
            cfg = with_world_size(cfg, launch.world_size)
        seed_everything(cfg.training.seed)
        dims = ParallelDims.from_config(cfg, launch.world_size)

        def log(msg: str) -> None:
            if args.verbose and launch.rank == 0:
                print(msg, flush=True)

        model = build_parallel_model(cfg, dims, device, log, None)
        opt = build_optimizer_and_schedule(cfg, model)
        opt.schedule.apply(opt.optimizer)
        settings = build_step_settings(cfg, device, log, None, model)
        if args.synced_steps:  # every step read on the host, as before deferral (comparison)
            settings = dataclasses.replace(settings, defer_sync=False)
        reduce_step = _reduce_step(launch, dims.pp)
        vote = StopVote(device)
        t, m = cfg.training, cfg.model
        seq = cfg.data.seq_length
        batch = synthetic_batch(m.vocab_size, t.micro_batch_size, seq, device)
        data = itertools.repeat({"text": batch})

        def sync() -> None:
            if device.type == "cuda":
                torch.cuda.synchronize()
            if launch.distributed:
                torch.distributed.barrier()

        def steps(first: int, n: int) -> float:
            """n steps as the loop takes them; the last one's mean loss over the ranks."""
            results = []
            for i in range(first, first + n):
                r = train_step(model.trained, opt.optimizer, opt.schedule, opt.scaler, data,
                               settings, i)  # fmt: skip
                if r.reduced:  # deferred under several processes: the loop's stop vote
                    vote.cast(False)
                    vote.agreed()
                elif not r.pending:  # synced under several processes: the loop's all-reduce
                    r.loss, _ = reduce_step(float(r.loss), False)
                results.append(r)
            return float(resolve_results(results)[-1].loss)  # one process: read at the end

        steps(1, args.warmup)
        sync()
        if model.pipeline is not None:
            model.pipeline.take_times()  # drop the warm-up's stage times
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        loss = steps(args.warmup + 1, args.steps)
        sync()
        step_s = (time.perf_counter() - start) / args.steps
        peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else math.nan
        bubble = math.nan
        if model.pipeline is not None:
            st = model.pipeline.take_times()
            bubble = max(0.0, 1.0 - st.compute / st.step) if st.step > 0 else 0.0
        profiled = None
        if args.profile and device.type == "cuda":
            profiled = profile_steps(steps, args.warmup + args.steps + 1, 3, sync)
        row = torch.tensor([step_s, peak, bubble], dtype=torch.float64)
        if launch.distributed:
            gathered = [None] * launch.world_size
            torch.distributed.all_gather_object(gathered, row.tolist())
            rows = torch.tensor(gathered, dtype=torch.float64)
            step_s, peak = rows[:, 0].max().item(), rows[:, 1].max().item()  # slowest, biggest
            bubble = rows[:, 2].mean().item()
        n_flops = model.n_params or non_embedding_params(model.module,
                                                         tied_embeddings=m.tie_embeddings)  # fmt: skip
        per_token = flops_per_token(n_flops, m.num_layers, m.hidden_size, seq)
        tokens = t.micro_batch_size * dims.dp * t.gradient_accumulation_steps * seq
        tokens_per_s = tokens / step_s
        est = memory_estimate.estimate_memory(cfg, dims)
        r = Result(
            args.case,
            launch.world_size,
            layout=f"DP {dims.dp} x TP {dims.tp} x PP {dims.pp}, ZeRO {cfg.parallel.zero_stage}"
            + (", bf16 gathers" if cfg.parallel.zero_gather_dtype == "bf16" else "")
            + (", synced steps" if args.synced_steps else ""),
            step_s=step_s,
            tokens_per_s=tokens_per_s,
            mfu=per_token * tokens_per_s / launch.world_size / PEAK_FLOPS,
            peak_gib=peak,
            estimate_gib=est.peak / 2**30,
            bubble=bubble,
            bubble_theory=model.pipeline.theoretical_bubble() if model.pipeline else math.nan,
            loss=loss,
            extra={
                "micro_batch": t.micro_batch_size,
                "accumulation": t.gradient_accumulation_steps,
                "seq": seq,
                "device": str(device),
            },
        )
        if profiled is not None:
            r.extra["profile"] = profiled
        if launch.rank == 0:
            print("RESULT " + json.dumps(asdict(r)), flush=True)
        return 0
    finally:
        _shutdown(launch)


def env_report() -> int:
    """The NCCL environment, printed once by a child (the parent does not import torch)."""
    import torch

    nccl = "none"
    if torch.cuda.is_available():
        try:
            nccl = ".".join(map(str, torch.cuda.nccl.version()))
        except Exception as e:  # a torch built without NCCL
            nccl = f"unavailable ({type(e).__name__})"
    gpus = torch.cuda.device_count()
    name = torch.cuda.get_device_name() if gpus else "CPU"
    print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, NCCL {nccl}; {gpus} x {name}")
    for key in sorted(k for k in os.environ if k.startswith("NCCL_")):
        print(f"  {key}={os.environ[key]}")
    return 0


# -- the parent: launch children, format the table -----------------------------------------


def visible_gpus() -> int:
    """GPUs this command may use, without importing torch (CUDA_VISIBLE_DEVICES, nvidia-smi)."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return len([d for d in env.split(",") if d.strip() and d.strip() != "-1"])
    if shutil.which("nvidia-smi") is None:
        return 0
    out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, check=False)
    return len([line for line in out.stdout.splitlines() if line.startswith("GPU ")])


def plan(cases: list[str], counts: list[int]) -> list[tuple[str, int, str]]:
    """(case, processes, reason not run or "") in run order."""
    out = []
    for name in cases:
        case = CASES[name]
        need = case.tp * case.pp
        if case.sweep:
            out += [(name, n, "" if n % need == 0 else f"not run: needs a multiple of {need}")
                    for n in counts]  # fmt: skip
            continue
        fits = [n for n in counts if n % need == 0]
        if fits:
            out.append((name, max(fits), ""))
        else:
            out.append((name, max(counts), f"not run: needs {need} GPUs"))
    return out


class Terminated(Exception):
    """SIGTERM (e.g. `timeout` around the command): stop, and print the rows measured so far."""


def _on_sigterm(signum: int, frame: Any) -> None:
    raise Terminated


def run_child(name: str, n: int, timeout: float, argv: list[str]) -> Result:
    """One case under torchrun in its own session: on a timeout, or when this process is
    terminated, the whole group is killed."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
           str(n), str(Path(__file__).resolve()), *argv, "--worker", "--case", name]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)  # fmt: skip
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        return Result(name, n, error=f"timed out after {timeout:.0f} s")
    except Terminated:
        os.killpg(proc.pid, signal.SIGKILL)
        raise
    result = None
    for line in out.splitlines():
        if line.startswith("RESULT "):
            result = Result(**json.loads(line[len("RESULT ") :]))
        else:
            print(f"  [{name} x{n}] {line}", flush=True)
    if result is not None and proc.returncode == 0:
        return result
    lines = [x for x in (err or out).splitlines() if x.strip()]
    # a rank's exception line, not torchrun's summary that follows it
    raised = [x for x in lines if not x.startswith(" ") and "elastic" not in x
              and ("Error" in x or "Exception" in x)]  # fmt: skip
    return Result(name, n, error=f"exit {proc.returncode}: {(raised or lines or [''])[-1]}")


def _f(x: float, fmt: str) -> str:
    return "" if x is None or math.isnan(x) else format(x, fmt)


def table(results: list[Result]) -> str:
    """One row per (case, GPU count); efficiency against the same case's 1-GPU row."""
    head = ("case", "GPUs", "layout", "step ms", "tokens/s", "tok/s/GPU", "eff %", "MFU %",
            "peak GiB", "est GiB", "bubble %", "theory %")  # fmt: skip
    one = {r.case: r.tokens_per_s for r in results if r.gpus == 1 and not r.error}
    rows = []
    for r in results:
        if r.error:
            rows.append((r.case, str(r.gpus), "failed", r.error[:70], *[""] * 8))
            continue
        per_gpu = r.tokens_per_s / r.gpus
        eff = 100 * per_gpu / one[r.case] if r.case in one else math.nan
        rows.append((r.case, str(r.gpus), r.layout, _f(r.step_s * 1e3, ".1f"),
                     _f(r.tokens_per_s, ",.0f"), _f(per_gpu, ",.0f"), _f(eff, ".1f"),
                     _f(100 * r.mfu, ".2f" if r.mfu < 0.01 else ".1f"), _f(r.peak_gib, ".1f"),
                     _f(r.estimate_gib, ".1f"), _f(100 * r.bubble, ".1f"),
                     _f(100 * r.bubble_theory, ".1f")))  # fmt: skip
    widths = [max(len(x) for x in col) for col in zip(head, *rows, strict=True)]
    lines = [" | ".join(h.ljust(w) for h, w in zip(head, widths, strict=True))]
    lines.append("-+-".join("-" * w for w in widths))
    lines += [" | ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    return "\n".join(lines)


def profile_table(results: list[Result]) -> str:
    """ms per step on rank 0 by kernel family, communication and idle (--profile)."""
    rows = [r for r in results if "profile" in r.extra]
    if not rows:
        return ""
    keys = [fam for fam, _ in FAMILIES] + ["other", "comm", "exposed comm", "idle", "wall"]
    head = ("case", "GPUs", *keys)
    cells = [(r.case, str(r.gpus), *(f"{r.extra['profile']['ms'][k]:.1f}" for k in keys))
             for r in rows]  # fmt: skip
    widths = [max(len(x) for x in col) for col in zip(head, *cells, strict=True)]
    lines = ["ms per step on rank 0, profiled (comm: NCCL kernels, which overlap compute; "
             "exposed comm: NCCL alone; idle: no kernel)"]  # fmt: skip
    lines.append(" | ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)))
    lines.append("-+-".join("-" * w for w in widths))
    lines += [" | ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
    for r in rows:
        for ms, before, after in r.extra["profile"]["gaps"]:
            lines.append(f"  {r.case} x{r.gpus}: idle {ms} ms between {before} and {after}")
    return "\n".join(lines)


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cases", default=",".join(CASES), help=", ".join(CASES))
    p.add_argument("--gpus", default="1,2,4,8", help="GPU counts (processes with --smoke)")
    p.add_argument("--steps", type=int, default=10, help="timed steps per row")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first (compilation)")
    p.add_argument("--compile", default="auto", help="neox's compile key: auto, true, false")
    p.add_argument(
        "--attention-kernel", default="auto", help="neox's attention_kernel key: auto, sdpa, fa4"
    )
    p.add_argument("--activation-checkpointing", default="none", help="none, full, selective")
    p.add_argument("--case-timeout", type=int, default=600, help="seconds per row")
    p.add_argument("--deadline-s", type=float, default=0,
                   help="cut rows at this many seconds from the start, start none within 30 s "
                   "of it (0: no deadline)")  # fmt: skip
    p.add_argument("--verbose", action="store_true", help="print neox-train's setup lines")
    p.add_argument("--synced-steps", action="store_true",
                   help="read every step's loss and norm on the host, as neox-train did under "
                   "several processes before its steps were deferred (for comparison)")  # fmt: skip
    p.add_argument("--profile", action="store_true",
                   help="GPUs: 3 more steps under torch.profiler, a table of where rank 0's "
                   "time goes (compute families, NCCL, exposed NCCL, idle)")  # fmt: skip
    p.add_argument("--smoke", action="store_true", help="tiny model, CPU + gloo, 2 timed steps")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--env-report", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--case", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.smoke:
        args.steps, args.warmup, args.compile = 2, 1, "false"
        if "--cases" not in argv:
            args.cases = SMOKE_CASES
        if "--gpus" not in argv:
            args.gpus = "1,2"
    for name in args.cases.split(","):
        if name not in CASES:
            p.error(f"--cases: unknown case {name!r}; choose from {', '.join(CASES)}")
    return args


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse(argv)
    os.environ.setdefault("NCCL_NVLS_ENABLE", "0")  # NVLink multicast stays off (device notes)
    if args.smoke:
        os.environ["CUDA_VISIBLE_DEVICES"] = ""  # CPU and gloo, GPU or not
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # torchrun's own default, without its warning
    if args.worker or args.env_report:
        import_paths()
        return worker(args) if args.worker else env_report()
    counts = sorted({int(x) for x in args.gpus.split(",")})
    if not args.smoke:
        present = visible_gpus()
        capped = [n for n in counts if n <= present]
        if not capped:
            print(f"scaling: no GPU count in --gpus {args.gpus} fits the {present} GPU(s) present")
            return 2
        counts = capped
    pythonpath = os.pathsep.join(
        str(ROOT / "packages" / pkg / "src") for pkg in ("neox-core", "neox-data", "neox-kernels")
    )
    os.environ["PYTHONPATH"] = os.pathsep.join(
        x for x in (os.environ.get("PYTHONPATH"), pythonpath) if x
    )
    subprocess.run([sys.executable, str(Path(__file__).resolve()), "--env-report", *argv],
                   check=False)  # fmt: skip
    shape = "smoke shapes (2 layers, hidden 64), CPU + gloo" if args.smoke else "bf16"
    print(f"{shape}; {args.steps} timed steps after {args.warmup} warm-up; compile "
          f"{args.compile}; attention {args.attention_kernel}; activation checkpointing "
          f"{args.activation_checkpointing}; MFU vs "
          f"{PEAK_FLOPS / 1e12:.0f} TFLOP/s; GPU counts {counts}", flush=True)  # fmt: skip
    results: list[Result] = []
    began = time.perf_counter()
    stopped = False
    signal.signal(signal.SIGTERM, _on_sigterm)
    for name, n, skip in plan(args.cases.split(","), counts):
        left = args.deadline_s - (time.perf_counter() - began) if args.deadline_s else 1e9
        if skip or left < 30 or stopped:
            why = "not run: terminated" if stopped else f"not run: --deadline-s {args.deadline_s:g}"
            results.append(Result(name, n, error=skip or why))
            continue
        try:
            results.append(run_child(name, n, min(args.case_timeout, left), argv))
        except Terminated:
            stopped = True
            results.append(Result(name, n, error="terminated while running"))
            continue
        r = results[-1]
        status = r.error or f"{r.tokens_per_s:,.0f} tokens/s, MFU {100 * r.mfu:.1f}%"
        print(f"  {name} x{n}: {status}", flush=True)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    print()
    print(table(results), flush=True)
    breakdown = profile_table(results)
    if breakdown:
        print("\n" + breakdown, flush=True)
    if stopped:
        return 128 + signal.SIGTERM
    return 0 if all(not r.error or r.error.startswith("not run") for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
