"""The dry run's per-rank memory estimate against the measured peak of real training steps.

One process (world size 1, so TP 1 x DP 1, ZeRO 0): build the model of a shape, train a few
steps as neox-train does (fp32 parameters, bf16 autocast, AdamW, clipping), and compare
`torch.cuda.max_memory_allocated()` (the allocator's peak of live tensors, without its cache
or the CUDA context) with `neox_core.memory_estimate.estimate_memory` for the same config.
Prints one table row per (shape, micro batch, activation checkpointing).

    python3 benchmarks/memory_estimate.py                 # on a GPU: Pythia-410M/1B, LLaMA-1.1B shapes
    python3 benchmarks/memory_estimate.py --smoke         # tiny shape on the CPU (no peak: RSS-free check)

Runs from a plain checkout with PYTHONPATH=packages/neox-core/src.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SHAPES = {  # name -> ModelConfig fields
    "pythia-410M": dict(num_layers=24, hidden_size=1024, num_attention_heads=16, rotary_pct=0.25,
                        gpt_j_residual=True, tie_embeddings=False),
    "pythia-1B": dict(num_layers=16, hidden_size=2048, num_attention_heads=8, rotary_pct=0.25,
                      gpt_j_residual=True, tie_embeddings=False),
    "llama-1.1B": dict(architecture="llama", num_layers=22, hidden_size=2048,
                       num_attention_heads=32, num_kv_heads=4, intermediate_size=5632,
                       norm="rmsnorm", norm_bias=False, activation="swiglu", attention_bias=False, mlp_bias=False,
                       tie_embeddings=False),
    "smoke": dict(num_layers=2, hidden_size=64, num_attention_heads=4),
}  # fmt: skip


def _config(shape: str, micro: int, seq: int, ckpt: bool):
    from neox_core.config.schema import ModelConfig, NeoxConfig

    fields = dict(SHAPES[shape])
    if fields.get("architecture") != "llama":
        fields.setdefault("intermediate_size", 4 * fields["hidden_size"])
    model = ModelConfig(
        vocab_size=50277, padded_vocab_size=50304, max_position_embeddings=seq,
        checkpoint_activations=ckpt, **fields,
    )  # fmt: skip
    cfg = NeoxConfig(model=model)
    cfg.training.micro_batch_size = micro
    cfg.data.seq_length = seq
    cfg.precision.dtype = "bf16"
    return cfg


def measure(cfg, device, steps: int = 3) -> int:
    import torch

    from neox_core.models import build_model
    from neox_core.training.batch import Batch, masked_lm_loss
    from neox_core.training.optimizer import build_optimizer

    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)
    model = build_model(cfg.model, seed=1).to(device)
    opt = build_optimizer(model, type="adamw", lr=1e-4, betas=(0.9, 0.95), eps=1e-8,
                          weight_decay=0.1)  # fmt: skip
    b, s = cfg.training.micro_batch_size, cfg.data.seq_length
    for _ in range(steps):
        tokens = torch.randint(0, cfg.model.vocab_size, (b, s), device=device)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            logits = model(tokens)
        masked_lm_loss(logits, Batch(tokens, tokens, torch.ones(b, s, device=device))).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
    torch.cuda.synchronize(device)
    peak = torch.cuda.max_memory_allocated(device)
    del model, opt
    return peak


def main() -> None:
    if importlib.util.find_spec("neox_core") is None:
        sys.path.insert(0, str(ROOT / "packages" / "neox-core" / "src"))
    import torch

    from neox_core.distributed.parallel_dims import ParallelDims
    from neox_core.memory_estimate import GIB, estimate_memory

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--shapes", nargs="+", default=["pythia-410M", "pythia-1B", "llama-1.1B"])
    p.add_argument("--micro", type=int, nargs="+", default=[4, 8])
    p.add_argument("--seq", type=int, default=2048)
    p.add_argument("--smoke", action="store_true")
    args = p.parse_args()
    if args.smoke:
        args.shapes, args.micro, args.seq = ["smoke"], [2], 64
    gpu = torch.cuda.is_available()
    device = torch.device("cuda") if gpu else None
    print(f"{'shape':<12} {'micro':>5} {'ckpt':>5} {'estimate GiB':>13} {'measured GiB':>13} "
          f"{'ratio':>6}")  # fmt: skip
    for shape in args.shapes:
        for micro in args.micro:
            for ckpt in (False, True):
                cfg = _config(shape, micro, args.seq, ckpt)
                est = estimate_memory(cfg, ParallelDims(dp=1, tp=1)).peak
                got = measure(cfg, device) if gpu else None
                ratio = f"{est / got:6.3f}" if got else "   n/a"
                shown = f"{got / GIB:13.2f}" if got else f"{'(no GPU)':>13}"
                print(f"{shape:<12} {micro:>5} {ckpt!s:>5} {est / GIB:13.2f} {shown} {ratio}")


if __name__ == "__main__":
    main()
