"""Fused linear + cross-entropy: logits = hidden @ weight.T are made one chunk of tokens at a
time, reduced to per-token statistics and turned into gradients in place, so the full
[tokens, vocab] logits never exist.

Ops:
- `neox::linear_cross_entropy` (one device, whole vocabulary): the loss
  sum_r w_r * (lse_r - logit_r[label_r] + z_loss * lse_r^2) and, when asked, the hidden
  gradient, computed in the same pass (as Liger-Kernel does); autograd scales it by the loss's
  grad. The weight gradient takes one of two routes:
  - "accumulate": also in the forward pass, summed over token chunks into an fp32 [vocab, h]
    buffer. No extra matmul, but the buffer (4 * vocab * h bytes) is read and written once per
    chunk, and chunks grow in number with the vocabulary; its chunks are therefore larger
    (512 MiB of logits, against 128 MiB elsewhere). For an fp32 weight (neox-train's master
    weights under autocast) the buffer becomes the gradient itself, scaled in place by the
    backward, which therefore runs once per forward.
  - "recompute": in the backward, `neox::linear_cross_entropy_weight_grad` remakes the logits
    one chunk of vocabulary columns at a time, over all tokens, and writes that slice of the
    weight gradient once, in the weight's dtype: a fourth matmul, but no fp32 buffer and no
    re-reads. "auto" takes it from a vocabulary of 100k, for memory. On the H200
    (benchmarks/kernels.py, fwd+bwd, against accumulating in 512 MiB token chunks) it cost
    31 % more time at 8192x4096 V128256 (58.4 against 44.4 ms; eager 50.2) for a third of the
    peak memory (1,130 against 3,134 MiB), and 39 % more at 16384x2048 V50304 (23.6 against
    17.0 ms, 357 against 850 MiB), where accumulating stays. With 128 MiB chunks the gap at
    V128256 had been 4 % (57.4 against 55.1 ms): "auto" was set then, and not re-measured
    with the new chunks on a model. Its time is that fourth matmul: making the hidden
    gradient in the backward too, by the same vocabulary chunks into an fp32 sum, instead of
    in the forward by ~500-token chunks (a thin product over the whole vocabulary), was
    tried (H200, 2026-12-06, benchmarks/kernels.py, two runs each): 56.8 -> 56.4-56.8 ms at
    8192x4096 V128256 (eager 48.9-49.2), 64 MiB more memory. Not adopted. Its four matmuls
    take 45-47 of its ms there (H100 profile: each at the speed of the same matmul unchunked),
    eager's three 33-34 of 51-52, so at this shape the route cannot beat eager by much; with
    the loss's gradient folded into the gradient logits it went 58.0-58.1 -> 55.3 ms (H100,
    eager 52.0-52.2).
- `neox::linear_cross_entropy_stats` (a vocabulary shard): per-token lse over the shard and the
  label's logit (0 where the label is outside the shard). A vocabulary-parallel loss combines
  shards (global lse = logsumexp of the shards' lse, target = sum of the shards' targets);
  autograd recomputes each chunk's logits in the backward.
"""

from __future__ import annotations

import torch
from torch import Tensor

from neox_kernels.ops import _backend as be

IGNORE_INDEX = -100
_CHUNK_BYTES = 128 * 2**20  # logits bytes per token chunk
# The accumulate route reads and writes its fp32 [vocab, h] sum once per token chunk: fewer,
# larger chunks. H200, fwd+bwd, one run (chunks of 128 -> 512 MiB): 16384x2048 V50304
# 17.43 -> 16.48 ms (peak 751 -> 852 MiB), V32000 11.09 -> 10.53 ms, 16384x1024 V50304
# 9.87 -> 8.91 ms; 1 GiB chunks were slower at h 1024. The recompute route keeps 128 MiB (its
# time did not change with the chunk size: 55.5 and 54.8 ms at 8192x4096 V128256).
ACCUMULATE_CHUNK_BYTES = 512 * 2**20
_WEIGHT_GRAD_CHUNK_BYTES = 32 * 2**20  # logits bytes per vocabulary chunk (recompute route)
RECOMPUTE_VOCAB = 100_000  # "auto" recomputes the weight gradient from this vocabulary size
WEIGHT_GRAD_ROUTES = ("auto", "accumulate", "recompute")


def default_chunk_rows(vocab: int, dtype: torch.dtype, chunk_bytes: int = _CHUNK_BYTES) -> int:
    """Tokens per chunk so that one chunk of logits takes at most about `chunk_bytes` (128 MiB
    unless given; the accumulate route takes ACCUMULATE_CHUNK_BYTES)."""
    itemsize = torch.empty(0, dtype=dtype).element_size()
    return max(64, chunk_bytes // max(1, vocab * itemsize))


def weight_grad_chunk_cols(tokens: int, vocab: int, dtype: torch.dtype) -> int:
    """Vocabulary columns per chunk of the recompute route: a [tokens, cols] chunk of logits
    takes at most about 32 MiB; a multiple of 256 so the matmuls and kernels stay aligned."""
    itemsize = torch.empty(0, dtype=dtype).element_size()
    cols = _WEIGHT_GRAD_CHUNK_BYTES // max(1, tokens * itemsize) // 256 * 256
    return min(max(256, cols), max(1, vocab))


def _chunks(n: int, chunk: int):
    """(start, end) of ceil(n / chunk) chunks of at most `chunk` rows, of balanced sizes, so
    that no small tail chunk runs its matmuls inefficiently."""
    count = -(-n // max(1, chunk))
    for i in range(count):
        yield n * i // count, n * (i + 1) // count


def _ref_stats(logits: Tensor, labels: Tensor, vocab_start: int) -> tuple[Tensor, Tensor]:
    logits = be.acc(logits)
    lse = torch.logsumexp(logits, dim=-1)
    local = labels - vocab_start
    inside = (labels >= 0) & (local >= 0) & (local < logits.shape[-1])
    picked = logits.gather(1, local.clamp(0, logits.shape[-1] - 1).unsqueeze(1)).squeeze(1)
    return lse, torch.where(inside, picked, torch.zeros_like(picked))


def _ref_grad_(logits: Tensor, labels: Tensor, vocab_start: int, lse: Tensor, a: Tensor,
               b: Tensor) -> Tensor:  # fmt: skip
    """a * softmax + b * onehot(label), as the kernel writes it (in logits' dtype)."""
    grad = torch.exp(be.acc(logits) - lse.unsqueeze(1)) * a.unsqueeze(1)
    local = labels - vocab_start
    inside = (labels >= 0) & (local >= 0) & (local < logits.shape[-1])
    rows = torch.nonzero(inside).squeeze(1)
    grad[rows, local[rows]] += b[rows]
    return grad.to(logits.dtype)


def _accumulate_weight_grad(acc: Tensor | None, grad_logits: Tensor, h: Tensor) -> Tensor:
    """acc + grad_logits.T @ h, accumulated in fp32 across chunks."""
    if grad_logits.is_cuda and grad_logits.dtype != torch.float32:
        try:  # cuBLAS writes the fp32 result itself: no bf16 temporary (torch >= 2.8)
            if acc is None:
                return torch.mm(grad_logits.t(), h, out_dtype=torch.float32)
            # in place (beta = 1 into acc): no second [vocab, h] fp32 buffer
            return torch.addmm(acc, grad_logits.t(), h, out_dtype=torch.float32, out=acc)
        except (TypeError, RuntimeError):
            pass  # below: a product in grad_logits' dtype (half the bytes) added into acc
    if acc is None:
        return be.acc(torch.mm(grad_logits.t(), h))
    return acc.add_(torch.mm(grad_logits.t(), h))


def _chunk_forward(logits, labels, vocab_start, lse, target, row_weight, z_loss):
    """Fills lse/target for the chunk; with row_weight, overwrites logits by the gradient."""
    if be.use_cuda(logits):
        be.cuda_extension().cross_entropy_forward(
            be.device_index(logits), be.dtype_code(logits), be.ptr(logits), logits.stride(0),
            logits.shape[0], logits.shape[1], be.ptr(labels), vocab_start, be.ptr(lse),
            be.ptr(target), be.ptr(row_weight), float(z_loss), be.stream(logits),
        )  # fmt: skip
        return
    chunk_lse, chunk_target = _ref_stats(logits, labels, vocab_start)
    lse.copy_(chunk_lse)
    target.copy_(chunk_target)
    if row_weight is not None:
        a = row_weight * (1 + 2 * z_loss * chunk_lse)
        logits.copy_(_ref_grad_(logits, labels, vocab_start, chunk_lse, a, -row_weight))


def _chunk_backward(logits, labels, vocab_start, lse, a, b) -> None:
    """Overwrites logits [rows, cols] (vocabulary ids vocab_start..) by a * softmax + b * onehot,
    the softmax taken with the given lse (that of the whole vocabulary)."""
    if be.use_cuda(logits):
        be.cuda_extension().cross_entropy_backward(
            be.device_index(logits), be.dtype_code(logits), be.ptr(logits), logits.stride(0),
            logits.shape[0], logits.shape[1], be.ptr(labels), vocab_start, be.ptr(lse),
            be.ptr(a), be.ptr(b), be.stream(logits),
        )  # fmt: skip
        return
    logits.copy_(_ref_grad_(logits, labels, vocab_start, lse, a, b))


def _check(hidden: Tensor, weight: Tensor, labels: Tensor) -> None:
    if hidden.dim() != 2 or weight.dim() != 2 or hidden.shape[1] != weight.shape[1]:
        raise ValueError(
            f"hidden [tokens, h] and weight [vocab, h] expected, got {tuple(hidden.shape)} and "
            f"{tuple(weight.shape)}"
        )
    if labels.shape != (hidden.shape[0],):
        raise ValueError(f"labels must be [{hidden.shape[0]}], got {tuple(labels.shape)}")
    if not hidden.is_floating_point() or not weight.is_floating_point():
        raise ValueError(
            f"hidden and weight must be floating point, got {hidden.dtype}, {weight.dtype}"
        )


@torch.library.custom_op(
    "neox::linear_cross_entropy",
    mutates_args=(),
    schema="(Tensor hidden, Tensor weight, Tensor labels, Tensor row_weight, float z_loss,"
    " int chunk_rows, bool compute_grad, bool accumulate_weight_grad)"
    " -> (Tensor, Tensor, Tensor, Tensor, Tensor)",
)
def linear_cross_entropy_op(hidden, weight, labels, row_weight, z_loss, chunk_rows, compute_grad,
                            accumulate_weight_grad):  # fmt: skip
    """Returns (loss, lse, grad_hidden / scale, grad_weight / scale (fp32), scale).

    The matmuls run in hidden's dtype (weight is cast once). Gradients are empty unless asked,
    and grad_weight also unless `accumulate_weight_grad` (else the backward recomputes it);
    they are kept divided by scale = max(row_weight) so that fp16 gradient logits
    (softmax * 1/tokens) do not underflow. When weight is fp32, autograd's backward scales
    the returned grad_weight in place and passes it on as the weight's gradient.
    """
    _check(hidden, weight, labels)
    n = hidden.shape[0]
    hidden, weight = hidden.contiguous(), weight.to(hidden.dtype).contiguous()
    stat = be.stat_dtype(hidden)
    labels, row_weight = labels.contiguous(), row_weight.to(stat).contiguous()
    scale = _grad_scale(row_weight)
    kernel_weight = row_weight / scale
    lse = torch.empty(n, dtype=stat, device=hidden.device)
    target = torch.empty_like(lse)
    grad_hidden = torch.empty_like(hidden) if compute_grad else hidden.new_empty(0)
    accumulate = compute_grad and accumulate_weight_grad
    grad_weight = None
    for start, end in _chunks(n, chunk_rows):
        h = hidden[start:end]
        logits = torch.mm(h, weight.t())
        _chunk_forward(logits, labels[start:end], 0, lse[start:end], target[start:end],
                       kernel_weight[start:end] if compute_grad else None, z_loss)  # fmt: skip
        if compute_grad:
            torch.mm(logits, weight, out=grad_hidden[start:end])
        if accumulate:
            grad_weight = _accumulate_weight_grad(grad_weight, logits, h)
        del logits  # before the next chunk's is made: one chunk of logits at a time
    if grad_weight is None:
        shape = weight.shape if accumulate else (0,)
        grad_weight = torch.zeros(shape, dtype=stat, device=hidden.device)
    loss = (row_weight * (lse - target + z_loss * lse * lse)).sum()
    return loss, lse, grad_hidden, grad_weight, scale


@linear_cross_entropy_op.register_fake
def _(hidden, weight, labels, row_weight, z_loss, chunk_rows, compute_grad,
      accumulate_weight_grad):  # fmt: skip
    n = hidden.shape[0]
    stat = be.stat_dtype(hidden)
    loss = hidden.new_empty((), dtype=stat)
    lse = hidden.new_empty(n, dtype=stat)
    gh = torch.empty_like(hidden) if compute_grad else hidden.new_empty(0)
    accumulate = compute_grad and accumulate_weight_grad
    gw = weight.new_empty(weight.shape if accumulate else (0,), dtype=stat)
    return loss, lse, gh, gw, hidden.new_empty((), dtype=stat)


def _grad_scale(row_weight: Tensor) -> Tensor:
    """max(row_weight), or 1 where that is not positive (no row counted)."""
    scale = row_weight.max() if row_weight.numel() else row_weight.new_ones(())
    return torch.where(scale > 0, scale, torch.ones_like(scale))


@torch.library.custom_op(
    "neox::linear_cross_entropy_weight_grad",
    mutates_args=(),
    schema="(Tensor hidden, Tensor weight, Tensor labels, Tensor lse, Tensor row_weight,"
    " float z_loss, Tensor factor, int chunk_cols) -> Tensor",
)
def linear_cross_entropy_weight_grad(hidden, weight, labels, lse, row_weight, z_loss, factor,
                                     chunk_cols):  # fmt: skip
    """factor * d(sum_r row_weight_r * (lse_r - logit_r[label_r] + z_loss * lse_r^2))/d weight,
    in weight's dtype, one chunk of vocabulary columns at a time (the recompute route).

    Each chunk's logits [tokens, cols] are remade from hidden and that slice of the weight,
    turned into their gradient in place with the forward's lse, and multiplied by hidden into
    that slice of the result: every element is written once, summed over all tokens inside one
    matmul. The gradient logits are made with row_weight / max(row_weight) and the result
    rescaled, as the forward does, so fp16 does not underflow.
    """
    _check(hidden, weight, labels)
    hidden, labels = hidden.contiguous(), labels.contiguous()
    stat = be.stat_dtype(hidden)
    lse, row_weight = lse.to(stat).contiguous(), row_weight.to(stat).contiguous()
    scale = _grad_scale(row_weight)
    a = row_weight / scale * (1 + 2 * z_loss * lse)
    b = -row_weight / scale
    factor = (factor.to(stat) * scale).reshape(())
    # bf16 and fp32 gradient logits have fp32's range: the factor goes into them (no pass over
    # the result; H100, 8192x4096 V128256, that pass took 2.4 of 57 ms). fp16 ones would
    # underflow (softmax / tokens), so there the result is scaled after each matmul.
    post = hidden.dtype == torch.float16
    if not post:
        a, b = a * factor, b * factor
    a, b = a.contiguous(), b.contiguous()
    grad_weight = torch.empty(weight.shape, dtype=weight.dtype, device=weight.device)
    vocab = weight.shape[0]
    # chunks start at multiples of chunk_cols (not balanced as token chunks are): a slice of
    # odd width would leave the logits' rows unaligned for the matmuls and the kernel
    for start in range(0, vocab, max(1, chunk_cols)):
        end = min(vocab, start + chunk_cols)
        logits = torch.mm(hidden, weight[start:end].to(hidden.dtype).t())
        _chunk_backward(logits, labels, start, lse, a, b)
        out = grad_weight[start:end]
        if out.dtype == hidden.dtype:
            torch.mm(logits.t(), hidden, out=out)
            if post:
                out.mul_(factor)  # still in L2: the slice was just written
        elif post:  # e.g. fp32 weights under autocast: rounded as autocast's linear would be
            torch.mul(torch.mm(logits.t(), hidden), factor, out=out)
        else:
            out.copy_(torch.mm(logits.t(), hidden))
        del logits
    return grad_weight


@linear_cross_entropy_weight_grad.register_fake
def _(hidden, weight, labels, lse, row_weight, z_loss, factor, chunk_cols):
    return torch.empty_like(weight)


def _scale_into(x: Tensor, factor: Tensor, out: Tensor) -> Tensor:
    """out = x * factor (a 0-dim tensor on x's device), rounded once to out's dtype; out may be
    x. An eager fp32 x on CUDA takes neox's kernel (torch runs a multiply by a 0-dim CUDA
    tensor through its generic strided kernel: 2.5 of 42 ms of the accumulate route at
    8192x4096 V128256 on an H100); elsewhere `torch.mul` by row blocks of about 32 MiB, so
    whatever temporary a multiply into another dtype makes stays that small."""
    if (
        _owns_storage(x)  # first: a traced tensor (torch.compile) has no data pointer
        and _owns_storage(out)
        and x.dtype == torch.float32
        and be.use_cuda(x, out)
        and out.dtype in (torch.float32, torch.float16, torch.bfloat16)
        and x.is_contiguous()
        and out.is_contiguous()
        and x.data_ptr() % 16 == 0
        and out.data_ptr() % 16 == 0
    ):
        f = factor.to(device=x.device, dtype=torch.float32).reshape(()).contiguous()
        be.cuda_extension().scale_cast(
            be.device_index(x), be.dtype_code(out), be.ptr(x), be.ptr(out), be.ptr(f),
            x.numel(), be.stream(x),
        )  # fmt: skip
        return out
    factor = factor.to(x.dtype) if out is x else factor
    rows = max(1, _WEIGHT_GRAD_CHUNK_BYTES // max(1, x[:1].numel() * x.element_size()))
    for start in range(0, x.shape[0], rows):
        torch.mul(x[start : start + rows], factor, out=out[start : start + rows])
    return out


def _owns_storage(t: Tensor) -> bool:
    """A plain eager tensor: not one traced by torch.compile (fake or functional wrappers),
    where an in-place change of a saved output breaks the backward graph's partitioning."""
    return type(t) is torch.Tensor and not torch.compiler.is_compiling()


def _lce_setup(ctx, inputs, output):
    hidden, weight, labels, row_weight, z_loss, _chunk_rows, compute_grad, accumulate = inputs
    # the outputs other than the loss get no gradient: without this autograd would pass
    # zeros the size of grad_weight and grad_hidden to the backward (2 GB at V128256)
    ctx.set_materialize_grads(False)
    ctx.compute_grad, ctx.accumulate = compute_grad, accumulate
    ctx.weight_grad_taken = False
    ctx.weight_dtype = weight.dtype
    ctx.z_loss = z_loss
    _loss, lse, grad_hidden, grad_weight, scale = output
    if accumulate:
        ctx.save_for_backward(grad_hidden, grad_weight, scale)
    else:
        ctx.save_for_backward(grad_hidden, scale, hidden, weight, labels, lse, row_weight)


def _lce_backward(ctx, grad_loss, _glse, _gh, _gw, _gs):
    if not ctx.compute_grad:
        raise RuntimeError(
            "linear_cross_entropy was called with compute_grad=False; call it with "
            "compute_grad=True (the default when gradients are enabled) to backpropagate"
        )
    if grad_loss is None:  # only lse was used: it has no gradient path here
        return None, None, None, None, None, None, None, None
    if ctx.accumulate:
        if ctx.weight_grad_taken:
            raise RuntimeError(
                "linear_cross_entropy: a second backward through the same loss (retain_graph)"
                " needs weight_grad='recompute'; the accumulate route hands its weight-gradient"
                " buffer to the first backward"
            )
        grad_hidden, grad_weight, scale = ctx.saved_tensors
        factor = grad_loss * scale
        if grad_weight.dtype == ctx.weight_dtype and _owns_storage(grad_weight):
            # fp32 weights (neox-train's master weights under autocast): the fp32 sum becomes
            # the gradient, scaled in place; a copy would hold a second [vocab, h] buffer
            ctx.weight_grad_taken = True
            gw = _scale_into(grad_weight, factor, grad_weight)
        else:
            out = torch.empty(grad_weight.shape, dtype=ctx.weight_dtype, device=grad_weight.device)
            gw = _scale_into(grad_weight, factor, out)
    else:
        grad_hidden, scale, hidden, weight, labels, lse, row_weight = ctx.saved_tensors
        factor = grad_loss * scale
        gw = None
        if ctx.needs_input_grad[1]:  # before gh: its chunk buffer is gone when gh is made
            cols = weight_grad_chunk_cols(hidden.shape[0], weight.shape[0], hidden.dtype)
            gw = linear_cross_entropy_weight_grad(
                hidden, weight, labels, lse, row_weight, ctx.z_loss, grad_loss, cols
            )
    gh = grad_hidden * factor.to(grad_hidden.dtype)
    return gh, gw, None, None, None, None, None, None


linear_cross_entropy_op.register_autograd(_lce_backward, setup_context=_lce_setup)


@torch.library.custom_op(
    "neox::linear_cross_entropy_stats",
    mutates_args=(),
    schema="(Tensor hidden, Tensor weight, Tensor labels, int vocab_start, int chunk_rows)"
    " -> (Tensor, Tensor)",
)
def linear_cross_entropy_stats(hidden, weight, labels, vocab_start, chunk_rows):
    """(lse over the shard, logit of the label or 0), both [tokens] fp32."""
    _check(hidden, weight, labels)
    n = hidden.shape[0]
    hidden, labels = hidden.contiguous(), labels.contiguous()
    weight = weight.to(hidden.dtype).contiguous()
    lse = torch.empty(n, dtype=be.stat_dtype(hidden), device=hidden.device)
    target = torch.empty_like(lse)
    for start, end in _chunks(n, chunk_rows):
        logits = torch.mm(hidden[start:end], weight.t())
        _chunk_forward(logits, labels[start:end], vocab_start, lse[start:end],
                       target[start:end], None, 0.0)  # fmt: skip
        del logits
    return lse, target


@linear_cross_entropy_stats.register_fake
def _(hidden, weight, labels, vocab_start, chunk_rows):
    n = hidden.shape[0]
    stat = be.stat_dtype(hidden)
    return hidden.new_empty(n, dtype=stat), hidden.new_empty(n, dtype=stat)


@torch.library.custom_op(
    "neox::linear_cross_entropy_stats_bwd",
    mutates_args=(),
    schema="(Tensor hidden, Tensor weight, Tensor labels, int vocab_start, Tensor lse,"
    " Tensor grad_lse, Tensor grad_target, int chunk_rows) -> (Tensor, Tensor)",
)
def linear_cross_entropy_stats_bwd(hidden, weight, labels, vocab_start, lse, grad_lse,
                                   grad_target, chunk_rows):  # fmt: skip
    """(grad_hidden, grad_weight fp32) of sum(grad_lse * lse + grad_target * target)."""
    n = hidden.shape[0]
    hidden, labels = hidden.contiguous(), labels.contiguous()
    weight = weight.to(hidden.dtype).contiguous()
    stat = be.stat_dtype(hidden)
    grad_lse, grad_target = grad_lse.to(stat).contiguous(), grad_target.to(stat).contiguous()
    grad_hidden = torch.empty_like(hidden)
    grad_weight = None
    for start, end in _chunks(n, chunk_rows):
        h = hidden[start:end]
        logits = torch.mm(h, weight.t())
        _chunk_backward(logits, labels[start:end], vocab_start, lse[start:end],
                        grad_lse[start:end], grad_target[start:end])  # fmt: skip
        torch.mm(logits, weight, out=grad_hidden[start:end])
        grad_weight = _accumulate_weight_grad(grad_weight, logits, h)
        del logits
    if grad_weight is None:
        grad_weight = torch.zeros(weight.shape, dtype=stat, device=weight.device)
    return grad_hidden, grad_weight


@linear_cross_entropy_stats_bwd.register_fake
def _(hidden, weight, labels, vocab_start, lse, grad_lse, grad_target, chunk_rows):
    return torch.empty_like(hidden), weight.new_empty(weight.shape, dtype=be.stat_dtype(hidden))


def _stats_setup(ctx, inputs, output):
    hidden, weight, labels, vocab_start, chunk_rows = inputs
    ctx.args = (vocab_start, chunk_rows)
    ctx.save_for_backward(hidden, weight, labels, output[0])


def _stats_backward(ctx, grad_lse, grad_target):
    hidden, weight, labels, lse = ctx.saved_tensors
    vocab_start, chunk_rows = ctx.args
    grad_lse = grad_lse if grad_lse is not None else torch.zeros_like(lse)
    grad_target = grad_target if grad_target is not None else torch.zeros_like(lse)
    gh, gw = linear_cross_entropy_stats_bwd(
        hidden, weight, labels, vocab_start, lse, grad_lse, grad_target, chunk_rows
    )
    return gh, gw.to(weight.dtype), None, None, None


linear_cross_entropy_stats.register_autograd(_stats_backward, setup_context=_stats_setup)


def _flatten(hidden: Tensor, weight: Tensor, labels: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """2-D hidden and 1-D labels; under autocast hidden takes the autocast dtype (the ops cast
    the weight once themselves and return its gradient in the weight's own dtype)."""
    if torch.is_autocast_enabled(hidden.device.type):
        hidden = hidden.to(torch.get_autocast_dtype(hidden.device.type))
    return hidden.reshape(-1, hidden.shape[-1]), weight, labels.reshape(-1).long()


def linear_cross_entropy(
    hidden: Tensor,
    weight: Tensor,
    labels: Tensor,
    ignore_index: int = IGNORE_INDEX,
    z_loss: float = 0.0,
    reduction: str = "mean",
    chunk_rows: int | None = None,
    weight_grad: str = "auto",
) -> Tensor:
    """cross_entropy(hidden @ weight.T, labels) + z_loss * mean(logsumexp^2), without the logits.

    hidden [..., h], weight [vocab, h], labels [...] (ignore_index skipped). `reduction` is
    "mean" (over the counted tokens; 0 when there are none) or "sum". Under autocast the
    matmuls run in the autocast dtype, as `F.linear` would. `weight_grad` picks the weight
    gradient's route (module docstring): "accumulate", "recompute", or "auto" (recompute from
    a vocabulary of RECOMPUTE_VOCAB); both give the same gradient up to rounding.
    """
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
    if weight_grad not in WEIGHT_GRAD_ROUTES:
        raise ValueError(f"weight_grad must be one of {WEIGHT_GRAD_ROUTES}, got {weight_grad!r}")
    hidden2, weight2, labels2 = _flatten(hidden, weight, labels)
    valid = labels2 != ignore_index
    stat = be.stat_dtype(hidden2)
    row_weight = valid.to(stat)
    if reduction == "mean":
        row_weight = row_weight / valid.sum().clamp(min=1).to(stat)
    labels2 = torch.where(valid, labels2, torch.full_like(labels2, IGNORE_INDEX))
    grad = torch.is_grad_enabled() and (hidden2.requires_grad or weight2.requires_grad)
    accumulate = weight_grad == "accumulate" or (
        weight_grad == "auto" and weight2.shape[0] < RECOMPUTE_VOCAB
    )
    chunk_bytes = ACCUMULATE_CHUNK_BYTES if grad and accumulate else _CHUNK_BYTES
    chunk = chunk_rows or default_chunk_rows(weight2.shape[0], hidden2.dtype, chunk_bytes)
    loss, *_ = linear_cross_entropy_op(
        hidden2, weight2, labels2, row_weight, float(z_loss), chunk, grad, accumulate
    )
    return loss


def linear_cross_entropy_shard(
    hidden: Tensor,
    weight_shard: Tensor,
    labels: Tensor,
    vocab_start: int,
    chunk_rows: int | None = None,
) -> tuple[Tensor, Tensor]:
    """Per-token (lse over this vocabulary shard, the label's logit or 0), both fp32.

    weight_shard holds the rows of vocabulary ids vocab_start..vocab_start+len-1. Across
    shards: lse = logsumexp(stack(lse_s)), target = sum(target_s), loss = lse - target.
    """
    hidden2, weight2, labels2 = _flatten(hidden, weight_shard, labels)
    chunk = chunk_rows or default_chunk_rows(weight2.shape[0], hidden2.dtype)
    lse, target = linear_cross_entropy_stats(hidden2, weight2, labels2, int(vocab_start), chunk)
    return lse.reshape(labels.shape), target.reshape(labels.shape)
