"""Decode throughput of neox generation against transformers' `generate`, same weights.

A random Pythia-1B-shaped model (GPT-NeoX: 16 layers, hidden 2048, 8 heads, rotary 25 %,
parallel residual, vocab 50304) in bf16 is built once in transformers and copied into neox's
model, so both decode the same weights. For batch 1 and 32, a prompt of `--prompt` random
tokens is continued greedily by `--new` tokens (no end-of-text stop), and

    decode tokens/s = batch x (new - 1) / (time(new tokens) - time(1 token)),

so prefill is left out. Rows: transformers with its default dynamic cache (eager), with
`cache_implementation="static"` (which transformers compiles itself on CUDA), neox eager, and
neox with the decode step compiled (`--compile-mode`, default reduce-overhead = CUDA graphs).
`ratio` is each row over the best transformers row at the same batch. A row that fails prints
its error and the others still run. The table comes last.

GPU:  uv run python benchmarks/generate.py
CPU smoke (tiny shapes, eager only unless --compile-mode is given): --tiny
Timings on a shared machine are noisy.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

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


def timed(fn: Callable[[], object], device: torch.device, repeats: int) -> float:
    """Median wall time of `fn` over `repeats` runs, after one warm-up run."""
    fn()
    times = []
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def hf_runner(hf, ids: torch.Tensor, static: bool) -> Callable[[int], object]:
    mask = torch.ones_like(ids)

    def run(new: int) -> object:
        kw = dict(cache_implementation="static") if static else {}
        with torch.no_grad():
            return hf.generate(
                input_ids=ids,
                attention_mask=mask,
                max_new_tokens=new,
                min_new_tokens=new,
                do_sample=False,
                pad_token_id=0,
                eos_token_id=None,
                **kw,
            )

    return run


def neox_runner(neox, ids: torch.Tensor, compile_mode: str | None) -> Callable[[int], object]:
    from neox_core.generation.generate import _Step, generate_batch

    step = _Step(neox, compile_mode or False)
    prompts = ids.tolist()

    def run(new: int) -> object:
        return generate_batch(neox, prompts, max_new_tokens=new, step=step)

    return run


def decode_rate(run: Callable[[int], object], batch: int, new: int, device, repeats: int) -> float:
    full = timed(lambda: run(new), device, repeats)
    first = timed(lambda: run(1), device, repeats)
    return batch * (new - 1) / max(full - first, 1e-9)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tiny", action="store_true", help="tiny shapes on CPU (smoke test)")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--prompt", type=int, help="prompt tokens (default 128; tiny 8)")
    parser.add_argument("--new", type=int, help="generated tokens (default 256; tiny 16)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--compile-mode",
        default=None,
        help="torch.compile mode of neox's decode step (default on CUDA: reduce-overhead; "
        "none in --tiny); 'off' skips the compiled rows",
    )
    args = parser.parse_args(argv)

    device = torch.device("cuda" if torch.cuda.is_available() and not args.tiny else "cpu")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    shape = TINY if args.tiny else PYTHIA_1B
    prompt = args.prompt or (8 if args.tiny else 128)
    new = args.new or (16 if args.tiny else 256)
    compile_mode = args.compile_mode or (None if args.tiny else "reduce-overhead")
    if compile_mode == "off":
        compile_mode = None
    hf, neox = build_models(shape, device, dtype)
    name = "tiny" if args.tiny else "pythia-1b"
    print(
        f"# {name} {str(dtype).removeprefix('torch.')} on {device} "
        f"({torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu'}), "
        f"torch {torch.__version__}, prompt {prompt}, new {new}, median of {args.repeats}"
    )

    rows: list[tuple[int, str, float | None, str]] = []
    for batch in args.batches:
        ids = torch.randint(
            2, shape["vocab_size"], (batch, prompt), generator=torch.Generator().manual_seed(batch)
        ).to(device)
        candidates: list[tuple[str, Callable[[], Callable[[int], object]]]] = [
            ("transformers dynamic cache", lambda ids=ids: hf_runner(hf, ids, static=False)),
            (
                "transformers static cache (+compile on CUDA)",
                lambda ids=ids: hf_runner(hf, ids, True),
            ),
            ("neox KV cache, eager", lambda ids=ids: neox_runner(neox, ids, None)),
        ]
        if compile_mode:
            candidates.append(
                (
                    f"neox KV cache, compiled ({compile_mode})",
                    lambda ids=ids: neox_runner(neox, ids, compile_mode),
                )
            )
        for label, make in candidates:
            try:
                rate = decode_rate(make(), batch, new, device, args.repeats)
                rows.append((batch, label, rate, ""))
                print(f"batch {batch}: {label}: {rate:,.0f} tokens/s", flush=True)
            except Exception as e:
                rows.append((batch, label, None, f"{type(e).__name__}: {str(e)[:80]}"))
                print(f"batch {batch}: {label}: FAILED {e!r}", flush=True)
        same = hf_runner(hf, ids, False)(new)[:, prompt:].tolist() == [
            g.tokens for g in neox_runner(neox, ids, None)(new)
        ]
        print(f"batch {batch}: greedy tokens identical to transformers: {same}")

    print()
    print("| batch | implementation | decode tokens/s | ratio vs best transformers |")
    print("|---|---|---|---|")
    for batch in args.batches:
        hf_best = max(
            (r for b, lab, r, _ in rows if b == batch and lab.startswith("transformers") and r),
            default=None,
        )
        for b, label, rate, err in rows:
            if b != batch:
                continue
            shown = f"{rate:,.0f}" if rate else f"failed ({err})"
            ratio = f"{rate / hf_best:.2f}x" if rate and hf_best else "-"
            print(f"| {batch} | {label} | {shown} | {ratio} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
