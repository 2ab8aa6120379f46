"""Which pipeline stage holds which tensor, from canonical neox names alone.

Layers (`layers.<i>.*`) are split into `pp` contiguous runs as evenly as possible (earlier
stages take the remainder); the input embedding lives on the first stage, the final norm and
output head on the last. With tied embeddings (no `lm_head.weight`) the last stage keeps a copy
of `embed.weight` to compute logits, as Megatron-style pipelines do.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

_LAYER = re.compile(r"(?:^|\.)layers\.(\d+)\.")


def layer_index(name: str) -> int | None:
    m = _LAYER.search(name)
    return int(m.group(1)) if m else None


def num_layers_of(names: Iterable[str]) -> int:
    indices = [i for i in (layer_index(n) for n in names) if i is not None]
    return max(indices) + 1 if indices else 0


def stage_ranges(num_layers: int, pp: int) -> list[range]:
    base, extra = divmod(num_layers, pp)
    out, start = [], 0
    for s in range(pp):
        n = base + (1 if s < extra else 0)
        out.append(range(start, start + n))
        start += n
    return out


def stages_of(name: str, num_layers: int, pp: int, tied: bool) -> tuple[int, ...]:
    """The stages that store `name` (two for a tied embedding split over several stages)."""
    if pp == 1:
        return (0,)
    i = layer_index(name)
    if i is not None:
        for s, r in enumerate(stage_ranges(num_layers, pp)):
            if i in r:
                return (s,)
        raise ValueError(f"layer {i} of {name!r} is beyond the {num_layers} layers")
    if name.split(".")[0] in ("embed", "embed_in", "word_embeddings"):
        return (0, pp - 1) if tied else (0,)
    return (pp - 1,)
