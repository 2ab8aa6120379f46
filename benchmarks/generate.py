"""Decode throughput of neox generation against transformers' `generate`, same weights.

A random Pythia-1B-shaped model (GPT-NeoX: 16 layers, hidden 2048, 8 heads, rotary 25 %,
parallel residual, vocab 50304) in bf16 is built once in transformers and copied into neox's
model, so both decode the same weights. For each batch size, a prompt of `--prompt` random
tokens is continued greedily by `--new` tokens (no end-of-text stop), and

    decode tokens/s = batch x (new - 1) / (time(new tokens) - time(1 token)),

so prefill is left out. Rows: transformers with its default dynamic cache (eager), with
`cache_implementation="static"` (which transformers compiles itself on CUDA), neox eager, and
neox with the decode step compiled (`--compile-mode`, default reduce-overhead = CUDA graphs).
`ratio` is each row over the best transformers row at the same batch; `first call` is the
warm-up (compilation included); `greedy tokens equal` counts the leading tokens (fewest over
the batch's rows) equal to the batch's first row, transformers' dynamic cache (in bf16 the
kernels round differently, so near-uniform random-weight logits may diverge early).
A row that fails prints its error and the others still run. The table comes last.

GPU (about 3 minutes on an H200), from a checkout:
    PYTHONPATH=packages/neox-core/src:packages/neox-data/src python benchmarks/generate.py
CPU smoke (tiny shapes, eager only unless --compile-mode is given): --tiny
Timings on a shared machine are noisy.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

# runnable from a plain checkout: the workspace packages' sources, if not installed
for _pkg in ("neox-core", "neox-data", "neox-kernels"):
    _src = Path(__file__).resolve().parents[1] / "packages" / _pkg / "src"
    if _src.is_dir() and str(_src) not in sys.path:
        sys.path.append(str(_src))

PYTHIA_1B = dict(
    vocab_size=50304,
    hidden_size=2048,
    num_hidden_layers=16,
    num_attention_heads=8,
    intermediate_size=8192,
    rotary_pct=0.25,
    use_parallel_residual=True,
    max_position_embeddings=2048,
    tie_word_embeddings=False,
)
TINY = dict(
    PYTHIA_1B,
    vocab_size=512,
    hidden_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=256,
)

# a runner continues the benchmark's prompts by `new` tokens and returns them [B][new]
Runner = Callable[[int], list[list[int]]]


@dataclass
class Row:
    batch: int
    label: str
    rate: float | None = None
    first_s: float | None = None
    agrees: int | None = None  # fewest leading tokens equal to the reference, over rows
    error: str = ""


def build_models(shape: dict, device: torch.device, dtype: torch.dtype):
    """(transformers model, neox CausalLM) holding the same random weights."""
    import transformers

    from neox_core.models import build_model
    from neox_core.models.hf_names import load_hf_state_dict, model_config_from_hf

    config = transformers.GPTNeoXConfig(**shape)
    torch.manual_seed(0)
    with torch.device(device):
        hf = transformers.GPTNeoXForCausalLM(config).to(dtype).eval()
    cfg = model_config_from_hf(config.to_dict())
    neox = build_model(
        cfg, seed=None, dtype={torch.bfloat16: "bf16"}.get(dtype, "fp32"), device=device
    )
    load_hf_state_dict(neox, hf.state_dict())
    return hf, neox.eval()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _seconds(fn: Callable[[], object], device: torch.device) -> float:
    _sync(device)
    t0 = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - t0


def hf_runner(hf, ids: torch.Tensor, static: bool) -> Runner:
    mask = torch.ones_like(ids)

    def run(new: int) -> list[list[int]]:
        kw = dict(cache_implementation="static") if static else {}
        with torch.no_grad():
            out = hf.generate(
                input_ids=ids,
                attention_mask=mask,
                max_new_tokens=new,
                min_new_tokens=new,
                do_sample=False,
                pad_token_id=0,
                eos_token_id=None,
                **kw,
            )
        return out[:, ids.shape[1] :].tolist()

    return run


def neox_runner(neox, ids: torch.Tensor, compile_mode: str | None) -> Runner:
    from neox_core.generation.generate import generate_batch
    from neox_core.generation.step import DecodeStep

    step = DecodeStep(neox, compile_mode or False)  # keeps its cache (and graph) across calls
    prompts = ids.tolist()

    def run(new: int) -> list[list[int]]:
        return [g.tokens for g in generate_batch(neox, prompts, max_new_tokens=new, step=step)]

    return run


def measure(row: Row, run: Runner, new: int, device, repeats: int) -> list[list[int]]:
    """Fill `row` (rate, warm-up time); returns the tokens of the last full run."""
    tokens: list[list[int]] = []

    def full() -> None:
        tokens[:] = run(new)

    row.first_s = _seconds(full, device)
    run(1)  # warm the one-token path too (transformers may allocate a new cache for it)
    fulls = [_seconds(full, device) for _ in range(repeats)]
    ones = [_seconds(lambda: run(1), device) for _ in range(repeats)]
    row.rate = row.batch * (new - 1) / max(statistics.median(fulls) - statistics.median(ones), 1e-9)
    return tokens


def _agreement(tokens: list[list[int]], reference: list[list[int]]) -> int:
    def prefix(a: list[int], b: list[int]) -> int:
        n = 0
        while n < min(len(a), len(b)) and a[n] == b[n]:
            n += 1
        return n

    return min(prefix(a, b) for a, b in zip(tokens, reference, strict=True))


def print_table(rows: list[Row], new: int) -> None:
    print()
    print(
        "| batch | implementation | decode tokens/s | ratio vs best transformers "
        f"| first call (s) | greedy tokens equal (of {new}) |"
    )
    print("|---|---|---|---|---|---|")
    for r in rows:
        hf_best = max(
            (x.rate for x in rows if x.batch == r.batch and x.label.startswith("transformers")),
            key=lambda v: v or 0.0,
            default=None,
        )
        shown = f"{r.rate:,.0f}" if r.rate else f"failed ({r.error})"
        ratio = f"{r.rate / hf_best:.2f}x" if r.rate and hf_best else "-"
        first = f"{r.first_s:.1f}" if r.first_s is not None else "-"
        agrees = str(r.agrees) if r.agrees is not None else "-"
        print(f"| {r.batch} | {r.label} | {shown} | {ratio} | {first} | {agrees} |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tiny", action="store_true", help="tiny shapes on CPU (smoke test)")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--prompt", type=int, help="prompt tokens (default 128; tiny 8)")
    parser.add_argument("--new", type=int, help="generated tokens (default 128; tiny 16)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--dtype",
        choices=("bf16", "fp32"),
        help="weights and activations (default: bf16 on CUDA, fp32 on CPU); fp32 on CUDA makes "
        "the 'greedy tokens equal' column a parity check, bf16 rounding apart",
    )
    parser.add_argument(
        "--compile-mode",
        default=None,
        help="torch.compile mode of neox's decode step (default on CUDA: reduce-overhead; "
        "none in --tiny); 'off' skips the compiled rows",
    )
    parser.add_argument(
        "--skip",
        nargs="*",
        default=[],
        choices=("hf-dynamic", "hf-static", "neox-eager", "neox-compiled"),
        help="rows to leave out (to save time)",
    )
    args = parser.parse_args(argv)

    device = torch.device("cuda" if torch.cuda.is_available() and not args.tiny else "cpu")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    if args.dtype:
        dtype = {"bf16": torch.bfloat16, "fp32": torch.float32}[args.dtype]
    shape = TINY if args.tiny else PYTHIA_1B
    prompt = args.prompt or (8 if args.tiny else 128)
    new = args.new or (16 if args.tiny else 128)
    compile_mode = args.compile_mode or (None if args.tiny else "reduce-overhead")
    if compile_mode == "off":
        compile_mode = None
    hf, neox = build_models(shape, device, dtype)
    from neox_kernels.ops import cuda_available

    name = "tiny" if args.tiny else "pythia-1b"
    print(
        f"# {name} {str(dtype).removeprefix('torch.')} on {device} "
        f"({torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu'}), "
        f"torch {torch.__version__}, transformers {__import__('transformers').__version__}, "
        f"neox fused kernels {'on' if cuda_available() else 'off'}, "
        f"prompt {prompt}, new {new}, median of {args.repeats}",
        flush=True,
    )

    rows: list[Row] = []
    for batch in args.batches:
        ids = torch.randint(
            2, shape["vocab_size"], (batch, prompt), generator=torch.Generator().manual_seed(batch)
        ).to(device)
        candidates: list[tuple[str, str, Callable[[], Runner]]] = [
            ("hf-dynamic", "transformers dynamic cache", lambda ids=ids: hf_runner(hf, ids, False)),
            (
                "hf-static",
                "transformers static cache (+compile on CUDA)",
                lambda ids=ids: hf_runner(hf, ids, True),
            ),
            ("neox-eager", "neox KV cache, eager", lambda ids=ids: neox_runner(neox, ids, None)),
        ]
        if compile_mode:
            candidates.append(
                (
                    "neox-compiled",
                    f"neox KV cache, compiled ({compile_mode})",
                    lambda ids=ids: neox_runner(neox, ids, compile_mode),
                )
            )
        reference: list[list[int]] | None = None
        for key, label, make in candidates:
            if key in args.skip:
                continue
            row = Row(batch, label)
            rows.append(row)
            try:
                tokens = measure(row, make(), new, device, args.repeats)
                reference = reference or tokens
                row.agrees = _agreement(tokens, reference)
                print(
                    f"batch {batch}: {label}: {row.rate:,.0f} tokens/s "
                    f"(first call {row.first_s:.1f} s)",
                    flush=True,
                )
            except Exception as e:
                row.rate, row.error = None, f"{type(e).__name__}: {str(e)[:100]}"
                print(f"batch {batch}: {label}: FAILED {e!r}", flush=True)
            if key == "neox-compiled" and device.type == "cuda":
                from torch._dynamo.utils import counters

                skips = {k: v for k, v in counters["inductor"].items() if "cudagraph" in k}
                print(f"batch {batch}: inductor CUDA-graph counters {skips}", flush=True)
    print_table(rows, new)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
