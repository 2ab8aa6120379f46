"""Fused kernels of neox-kernels against torch eager, torch.compile, Liger-Kernel and quack (GPU).

For each op and shape: median time of forward and of forward + backward, achieved bandwidth
(the fewest bytes the op must move: each input read once, each output written once) and that
bandwidth as a share of a device-to-device copy measured in the same run. The fused
linear + cross-entropy reports peak memory against torch's linear + cross_entropy instead,
beside the bytes of the gradients it returns ("grads MB"), which every implementation holds.
"adamw" times one optimizer step over Pythia-1B's fp32 parameters (neox's FusedAdamW against
torch's fused and foreach AdamW) in the fwd+bwd column.

    python benchmarks/kernels.py [--quick] [--no-compile] [--ops swiglu,bias_gelu] [--json out.json]
                                 [--kernel-times]

`--kernel-times` adds, under each row (AdamW's apart), the GPU kernels of one forward +
backward and their times from the torch profiler (10 eager calls, microseconds per call):
which kernel of an op is short of the copy bandwidth, e.g. a norm's backward against its
forward.

Needs a CUDA device; Liger-Kernel and quack (quack-kernels, CuTe DSL kernels: RMSNorm, LayerNorm,
linear + cross-entropy) are used when importable. Prints the table last.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from neox_kernels import ops

MISSING: dict[str, str] = {}  # baseline library -> why it is not in the table

try:
    from liger_kernel.transformers import functional as liger
except Exception as e:  # any import problem means "not available"; the header says which
    liger = None
    MISSING["liger"] = f"{type(e).__name__}: {e}"

try:
    import quack
    from quack.rmsnorm import layernorm_bwd as quack_ln_bwd
    from quack.rmsnorm import layernorm_fwd as quack_ln_fwd
except Exception as e:  # any import problem means "not available"; the header says which
    quack = None
    MISSING["quack"] = f"{type(e).__name__}: {e}"

quack_lce = None  # its own import: it fails where the norms import (quack 0.6.5, cutlass-dsl 4.8.1)
if quack is not None:
    try:
        from quack.linear_cross_entropy import chunked_linear_cross_entropy as quack_lce
    except Exception as e:
        MISSING["quack linear+cross_entropy"] = f"{type(e).__name__}: {e}"


@dataclass
class Row:
    op: str
    shape: str
    impl: str
    fwd_ms: float
    fwd_bwd_ms: float
    gbps: float  # forward + backward bytes over forward + backward time
    copy_share: float  # gbps over the copy bandwidth
    peak_mb: float
    timing: str  # "graph": CUDA-graph replays (launch overhead removed), or "eager"
    # bytes of the gradients the op returns (its inputs' sizes, dtypes): a floor of peak_mb that
    # any implementation reaches, so the memory it adds is judged above it
    grads_mb: float = math.nan


def bench(fn: Callable[[], object], reps: int = 50) -> float:
    """Median milliseconds of fn, timed with CUDA events after a warm-up."""
    for _ in range(5):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    times.sort()
    return times[len(times) // 2]


def bench_graphed(fn: Callable[[], object], reps: int = 50) -> tuple[float, str]:
    """Median ms of fn captured in a CUDA graph (GPU time without Python and launch overhead);
    falls back to eager timing when fn cannot be captured (host syncs, for instance)."""
    try:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(3):
                fn()
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            fn()
        return bench(graph.replay, reps), "graph"
    except Exception:  # not capturable: time it eagerly
        torch.cuda.synchronize()
        return bench(fn, reps), "eager"


def copy_bandwidth() -> float:
    """GB/s of a 2 GiB device-to-device copy, counting bytes read plus bytes written."""
    src = torch.randn(2**29, device="cuda")
    dst = torch.empty_like(src)
    ms = bench(lambda: dst.copy_(src), reps=20)
    return 2 * src.numel() * 4 / ms / 1e6


def _fwd_bwd(fn, inputs, n_grad):
    # made on the first call and kept: filling them is not the op's work
    cots: list[torch.Tensor] = []

    def run():
        outs = fn(*inputs)
        outs = outs if isinstance(outs, tuple) else (outs,)
        if not cots:
            cots.extend(torch.ones_like(o) for o in outs)
        torch.autograd.grad(outs, inputs[:n_grad], cots, allow_unused=True)

    return run


OPS = (
    "rmsnorm",
    "layernorm",
    "swiglu",
    "bias_gelu",
    "gelu",
    "rotary",
    "linear+cross_entropy",
    "adamw",
)
_SELECTED: tuple[str, ...] = OPS
_KERNEL_TIMES = False


@dataclass
class Direct:
    """An op timed through its own forward and backward functions instead of autograd: the
    in-place rotary, which autograd could only run on a copy of a leaf input (the model runs
    it on the QKV matmul's fresh output). Both take the inputs; backward's is the gradient."""

    forward: Callable
    backward: Callable


def measure(op, shape, impls, make_inputs, n_grad, nbytes, copy_gbps, rows, graph=True):
    """Time each implementation; rows are printed as they come (a later crash keeps them).

    An implementation is a function of `make_inputs()`, or (function, its own make_inputs)
    where it needs other input dtypes (quack's LayerNorm takes only fp32 weights), or a
    `Direct` pair of forward and backward."""
    if not any(op.startswith(sel) for sel in _SELECTED):
        return
    for name, fn in impls.items():
        if fn is None:
            continue
        fn, inputs = fn if isinstance(fn, tuple) else (fn, make_inputs)
        inputs = inputs()
        try:
            if isinstance(fn, Direct):

                def forward(fn=fn, inputs=inputs):
                    with torch.no_grad():
                        fn.forward(*inputs)

                def fwd_bwd(fn=fn, inputs=inputs):
                    with torch.no_grad():
                        fn.forward(*inputs)
                        fn.backward(*inputs)
            else:

                def forward(fn=fn, inputs=inputs):
                    with torch.no_grad():
                        fn(*inputs)

                fwd_bwd = _fwd_bwd(fn, inputs, n_grad)
            # a first call compiles or autotunes (torch.compile, quack): not the op's memory
            fwd_bwd()
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            before = torch.cuda.memory_allocated()
            fwd_bwd()
            torch.cuda.synchronize()
            peak = (torch.cuda.max_memory_allocated() - before) / 2**20
            if graph:
                fwd, timing = bench_graphed(forward)
                fb, timing_b = bench_graphed(fwd_bwd)
            else:  # milliseconds of matmuls: launch overhead does not matter
                fwd, fb, timing, timing_b = bench(forward), bench(fwd_bwd), "eager", "eager"
            timing = timing if timing == timing_b else f"{timing}/{timing_b}"
        except Exception as error:  # a failing baseline is reported, not fatal
            print(f"  {op} {shape} {name}: failed ({type(error).__name__}: {error})"[:300])
            continue
        gbps = nbytes / fb / 1e6 if nbytes else math.nan
        grads = [t for t in inputs[:n_grad] if t.is_floating_point()]
        grads_mb = sum(t.numel() * t.element_size() for t in grads) / 2**20
        rows.append(Row(op, shape, name, fwd, fb, gbps, gbps / copy_gbps, peak, timing, grads_mb))
        print(_format(rows[-1]), flush=True)
        if _KERNEL_TIMES:
            print_kernel_times(fwd_bwd)


def print_kernel_times(fwd_bwd: Callable[[], object], calls: int = 10) -> None:
    """The device kernels of `calls` runs of fwd_bwd, microseconds per run, longest first."""
    from torch.profiler import ProfilerActivity, profile

    fwd_bwd()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(calls):
            fwd_bwd()
        torch.cuda.synchronize()
    kernels = [e for e in prof.key_averages() if e.device_time_total > 0]
    for e in sorted(kernels, key=lambda e: -e.device_time_total)[:8]:
        print(f"      {e.device_time_total / calls:9.1f} us  {e.count // calls:3d}x  {e.key[:90]}")


def pythia_1b_shapes(
    layers: int = 16, hidden: int = 2048, vocab: int = 50304
) -> list[tuple[int, ...]]:
    """Pythia-1B's parameter shapes: embedding, per layer QKV, dense, fc1, fc2 (with biases)
    and two LayerNorms, the final norm, the untied head (1.01 B values at 16 layers)."""
    h = hidden
    layer = [(3 * h, h), (3 * h,), (h, h), (h,), (4 * h, h), (4 * h,), (h, 4 * h), (h,)]
    layer += [(h,)] * 4  # input and post-attention LayerNorm weight and bias
    return [(vocab, h), *layer * layers, (h,), (h,), (vocab, h)]


def _adamw_groups(shapes: list[tuple[int, ...]], gen: torch.Generator) -> list[dict]:
    """fp32 CUDA parameters of these shapes with random gradients, in GPT-NeoX's two groups."""
    params = []
    for shape in shapes:
        p = torch.nn.Parameter(torch.empty(shape, device="cuda").normal_(generator=gen))
        p.grad = torch.empty_like(p).normal_(generator=gen)
        params.append(p)
    return [
        {"params": [p for p in params if p.ndim > 1], "weight_decay": 0.1},
        {"params": [p for p in params if p.ndim == 1], "weight_decay": 0.0},
    ]


def measure_optimizers(copy_gbps: float, rows: list[Row], quick: bool) -> None:
    """One AdamW step over Pythia-1B's fp32 parameters (random gradients), eager: neox's
    FusedAdamW, torch's fused and foreach AdamW. Bytes: 28 per parameter (param, grad and two
    moments read, param and moments written); "fwd+bwd" holds the step's time."""
    if "adamw" not in _SELECTED:
        return
    from neox_kernels.optim import FusedAdamW, kernel_available

    shapes = pythia_1b_shapes(layers=2 if quick else 16)
    n = sum(math.prod(s) for s in shapes)
    shape = f"Pythia-1B{' 2L' if quick else ''} {n / 1e9:.2f}B fp32"
    gen = torch.Generator(device="cuda").manual_seed(0)  # not the default generator (see main)
    impls = {
        "neox FusedAdamW": (lambda g: FusedAdamW(g, lr=1e-4, fused=True)) if kernel_available() else None,
        "torch fused": lambda g: torch.optim.AdamW(g, lr=1e-4, fused=True),
        "torch foreach": lambda g: torch.optim.AdamW(g, lr=1e-4, foreach=True),
    }  # fmt: skip
    for name, make in impls.items():
        if make is None:
            print(f"  adamw {shape} {name}: skipped (neox-kernels built without CUDA)")
            continue
        groups = _adamw_groups(shapes, gen)
        try:
            opt = make(groups)
            opt.step()  # the moments are allocated here
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            before = torch.cuda.memory_allocated()
            opt.step()
            torch.cuda.synchronize()
            peak = (torch.cuda.max_memory_allocated() - before) / 2**20
            ms = bench(opt.step, reps=20)
        except Exception as error:  # a failing baseline is reported, not fatal
            print(f"  adamw {shape} {name}: failed ({type(error).__name__}: {error})"[:300])
            continue
        finally:
            groups = opt = None
            torch.cuda.empty_cache()
        gbps = 28 * n / ms / 1e6
        rows.append(Row("adamw", shape, name, math.nan, ms, gbps, gbps / copy_gbps, peak, "eager"))
        print(_format(rows[-1]), flush=True)


def _autocast(fn):
    """fn under bf16 autocast, as neox-train runs its forward."""

    def run(*args):
        with torch.autocast("cuda", dtype=torch.bfloat16):
            return fn(*args)

    return run


def _compiled(fn, enabled):
    return torch.compile(fn, dynamic=False) if enabled else None


class _QuackLayerNorm(torch.autograd.Function):
    """quack's LayerNorm forward and backward functions (it has no autograd of its own for
    LayerNorm); weight and bias fp32, as quack requires."""

    @staticmethod
    def forward(ctx, x, w, b):
        out, rstd, mean = quack_ln_fwd(x, w, b, 1e-5, return_rstd=True, return_mean=True)
        ctx.save_for_backward(x, w, rstd, mean)
        return out

    @staticmethod
    def backward(ctx, dout):
        x, w, rstd, mean = ctx.saved_tensors
        return quack_ln_bwd(x, w, dout.contiguous(), rstd, mean, has_bias=True)


def rms_ref(x, r, w):
    h = x + r
    h32 = h.float()
    return (h32 * torch.rsqrt(h32.pow(2).mean(-1, keepdim=True) + 1e-5) * w.float()).to(x.dtype), h


def ln_ref(x, w, b):
    return F.layer_norm(x, (x.shape[-1],), w, b, 1e-5)


def swiglu_ref(h):
    up, gate = h.chunk(2, dim=-1)
    return up * F.silu(gate)


def gelu_ref(x, b):
    return F.gelu(x + b, approximate="tanh")


def rotary_ref_factory(heads, rot, base):
    def ref(qkv):
        b, s, width = qkv.shape
        d = width // (3 * heads)
        q, k, v = qkv.view(b, s, heads, 3 * d).split(d, dim=-1)
        inv = 1.0 / (base ** (torch.arange(0, rot, 2, device=qkv.device).float() / rot))
        ang = torch.outer(torch.arange(s, device=qkv.device, dtype=torch.float32), inv)
        cos, sin = torch.cat([ang, ang], -1).cos().to(qkv.dtype), torch.cat([ang, ang], -1).sin().to(qkv.dtype)  # fmt: skip

        def turn(t):
            x, rest = t[..., :rot], t[..., rot:]
            x1, x2 = x.chunk(2, dim=-1)
            return torch.cat([x * cos[:, None] + torch.cat([-x2, x1], -1) * sin[:, None], rest], -1)

        return torch.cat([turn(q), turn(k), v], -1).view(b, s, width)

    return ref


def ce_ref(h, w, labels):
    return F.cross_entropy((h @ w.T).float(), labels, ignore_index=-100)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one small shape per op")
    parser.add_argument("--no-compile", action="store_true", help="skip torch.compile baselines")
    parser.add_argument("--json", help="also write the rows to this JSON file")
    parser.add_argument("--ops", default=",".join(OPS), help=f"comma list of: {', '.join(OPS)}")
    parser.add_argument(
        "--kernel-times", action="store_true", help="each row's GPU kernels (torch profiler)"
    )
    args = parser.parse_args(argv)
    global _SELECTED, _KERNEL_TIMES
    _SELECTED = tuple(o.strip() for o in args.ops.split(",") if o.strip())
    _KERNEL_TIMES = args.kernel_times
    unknown = sorted(set(_SELECTED) - set(OPS))
    if unknown:
        parser.error(f"--ops: unknown {unknown}; choose from {', '.join(OPS)}")
    if not torch.cuda.is_available():
        print("needs a CUDA device", file=sys.stderr)
        return 2
    torch.manual_seed(0)
    dev, bf16 = "cuda", torch.bfloat16
    comp = not args.no_compile
    copy_gbps = copy_bandwidth()
    rows: list[Row] = []
    tokens = 4096 if args.quick else 16384
    print(f"copy bandwidth {copy_gbps:.0f} GB/s; fused ops compiled: {ops.cuda_available()}")
    for name, why in MISSING.items():
        print(f"no {name} rows: {why}")

    cpu_gen = torch.Generator().manual_seed(0)  # inputs never touch the CUDA generator, which a
    # failed graph capture can leave unusable

    def leaf(*shape, scale=1.0):
        x = torch.randn(*shape, generator=cpu_gen) * scale
        return x.to(dev, bf16).requires_grad_()

    for hidden in (2048,) if args.quick else (2048, 4096):
        shape = f"{tokens}x{hidden}"
        e = 2  # bytes per bf16 element
        n = tokens * hidden
        # fwd: x, r in; out, h out. bwd: dy, dh, h in; dx out (weight terms negligible)
        measure("rmsnorm+residual", shape, {
            "neox": lambda x, r, w: ops.rms_norm(x, w, None, 1e-5, residual=r),
            "eager": rms_ref,
            "compile": _compiled(rms_ref, comp),
            "liger": (lambda x, r, w: liger.liger_fused_add_rms_norm(x, r, w, 1e-5, in_place=False))
            if liger else None,
            "quack": (lambda x, r, w: quack.rmsnorm(x, w, residual=r, eps=1e-5, prenorm=True))
            if quack else None,
        }, lambda hidden=hidden: (leaf(tokens, hidden), leaf(tokens, hidden), leaf(hidden)), 3, 8 * n * e,
            copy_gbps, rows)  # fmt: skip

        def fp32_affine(hidden=hidden):
            w, b = (leaf(hidden).float().detach().requires_grad_() for _ in "wb")
            return leaf(tokens, hidden), w, b

        measure("layernorm", shape, {
            "neox": lambda x, w, b: ops.layer_norm(x, w, b, 1e-5),
            "eager": ln_ref,
            "compile": _compiled(ln_ref, comp),
            "liger": (lambda x, w, b: liger.liger_layer_norm(x, w, b, 1e-5)) if liger else None,
            "quack (fp32 w, b)": (_QuackLayerNorm.apply, fp32_affine) if quack else None,
        }, lambda hidden=hidden: (leaf(tokens, hidden), leaf(hidden), leaf(hidden)), 3, 5 * n * e, copy_gbps,
            rows)  # fmt: skip

    inner = 5632 if args.quick else 11008
    n = tokens * inner
    measure("swiglu", f"{tokens}x2x{inner}", {
        "neox": ops.swiglu,
        "eager": swiglu_ref,
        "compile": _compiled(swiglu_ref, comp),
    }, lambda: (leaf(tokens, 2 * inner),), 1, 8 * n * 2, copy_gbps, rows)  # fmt: skip
    if liger:
        measure("swiglu", f"{tokens}x2x{inner}", {
            "liger (a, b apart)": lambda gate, up: liger.liger_swiglu(gate, up),
        }, lambda: (leaf(tokens, inner), leaf(tokens, inner)), 2, 8 * n * 2, copy_gbps,
            rows)  # fmt: skip

    cols = 4 * 2048 if args.quick else 4 * 4096
    n = tokens * cols
    measure("bias_gelu(tanh)", f"{tokens}x{cols}", {
        "neox": lambda x, b: ops.bias_gelu(x, b, approximate=True),
        "eager": gelu_ref,
        "compile": _compiled(gelu_ref, comp),
    }, lambda: (leaf(tokens, cols), leaf(cols)), 2, 5 * n * 2, copy_gbps, rows)  # fmt: skip
    # the MLP activation of the Pythia models as neox-core calls it: exact GeLU, the bias
    # already added by the linear layer
    measure("gelu(erf)", f"{tokens}x{cols}", {
        "neox": lambda x: ops.bias_gelu(x, None, approximate=False),
        "eager": F.gelu,
        "compile": _compiled(F.gelu, comp),
    }, lambda: (leaf(tokens, cols),), 1, 5 * n * 2, copy_gbps, rows)  # fmt: skip

    measure_optimizers(copy_gbps, rows, args.quick)

    seq, heads, d = 2048, 16, 128
    batch = tokens // seq
    for pct in (0.25, 1.0):
        rot = int(d * pct)
        ref = rotary_ref_factory(heads, rot, 10000.0)
        # the forward rotates q and k's rotated channels in place (read + write); the backward
        # reads the whole incoming gradient and writes a new one (it must not change its input)
        nbytes = 2 * (batch * seq * 2 * heads * rot * 2) + 2 * (batch * seq * 3 * heads * d * 2)
        measure(f"rotary pct={pct}", f"b{batch} s{seq} h{heads} d{d}", {
            "neox (in place)": (Direct(
                lambda qkv: ops.rotary_qkv_(qkv, heads, heads, rot, 10000.0),  # noqa: B023
                lambda qkv: ops.rotary_qkv_grad(qkv, heads, heads, rot, 10000.0),  # noqa: B023
            ), lambda: (torch.randn(batch, seq, 3 * heads * d, generator=cpu_gen).to(dev, bf16),)),
            "eager": ref,
            "compile": _compiled(ref, comp),
        }, lambda: (leaf(batch, seq, 3 * heads * d),), 1, nbytes, copy_gbps, rows)  # fmt: skip

    ce_shapes = (
        [(4096, 2048, 50304)] if args.quick else [(16384, 2048, 50304), (8192, 4096, 128256)]
    )
    # bf16 weights, then neox-train's regime: an fp32 (master) weight under bf16 autocast,
    # where the weight gradient is fp32 whatever the implementation
    for n_tok, hidden, vocab in ce_shapes:
        for weight_dtype in (bf16, torch.float32):

            def inputs(n_tok=n_tok, hidden=hidden, vocab=vocab, weight_dtype=weight_dtype):
                labels = torch.randint(0, vocab, (n_tok,), generator=cpu_gen)
                labels[::10] = -100
                labels = labels.to(dev)
                w = torch.randn(vocab, hidden, generator=cpu_gen) * hidden**-0.5
                return leaf(n_tok, hidden), w.to(dev, weight_dtype).requires_grad_(), labels

            amp = _autocast if weight_dtype == torch.float32 else (lambda fn: fn)
            suffix = " fp32 w, amp" if weight_dtype == torch.float32 else ""
            measure("linear+cross_entropy", f"{n_tok}x{hidden} V{vocab}{suffix}", {
                "neox": amp(lambda h, w, y: ops.linear_cross_entropy(h, w, y)),
                "neox accumulate": amp(lambda h, w, y: ops.linear_cross_entropy(h, w, y, weight_grad="accumulate")),
                "neox recompute": amp(lambda h, w, y: ops.linear_cross_entropy(h, w, y, weight_grad="recompute")),
                "eager": amp(ce_ref),
                "compile": _compiled(amp(ce_ref), comp),
                "liger": amp(lambda h, w, y: liger.liger_fused_linear_cross_entropy(h, w, y))
                if liger else None,
                "quack": amp(lambda h, w, y: quack_lce(h, w, y)) if quack_lce else None,
            }, inputs, 2, 0, copy_gbps, rows, graph=False)  # fmt: skip

    if args.json:
        with open(args.json, "w") as f:
            json.dump({"copy_gbps": copy_gbps, "rows": [asdict(r) for r in rows], "missing": MISSING},
                      f, indent=1)  # fmt: skip
    print(f"\ncopy bandwidth {copy_gbps:.0f} GB/s (read + write), {torch.cuda.get_device_name()}")
    head = f"{'op':<22} {'shape':<22} {'impl':<19} {'fwd ms':>8} {'fwd+bwd':>8} {'GB/s':>7} {'copy%':>6} {'peak MB':>8} {'grads MB':>8} timing"  # fmt: skip
    print(head)
    print("-" * len(head))
    for r in rows:
        print(_format(r))
    for name, why in MISSING.items():
        print(f"no {name} rows: {why}")
    return 0


def _format(r: Row) -> str:
    gb = "" if math.isnan(r.gbps) else f"{r.gbps:7.0f}"
    share = "" if math.isnan(r.copy_share) else f"{100 * r.copy_share:5.0f}%"
    fwd = "" if math.isnan(r.fwd_ms) else f"{r.fwd_ms:8.3f}"
    grads = "" if math.isnan(r.grads_mb) else f"{r.grads_mb:8.0f}"
    return f"{r.op:<22} {r.shape:<22} {r.impl:<19} {fwd:>8} {r.fwd_bwd_ms:8.3f} {gb:>7} {share:>6} {r.peak_mb:8.0f} {grads:>8} {r.timing}"  # fmt: skip


if __name__ == "__main__":
    raise SystemExit(main())
