"""Model FLOPs per token and MFU, with the convention the benchmarks use.

FLOPs per token (forward + backward) = 6·N + 12·L·d·S, where N counts parameters without
the input embedding (a tied output head still costs its matmul, so it is counted) and the
second term is attention's score and value matmuls. Activation recomputation is not counted:
this is *model* FLOPs, so MFU stays comparable across recompute settings.
"""

from __future__ import annotations

import re

import torch

H100_BF16_PEAK_FLOPS = 989e12  # dense bf16 tensor-core peak of one H100 SXM
_INPUT_EMBEDDING = re.compile(r"(^|\.)(embed|embed_in|embed_tokens|wte|word_embeddings)\.weight$")


def non_embedding_params(model: torch.nn.Module, tied_embeddings: bool = False) -> int:
    """Parameters minus the input embedding (plus it back once when it is also the head)."""
    total = 0
    embedding = 0
    for name, p in model.named_parameters():
        if _INPUT_EMBEDDING.search(name):
            embedding += p.numel()
        else:
            total += p.numel()
    return total + (embedding if tied_embeddings else 0)


def flops_per_token(n_params: int, num_layers: int, hidden_size: int, seq_length: int) -> float:
    return 6.0 * n_params + 12.0 * num_layers * hidden_size * seq_length


def human_flops(num: float) -> str:
    """GPT-NeoX's `approx flops per GPU` rendering, e.g. `123.4TFLOPS`."""
    for unit in ("", "KFLOPS", "MFLOPS", "GFLOPS", "TFLOPS", "PFLOPS", "EFLOPS"):
        if abs(num) < 1000.0:
            return f"{num:3.1f}{unit}"
        num /= 1000.0
    return f"{num:.1f}ZFLOPS"
