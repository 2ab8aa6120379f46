"""Per-parameter norms for TensorBoard/W&B: GPT-NeoX's `log_grad_norm`, `log_param_norm`,
`log_grad_pct_zeros`.

Chart names follow GPT-NeoX (`gradient_norms/<name>`, `parameter_norms/<name>`,
`pct_grad_zeros/<name>`) with neox's canonical parameter names. Gradients are read after the
data-parallel reduction and loss-scale removal, before clipping. All values come back to the
host in one transfer.
"""

from __future__ import annotations

import torch


def parameter_stats(
    model: torch.nn.Module, *, grad_norm: bool, param_norm: bool, grad_pct_zeros: bool
) -> dict[str, float]:
    """{chart name: value} for every parameter (those without a gradient skip the grad charts)."""
    if not (grad_norm or param_norm or grad_pct_zeros):
        return {}
    inner = getattr(model, "module", model)  # DistributedDataParallel wraps the model
    names: list[str] = []
    values: list[torch.Tensor] = []
    with torch.no_grad():
        for name, p in inner.named_parameters():
            g = p.grad
            if grad_norm and g is not None:
                names.append(f"gradient_norms/{name}")
                values.append(torch.linalg.vector_norm(g.float()))
            if grad_pct_zeros and g is not None:
                names.append(f"pct_grad_zeros/{name}")
                values.append((g == 0).float().mean() * 100)
            if param_norm:
                names.append(f"parameter_norms/{name}")
                values.append(torch.linalg.vector_norm(p.float()))
        if not values:
            return {}
        flat = torch.stack([v.to(values[0].device) for v in values]).tolist()
    return dict(zip(names, flat, strict=True))
