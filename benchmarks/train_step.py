"""Training-step throughput: neox's model vs HF transformers' model of the same shape.

Pythia-410M- and Pythia-1B-shaped models (GPT-NeoX architecture, seq 2048, micro batch 8),
trained the same way for both implementations: fp32 parameters (the master weights), bf16
autocast, fused AdamW, gradient clipping 1.0, cross entropy in fp32 on the logits; each
eager and under `torch.compile`. Prints tokens/s, model TFLOPS per GPU with
6·N + 12·L·d·S FLOPs per token (N without the input embedding), MFU against 989 TFLOP/s
(H100 SXM dense bf16) and peak memory.

    python3 benchmarks/train_step.py                      # both shapes, ours and HF, eager and compiled
    python3 benchmarks/train_step.py --models 1B --modes compile
    python3 benchmarks/train_step.py --smoke              # tiny shapes; runs on a CPU in seconds

Runs from a plain checkout with PYTHONPATH=packages/neox-core/src (torch, transformers and
pyyaml installed; uv and the compiled neox-kernels are not needed).
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PEAK_FLOPS = 989e12

# shape name -> (layers, hidden, heads) of the Pythia suite; all rotary_pct 0.25, parallel residual
SHAPES = {"410M": (24, 1024, 16), "1B": (16, 2048, 8), "smoke": (2, 64, 4)}


def _import_neox_core() -> None:
    """Make `neox_core` importable from the source tree, installed or not."""
    if importlib.util.find_spec("neox_core") is None:
        sys.path.insert(0, str(ROOT / "packages" / "neox-core" / "src"))


@dataclass(frozen=True)
class Case:
    shape: str
    impl: str  # "neox" | "hf"
    mode: str  # "eager" | "compile"


@dataclass
class Result:
    case: Case
    step_s: float
    tokens_per_s: float
    tflops: float
    mfu: float
    peak_gib: float
    loss: float


def model_config(shape: str, vocab: int, seq: int, checkpoint_activations: bool):
    from neox_core.config.schema import ModelConfig

    layers, hidden, heads = SHAPES[shape]
    padded = -(-vocab // 128) * 128
    return ModelConfig(
        architecture="gpt_neox",
        num_layers=layers,
        hidden_size=hidden,
        num_attention_heads=heads,
        num_kv_heads=heads,
        intermediate_size=4 * hidden,
        max_position_embeddings=seq,
        vocab_size=vocab,
        padded_vocab_size=padded,
        norm="layernorm",
        activation="gelu",
        rotary_pct=0.25,
        gpt_j_residual=True,
        attention_bias=True,
        mlp_bias=True,
        tie_embeddings=False,
        init_method="small_init",
        output_layer_init_method="wang_init",
        checkpoint_activations=checkpoint_activations,
    )


def build(case: Case, mcfg, device):
    import torch

    if case.impl == "neox":
        from neox_core.models import build_model

        model = build_model(mcfg, seed=1234, device=device)
        forward = model
    else:
        from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

        from neox_core.models.hf_names import hf_config_kwargs

        hf_cfg = GPTNeoXConfig(**hf_config_kwargs(mcfg), attn_implementation="sdpa")
        torch.manual_seed(1234)
        with torch.device(device):  # initialise on the GPU: minutes less for 1B on a CPU
            model = GPTNeoXForCausalLM(hf_cfg)
        if mcfg.checkpoint_activations:
            model.gradient_checkpointing_enable()

        def forward(ids):
            return model(input_ids=ids, use_cache=False).logits

    model.train()
    step_fn = torch.compile(forward) if case.mode == "compile" else forward
    optimizer = torch.optim.AdamW(
        model.parameters(),
        lr=1e-4,
        betas=(0.9, 0.95),
        weight_decay=0.1,
        fused=device.type == "cuda",
    )
    return model, step_fn, optimizer


def run_case(case: Case, args, device) -> Result:
    import torch
    import torch.nn.functional as F

    from neox_core.training.throughput import flops_per_token, non_embedding_params

    mcfg = model_config(case.shape, args.vocab, args.seq, args.checkpoint_activations)
    model, forward, optimizer = build(case, mcfg, device)
    n = non_embedding_params(model, tied_embeddings=False)
    per_token = flops_per_token(n, mcfg.num_layers, mcfg.hidden_size, args.seq)
    g = torch.Generator(device="cpu").manual_seed(0)
    batch = torch.randint(0, args.vocab, (args.micro_batch, args.seq + 1), generator=g).to(device)
    inputs, targets = batch[:, :-1], batch[:, 1:]
    amp = torch.autocast(device_type=device.type, dtype=torch.bfloat16)

    def step() -> float:
        with amp:
            logits = forward(inputs)
        loss = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.detach()

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    for _ in range(args.warmup):
        step()
    sync()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(args.steps):
        loss = step()
    sync()
    step_s = (time.perf_counter() - start) / args.steps
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan")
    tokens_per_s = args.micro_batch * args.seq / step_s
    flops = per_token * tokens_per_s
    return Result(case, step_s, tokens_per_s, flops / 1e12, flops / PEAK_FLOPS, peak, float(loss))


def release(device) -> None:
    """Free the finished case's model, optimizer and compiled graphs before the next."""
    import torch

    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    torch._dynamo.reset()


def table(results: list[Result]) -> str:
    head = (
        "model",
        "impl",
        "mode",
        "step ms",
        "tokens/s",
        "TFLOPS/GPU",
        "MFU %",
        "peak GiB",
        "loss",
    )
    rows = [
        (
            r.case.shape,
            r.case.impl,
            r.case.mode,
            f"{r.step_s * 1e3:.1f}",
            f"{r.tokens_per_s:,.0f}",
            f"{r.tflops:.1f}",
            f"{100 * r.mfu:.1f}",
            f"{r.peak_gib:.1f}",
            f"{r.loss:.3f}",
        )
        for r in results
    ]
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows, strict=True)]
    lines = [" | ".join(h.ljust(w) for h, w in zip(head, widths, strict=True))]
    lines.append("-+-".join("-" * w for w in widths))
    lines += [" | ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="410M,1B", help="comma list of: 410M, 1B")
    p.add_argument("--impls", default="neox,hf", help="comma list of: neox, hf")
    p.add_argument("--modes", default="eager,compile", help="comma list of: eager, compile")
    p.add_argument("--micro-batch", type=int, default=8)
    p.add_argument("--seq", type=int, default=2048)
    p.add_argument("--vocab", type=int, default=50277, help="tokenizer size (padded to 128)")
    p.add_argument("--steps", type=int, default=20, help="timed steps per case")
    p.add_argument("--warmup", type=int, default=5, help="untimed steps first (compilation)")
    p.add_argument("--checkpoint-activations", action="store_true", help="recompute layers")
    p.add_argument(
        "--smoke",
        action="store_true",
        help="tiny shapes and few steps, eager only unless --modes is given (CPU)",
    )
    args = p.parse_args(argv)
    if args.smoke:
        args.models, args.seq, args.micro_batch, args.vocab = "smoke", 32, 2, 256
        args.steps, args.warmup = 2, 1
        if "--modes" not in (argv if argv is not None else sys.argv[1:]):
            args.modes = "eager"

    _import_neox_core()
    import torch

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    name = torch.cuda.get_device_name() if device.type == "cuda" else "CPU"
    print(
        f"torch {torch.__version__} on {name}; seq {args.seq}, micro batch {args.micro_batch}, "
        f"fp32 params + bf16 autocast, fused AdamW; {args.steps} timed steps after "
        f"{args.warmup} warm-up; MFU vs {PEAK_FLOPS / 1e12:.0f} TFLOP/s",
        flush=True,
    )
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    results = []
    for shape in args.models.split(","):
        if shape not in SHAPES:
            p.error(f"--models: unknown shape {shape!r}; choose from 410M, 1B")
        for mode in args.modes.split(","):
            for impl in args.impls.split(","):
                case = Case(shape, impl, mode)
                try:
                    results.append(run_case(case, args, device))
                except torch.cuda.OutOfMemoryError:
                    print(f"{case}: out of memory", flush=True)
                    continue
                finally:
                    release(device)
                r = results[-1]
                print(
                    f"  {shape} {impl} {mode}: {r.tokens_per_s:,.0f} tokens/s, "
                    f"MFU {100 * r.mfu:.1f}%",
                    flush=True,
                )
    print()
    print(table(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
