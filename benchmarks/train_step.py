"""Training-step throughput of `neox-train` itself, beside HF transformers' model of the same shape.

Each neox case is a GPT-NeoX YAML config (examples/configs/pythia/*.yml, benchmarks/configs/
llama-1.1B.yml) read by neox-core's config loader and built as `neox-train` builds it
(`build_parallel_model`: model, activation checkpointing, compile; `build_optimizer_and_schedule`;
`build_step_settings`), then timed through `train_step`, the function the training loop
calls, on synthetic tokens. Its results are read once after the timed steps, as the loop
reads them at a log interval. The HF case is `transformers`' model of the same shape in the
same regime: fp32 parameters (the master weights), bf16 autocast, fused AdamW, gradient
clipping 1.0, cross entropy on fp32 logits, the whole model under `torch.compile`.

Prints tokens/s, model TFLOPS per GPU (6·N + 12·L·d·S per token, N without the input
embedding: neox_core.training.throughput), MFU against 989 TFLOP/s (H100/H200 dense bf16),
peak memory and neox's ratio to HF.

    python3 benchmarks/train_step.py                       # the four cases, neox and HF
    python3 benchmarks/train_step.py --cases 1B --profile  # + where Pythia-1B's GPU time goes
    python3 benchmarks/train_step.py --isolate             # each case in its own process
    python3 benchmarks/train_step.py --smoke               # tiny shapes on a CPU, in seconds
    python3 benchmarks/train_step.py --cases llama-1.1B --precision fp8  # neox with fp8 linears

`--precision fp8` sets neox's `precision: fp8` (decoder linears in float8 through torchao,
the rest bf16); HF rows stay bf16 and say so in the precision column.

Runs from a plain checkout with PYTHONPATH=packages/neox-core/src:packages/neox-data/src:
packages/neox-kernels/src (torch, transformers and pyyaml installed; uv is not needed, and
neox-kernels' compiled parts are used where built and skipped where not).
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import itertools
import json
import os
import subprocess
import sys
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PEAK_FLOPS = 989e12
PYTHIA = ROOT / "examples" / "configs" / "pythia"


@dataclass(frozen=True)
class Shape:
    config: Path
    seq: int
    micro_batch: int
    extra: tuple[tuple[str, Any], ...] = ()  # more overrides


CASES = {
    "410M": Shape(PYTHIA / "410M.yml", 2048, 8),
    "1B": Shape(PYTHIA / "1B.yml", 2048, 8),
    "llama-1.1B": Shape(ROOT / "benchmarks" / "configs" / "llama-1.1B.yml", 2048, 8),
    "1B-16k": Shape(PYTHIA / "1B.yml", 16384, 1),
    "smoke": Shape(
        PYTHIA / "410M.yml",
        32,
        2,
        (
            ("num_layers", 2),
            ("attention_config", [[["global"], 2]]),
            ("hidden_size", 64),
            ("num_attention_heads", 4),
            ("vocab_size", 256),
        ),
    ),
}


@dataclass
class Result:
    case: str
    impl: str  # "neox" | "hf"
    precision: str = "bf16"  # "bf16" | "fp8" (neox only)
    step_s: float = float("nan")
    tokens_per_s: float = float("nan")
    tflops: float = float("nan")
    mfu: float = float("nan")
    peak_gib: float = float("nan")
    loss: float = float("nan")
    error: str = ""
    profile: dict[str, float] | None = None
    top_kernels: list[tuple[str, float, int]] | None = None  # (kernel, ms per step, calls per step)
    gaps: list[tuple[float, str, str]] | None = None  # (idle ms, kernel before, kernel after)


PACKAGES = (
    ("neox-core", "neox_core"),
    ("neox-data", "neox_data"),
    ("neox-kernels", "neox_kernels"),
)


def _missing_sources() -> list[str]:
    """src folders of the workspace packages this Python cannot import (a plain checkout)."""
    return [str(ROOT / "packages" / pkg / "src") for pkg, mod in PACKAGES
            if importlib.util.find_spec(mod) is None]  # fmt: skip


def import_paths() -> None:
    """Make the workspace packages importable from the source tree, installed or not."""
    for src in _missing_sources():
        sys.path.insert(0, src)


def child_env() -> dict[str, str]:
    """The environment for child processes (neox-train runs): NVLink multicast off, and the
    source folders `import_paths` would add appended to PYTHONPATH; an installed or
    PYTHONPATH-given build (neox-kernels with its compiled extensions) keeps precedence."""
    env = dict(os.environ)
    env.setdefault("NCCL_NVLS_ENABLE", "0")  # NVLink multicast off, as the device notes ask
    missing = _missing_sources()
    if missing:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (env.get("PYTHONPATH"), *missing) if p)
    return env


def regime_overrides(seq: int, micro_batch: int, args: argparse.Namespace) -> dict[str, Any]:
    """GPT-NeoX keys of the benchmarks' regime: bf16 with fp32 master weights, no dropout,
    `--activation-checkpointing` and `--compile` as given (also benchmarks/scaling.py's)."""
    return {
        "fp16": {"enabled": False},
        "bf16": {"enabled": True},
        "seq_length": seq,
        "max_position_embeddings": seq,
        "train_micro_batch_size_per_gpu": micro_batch,
        "hidden_dropout": 0.0,
        "attention_dropout": 0.0,
        "checkpoint_activations": False,
        "activation_checkpoint_mode": args.activation_checkpointing,
        "compile": args.compile,
        "attention_kernel": args.attention_kernel,
        "train_iters": 1000,
    }


def load_case_config(name: str, args: argparse.Namespace, precision: str = "bf16"):
    """The case's GPT-NeoX YAML through neox-core's loader, in the benchmark's regime."""
    from neox_core.config import load_config

    shape = CASES[name]
    overrides = regime_overrides(shape.seq, shape.micro_batch, args)
    overrides["precision"] = precision  # fp8 agrees with bf16.enabled: bf16 plus float8 linears
    if "pythia" in str(shape.config):
        overrides["vocab_size"] = 50277  # the Pythia tokenizer's size (padded to 50304)
    overrides.update(dict(shape.extra))
    cfg = load_config([shape.config], overrides)
    if cfg.training.gradient_accumulation_steps != 1:
        raise ValueError(f"{shape.config}: the benchmark times one micro batch per step")
    return cfg


def synthetic_batch(vocab: int, micro_batch: int, seq: int, device):
    import torch

    g = torch.Generator().manual_seed(0)
    text = torch.randint(0, vocab, (micro_batch, seq + 1), generator=g)
    return text.pin_memory() if device.type == "cuda" else text


def build_neox(cfg, device, log):
    """neox-train's model, optimizer and step settings; returns (model, step(i), read(results))."""
    from neox_core.distributed.parallel_dims import ParallelDims
    from neox_core.training.run import (
        build_optimizer_and_schedule,
        build_parallel_model,
        build_step_settings,
    )
    from neox_core.training.step import resolve_results, train_step

    model = build_parallel_model(cfg, ParallelDims.from_config(cfg, 1), device, log, None)
    opt = build_optimizer_and_schedule(cfg, model)
    opt.schedule.apply(opt.optimizer)
    settings = build_step_settings(cfg, device, log, None, model)
    batch = synthetic_batch(cfg.model.vocab_size, cfg.training.micro_batch_size,
                             cfg.data.seq_length, device)  # fmt: skip
    data = itertools.repeat({"text": batch})

    def step(i: int):
        return train_step(model.trained, opt.optimizer, opt.schedule, opt.scaler, data, settings, i)

    def read(results) -> float:
        return float(resolve_results(list(results))[-1].loss)

    return model.module, step, read


def build_hf(cfg, device, log):
    """transformers' model of the same shape, compiled, in the same precision regime."""
    import torch
    import torch.nn.functional as F
    import transformers

    from neox_core.models.hf_names import hf_architecture, hf_config_kwargs

    arch = hf_architecture(cfg.model)
    config_cls = getattr(transformers, arch.replace("ForCausalLM", "Config"))
    hf_cfg = config_cls(**hf_config_kwargs(cfg.model), attn_implementation="sdpa")
    torch.manual_seed(cfg.training.seed)
    with torch.device(device):  # initialise on the GPU: minutes less for 1B than on a CPU
        model = getattr(transformers, arch)(hf_cfg)
    model.train()
    forward = torch.compile(model) if cfg.training.compile != "false" else model
    log(f" > HF {arch}, {'compiled' if forward is not model else 'eager'}")
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.1,
        fused=device.type == "cuda",
    )  # fmt: skip
    batch = synthetic_batch(cfg.model.vocab_size, cfg.training.micro_batch_size,
                             cfg.data.seq_length, device).to(device)  # fmt: skip
    inputs, targets = batch[:, :-1], batch[:, 1:]

    def step(i: int):
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16):
            logits = forward(input_ids=inputs, use_cache=False).logits
        loss = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.detach()

    def read(results) -> float:
        return float(list(results)[-1])

    return model, step, read


# kernel-name families of a training step on Hopper, first match wins
FAMILIES = (
    ("attention", ("flash", "fmha", "cudnn", "attention", "sdpa", "attn")),
    ("optimizer", ("adam", "multi_tensor", "foreach", "clip", "norm_kernel")),
    ("loss", ("cross_entropy", "log_softmax", "logsoftmax", "nll_loss", "softmax_warp")),
    ("matmul", ("gemm", "nvjet", "cutlass", "xmma", "sm90", "matmul", "mm_")),
    ("norm/elementwise", ("triton", "elementwise", "layer_norm", "rms", "norm", "vectorized",
                          "reduce", "gelu", "silu", "copy", "cast", "fill")),
)  # fmt: skip


def family(kernel: str) -> str:
    name = kernel.lower()
    for fam, keys in FAMILIES:
        if any(k in name for k in keys):
            return fam
    return "other"


def kernel_spans(prof) -> list[tuple[float, float, str]]:
    """(start µs, end µs, name) of every GPU kernel and copy the profiler saw, by start; a
    record_function range mirrored on the GPU ("Optimizer.step#AdamW.step") is left out, as
    it spans kernels listed on their own."""
    import torch

    return sorted(
        (e.time_range.start, e.time_range.end, e.name)
        for e in prof.events()
        if e.device_type == torch.autograd.DeviceType.CUDA
        and not getattr(e, "is_user_annotation", False)
        and "#" not in e.name
        and e.time_range.end > e.time_range.start
    )


def idle_gaps(prof, top: int) -> list[tuple[float, str, str]]:
    """The `top` longest stretches with no kernel running, as (ms, kernel before, kernel after):
    where the step waits on the host (launch overhead, a sync, Python between graphs). The
    profiler's own cost per op slows the host and can widen them: inductor's C++ wrapper
    closed most of Pythia-410M's profiled gaps but left its unprofiled step time as it was
    (docs/architecture.md)."""
    gaps, end, before = [], None, ""
    for start, stop, name in kernel_spans(prof):
        if end is not None and start > end:
            gaps.append(((start - end) / 1e3, before, name))
        if end is None or stop > end:
            end, before = stop, name
    return sorted(gaps, reverse=True)[:top]


def profile_steps(
    step, device, steps: int = 3, top: int = 0
) -> tuple[dict[str, float], list[tuple[str, float, int]], list[tuple[float, str, str]]]:
    """ms per step by kernel family and idle (wall minus GPU-busy time), from torch.profiler;
    with `top`, also the `top` kernels that take the most time (name, ms and calls per step)
    and the `top` longest idle gaps of the profiled steps."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        start = time.perf_counter()
        for i in range(steps):
            step(10_000 + i)
        torch.cuda.synchronize()
        wall = (time.perf_counter() - start) * 1e3 / steps
    out: dict[str, float] = {"wall": wall}
    kernels: list[tuple[str, float, int]] = []
    busy = 0.0
    for evt in prof.key_averages():
        if evt.device_type != torch.autograd.DeviceType.CUDA:
            continue
        # a record_function range mirrored on the GPU ("Optimizer.step#AdamW.step") spans
        # kernels counted on their own: counting it too made busy time exceed the wall
        if getattr(evt, "is_user_annotation", False) or "#" in evt.key:
            continue
        ms = evt.self_device_time_total / 1e3 / steps
        if ms <= 0:
            continue
        fam = family(evt.key)
        out[fam] = out.get(fam, 0.0) + ms
        kernels.append((evt.key, ms, evt.count // steps))
        busy += ms
    out["idle"] = max(0.0, wall - busy)
    kernels.sort(key=lambda k: -k[1])
    return out, kernels[:top], idle_gaps(prof, top) if top else []


def run_case(name: str, impl: str, args: argparse.Namespace) -> Result:
    import torch

    from neox_core.training.throughput import flops_per_token, non_embedding_params

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    precision = args.precision if impl == "neox" else "bf16"
    cfg = load_case_config(name, args, precision)
    log = print if args.verbose else (lambda msg: None)
    model, step, read = (build_neox if impl == "neox" else build_hf)(cfg, device, log)
    m = cfg.model
    n = non_embedding_params(model, tied_embeddings=m.tie_embeddings)
    seq, mb = cfg.data.seq_length, cfg.training.micro_batch_size
    per_token = flops_per_token(n, m.num_layers, m.hidden_size, seq)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    start = time.perf_counter()
    warm = [step(i) for i in range(1, args.warmup + 1)]
    read(warm)
    sync()
    warmup_s = time.perf_counter() - start
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    results = [step(args.warmup + i) for i in range(1, args.steps + 1)]
    loss = read(results)  # the loop reads deferred results at its log interval, once
    sync()
    step_s = (time.perf_counter() - start) / args.steps
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan")
    tokens_per_s = mb * seq / step_s
    flops = per_token * tokens_per_s
    r = Result(name, impl, precision, step_s, tokens_per_s, flops / 1e12, flops / PEAK_FLOPS)
    r.peak_gib, r.loss = peak, loss
    print(
        f"  {name} {impl} {precision}: {tokens_per_s:,.0f} tokens/s, MFU {100 * r.mfu:.1f}%, "
        f"last loss {loss:.5f} (warm-up incl. compile {warmup_s:.1f} s)",
        flush=True,
    )
    if args.profile and device.type == "cuda" and name in args.profile_cases.split(","):
        try:
            r.profile, r.top_kernels, r.gaps = profile_steps(step, device, top=args.profile_top)
        except Exception as e:  # the timed row stands without its profile
            print(f"  {name} {impl}: profile failed: {type(e).__name__}: {e}", flush=True)
    return r


def release() -> None:
    """Free the finished case's model, optimizer and compiled graphs before the next."""
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    torch._dynamo.reset()


def run_isolated(name: str, impl: str, prec: str, timeout: int, argv: list[str]) -> Result:
    """One case in a child process: a crash, hang or OOM there costs only that row."""
    cmd = [sys.executable, __file__, *argv, "--cases", name, "--impls", impl, "--emit-json"]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return Result(name, impl, prec, error=f"timed out after {timeout} s")
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return Result(**json.loads(line[len("RESULT ") :]))
        print(line, flush=True)
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
    return Result(name, impl, prec, error=f"exit {proc.returncode}: {' / '.join(tail)}")


def table(results: list[Result]) -> str:
    head = (
        "model",
        "impl",
        "precision",
        "step ms",
        "tokens/s",
        "TFLOPS/GPU",
        "MFU %",
        "peak GiB",
        "vs HF",
    )
    hf = {r.case: r for r in results if r.impl == "hf" and not r.error}
    rows = []
    for r in results:
        if r.error:
            rows.append((r.case, r.impl, r.precision, "failed", "", "", "", "", r.error[:60]))
            continue
        ratio = ""
        if r.impl == "neox" and r.case in hf:
            ratio = f"{r.tokens_per_s / hf[r.case].tokens_per_s:.2f}x"
        rows.append(
            (
                r.case,
                r.impl,
                r.precision,
                f"{r.step_s * 1e3:.1f}",
                f"{r.tokens_per_s:,.0f}",
                f"{r.tflops:.1f}",
                f"{100 * r.mfu:.1f}",
                f"{r.peak_gib:.1f}",
                ratio,
            )
        )
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows, strict=True)]
    lines = [" | ".join(h.ljust(w) for h, w in zip(head, widths, strict=True))]
    lines.append("-+-".join("-" * w for w in widths))
    lines += [" | ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    return "\n".join(lines)


def profile_table(results: list[Result]) -> str:
    profiled = [r for r in results if r.profile]
    if not profiled:
        return ""
    fams = ["wall"] + [f for f, _ in FAMILIES] + ["other", "idle"]
    lines = ["ms per step (share of wall) | " + " | ".join(f"{r.case} {r.impl}" for r in profiled)]
    for fam in fams:
        cells = []
        for r in profiled:
            ms = r.profile.get(fam, 0.0)  # type: ignore[union-attr]
            share = 100 * ms / r.profile["wall"]  # type: ignore[index]
            cells.append(f"{ms:.1f}" if fam == "wall" else f"{ms:.1f} ({share:.0f} %)")
        lines.append(f"{fam} | " + " | ".join(cells))
    for r in profiled:
        if r.top_kernels:
            lines += ["", f"top kernels, {r.case} {r.impl}: ms per step | calls | family | kernel"]
            lines += [
                f"{ms:7.2f} | {calls:4d} | {family(k)} | {k[:110]}"
                for k, ms, calls in r.top_kernels
            ]
        if r.gaps:
            lines += ["", f"longest idle gaps, {r.case} {r.impl} (3 steps): ms | before -> after"]
            lines += [f"{ms:7.3f} | {a[:60]} -> {b[:60]}" for ms, a, b in r.gaps]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cases", default="1B,llama-1.1B,410M,1B-16k", help=", ".join(CASES))
    p.add_argument("--impls", default="neox,hf", help="comma list of: neox, hf")
    p.add_argument("--steps", type=int, default=10, help="timed steps per case")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first (compilation)")
    p.add_argument("--compile", default="auto", help="neox's compile key: auto, true, false")
    p.add_argument(
        "--attention-kernel", default="auto", help="neox's attention_kernel key: auto, sdpa, fa4"
    )
    p.add_argument("--activation-checkpointing", default="none", help="none, full, selective")
    p.add_argument(
        "--precision",
        default="bf16",
        choices=("bf16", "fp8"),
        help="neox's precision key: fp8 trains the decoder linears in float8 (torchao); "
        "HF rows stay bf16",
    )
    p.add_argument("--profile", action="store_true", help="kernel-family breakdown (see below)")
    p.add_argument("--profile-cases", default="1B", help="the cases --profile breaks down")
    p.add_argument(
        "--profile-top", type=int, default=0,
        help="with --profile: list the N costliest kernels and the N longest idle gaps",
    )  # fmt: skip
    p.add_argument("--isolate", action="store_true", help="each case in its own process")
    p.add_argument("--case-timeout", type=int, default=300, help="seconds, with --isolate")
    p.add_argument(
        "--deadline-s",
        type=float,
        default=0,
        help="with --isolate: cut cases at this many seconds from the start, start none within "
        "30 s of it (0: no deadline)",
    )
    p.add_argument("--verbose", action="store_true", help="print neox-train's setup lines")
    p.add_argument("--smoke", action="store_true", help="tiny shapes, eager, CPU, seconds")
    p.add_argument("--emit-json", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.smoke:
        args.cases, args.steps, args.warmup, args.compile = "smoke", 2, 1, "false"
    for name in args.cases.split(","):
        if name not in CASES:
            p.error(f"--cases: unknown case {name!r}; choose from {', '.join(CASES)}")

    import_paths()
    import torch

    if not args.emit_json:
        name = torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU"
        regime = "fp32 params + bf16 autocast"
        if args.precision == "fp8":
            regime += " + neox decoder linears in fp8 (torchao tensorwise; HF rows bf16)"
        print(
            f"torch {torch.__version__} on {name}; {regime}, fused AdamW, "
            f"clip 1.0; {args.steps} timed steps after {args.warmup} warm-up; neox compile "
            f"{args.compile}, attention {args.attention_kernel}, activation checkpointing "
            f"{args.activation_checkpointing}; "
            f"MFU vs {PEAK_FLOPS / 1e12:.0f} TFLOP/s",
            flush=True,
        )
    child_argv = [a for a in argv if a != "--isolate"]
    results = []
    began = time.perf_counter()
    for name, impl in itertools.product(args.cases.split(","), args.impls.split(",")):
        prec = args.precision if impl == "neox" else "bf16"
        left = args.deadline_s - (time.perf_counter() - began) if args.deadline_s else 1e9
        if left < 30:
            results.append(
                Result(name, impl, prec, error=f"not run: --deadline-s {args.deadline_s:g}")
            )
            continue
        if args.isolate:
            timeout = int(min(args.case_timeout, left))
            results.append(run_isolated(name, impl, prec, timeout, child_argv))
            continue
        try:
            results.append(run_case(name, impl, args))
        except Exception as e:  # one failing case (OOM, a compile error) keeps the table
            traceback.print_exc()
            results.append(Result(name, impl, prec, error=f"{type(e).__name__}: {e}"))
        finally:
            release()
    if args.emit_json:
        for r in results:
            print("RESULT " + json.dumps(asdict(r)), flush=True)
        return 0
    print()
    print(table(results))
    prof = profile_table(results)
    if prof:
        print()
        print(prof)
    return 0 if all(not r.error for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
