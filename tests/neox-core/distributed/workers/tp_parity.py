"""Worker: a tensor-parallel model against the same model in one process, on every rank.

For each variant: build the model (same seed everywhere), keep a plain copy as the one-process
reference, split the other with `apply_tensor_parallel` over all ranks, then compare logits,
loss and every gradient (mapped back to the canonical layout), and run STEPS AdamW steps
with gradient clipping on both, comparing loss and gradient norm at each step and the final
weights. Rank 0 writes the largest relative differences as JSON to `--out`.

A run is `VARIANT[+sp][+fused][+fp64][+bf16][+sgd][+compile]:STEPS`. `+compile` compiles each
TP layer as neox-train's `compile: true` does (`--compile-backend`, default aot_eager). `+bf16`
runs both forwards under bf16 autocast (fp32 weights, neox-train's bf16 regime). `+fused`
routes CPU tensors through the fused ops' references and checks that each layer's rotary took
its fused op. `+fp64` puts the model, the batches' loss
masks and the optimizer state in float64: the sharded computation then matches one process to
~1e-15 per operation, so a difference left in fp32 is round-off, not a sharding error. `+sgd`
trains with plain SGD instead of AdamW, whose g/sqrt(v) update turns round-off in near-zero
gradients into whole-lr steps. `--trace` prints, on rank 0, every step's relative differences
(loss, gradient norm, weights over the whole model and in the worst tensor elementwise, and
how far the weights have moved from the start) so their growth can be followed. To compare round-off on another
machine (CPU, gloo, 2 processes; prints fp32 and fp64 side by side, AdamW and SGD):

    torchrun --standalone --nproc-per-node 2 tests/neox-core/distributed/workers/tp_parity.py \
        --trace --runs llama-gqa:10,llama-gqa+fp64:10,llama-gqa+sgd:10,llama-gqa+fp64+sgd:10
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import copy
import json
import math
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import torch
import torch.distributed as dist
from _common import VARIANTS, init_gloo, llama
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.tensor import DTensor, Replicate

from neox_core.distributed.compile import apply_compile
from neox_core.distributed.grad_norm import sum_partial_grads
from neox_core.distributed.loss import lm_loss, vocab_parallel_cross_entropy
from neox_core.distributed.tensor_parallel import apply_tensor_parallel
from neox_core.distributed.tp_layout import tp_global_to_canonical, tp_param_layout
from neox_core.models import build_model
from neox_core.models.fused_ops import force_fusion_on_cpu


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| relative to max |b| (0 when both are zero)."""
    scale = b.abs().max().item()
    diff = (a - b).abs().max().item()
    return diff / scale if scale > 0 else diff


def canonical(model: torch.nn.Module, cfg, tp: int, grads: bool) -> dict[str, torch.Tensor]:
    layout = tp_param_layout(cfg)
    out = {}
    for name, p in model.named_parameters():
        t = p.grad if grads else p.detach()
        if isinstance(t, DTensor):
            t = t.full_tensor()
        dim, blocks = layout[name]
        out[name] = tp_global_to_canonical(t, dim, tp, blocks)
    return out


def grad_norm_and_clip(params: list[torch.nn.Parameter], max_norm: float) -> float:
    grads = [p.grad for p in params if p.grad is not None]
    total = torch.nn.utils.get_total_norm(grads)
    if isinstance(total, DTensor):
        total = total.full_tensor()
    torch.nn.utils.clip_grads_with_norm_(params, max_norm, total)
    return float(total)


def batch(
    step: int, cfg, seq: int, dtype: torch.dtype = torch.float32
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(100 + step)
    tokens = torch.randint(0, cfg.vocab_size, (2, seq + 1), generator=g)
    mask = (torch.rand(2, seq, generator=g) > 0.2).to(dtype)
    labels = torch.where(mask > 0, tokens[:, 1:], torch.zeros_like(tokens[:, 1:]))
    return tokens[:, :-1].to(DEVICE), labels.to(DEVICE), mask.to(DEVICE)


DEVICE = torch.device("cpu")
TRACE = False  # --trace: print every step's differences on rank 0


def optimizer(params, kind: str) -> torch.optim.Optimizer:
    if kind == "sgd":
        # lr chosen so that 10 clipped steps move the weights about as far as AdamW's do
        # (relative movement printed by --trace), for a like-for-like comparison
        return torch.optim.SGD(params, lr=0.04, weight_decay=0.1)
    # Adam divides by sqrt(v) + eps: with eps 1e-8 a round-off difference of 1e-9 in a
    # near-zero gradient becomes a whole-lr step of either sign, so one-process runs that
    # differ only in summation order drift apart elementwise; eps 1e-6 keeps the comparison
    # meaningful
    return torch.optim.AdamW(params, lr=1e-3, eps=1e-6, weight_decay=0.1)


def weights_rel(model, ref, cfg, tp: int, start: dict[str, torch.Tensor] | None = None):
    """(|w - w_ref| / |w_ref|, |w_ref - start| / |w_ref|, worst tensor's max |w - w_ref| /
    max |w_ref|): the first two over the whole model (Frobenius), the last elementwise.

    The test checks the Frobenius figure: elementwise, Adam turns round-off in near-zero
    gradients (zero-initialised biases, the key bias whose true gradient is 0) into visibly
    different steps, as it would between any two summation orders (--trace prints both)."""
    weights = canonical(model, cfg, tp, grads=False)
    ref_w = {n: p.detach() for n, p in ref.named_parameters()}
    norm = sum(float(w.pow(2).sum()) for w in ref_w.values()) ** 0.5
    diff = sum(float((weights[n] - w).pow(2).sum()) for n, w in ref_w.items()) ** 0.5
    moved = 0.0
    if start is not None:
        moved = sum(float((w - start[n]).pow(2).sum()) for n, w in ref_w.items()) ** 0.5
    worst = max(rel(weights[n], w) for n, w in ref_w.items())
    return diff / norm, moved / norm, worst


def run_variant(
    name: str,
    sp: bool,
    steps: int,
    tp_mesh,
    tp: int,
    dtype: torch.dtype = torch.float32,
    opt_kind: str = "adamw",
    label: str = "",
    compile_backend: str | None = None,
    bf16: bool = False,
    fused: bool = False,
) -> dict[str, float]:
    cfg = VARIANTS[name]
    amp = (lambda: torch.autocast(DEVICE.type, torch.bfloat16)) if bf16 else contextlib.nullcontext
    out_dtype = torch.bfloat16 if bf16 else dtype  # the logits' dtype (autocast's linear)
    ref = build_model(cfg, seed=7, device=DEVICE).to(dtype)
    model = copy.deepcopy(ref)
    apply_tensor_parallel(model, tp_mesh, sequence_parallel=sp)
    assert all(isinstance(p, DTensor) for p in model.parameters()), "plain tensor left"
    assert all(p.dtype == dtype for p in model.parameters())
    if compile_backend:  # each TP layer compiled as neox-train's `compile: true` does
        apply_compile(model, backend=compile_backend)

    seq = 16
    tokens, labels, mask = batch(0, cfg, seq, dtype)
    with amp():
        ref_logits = ref(tokens)
        logits, calls = op_calls(lambda: model(tokens))
    if fused:  # the TP regions' rotary takes its fused op (on a copy of to_local's view);
        # a first compiled call also counts the op's calls while tracing
        assert calls["neox::rotary_"] >= cfg.num_layers, dict(calls)
    assert isinstance(logits, DTensor), type(logits)
    assert logits.dtype == ref_logits.dtype == out_dtype, (logits.dtype, ref_logits.dtype)
    out = {"logits": rel(logits.full_tensor(), ref_logits)}

    # vocabulary-parallel cross entropy with -100 labels, forward and gradient
    ignore = labels.clone()
    ignore[:, ::3] = -100
    ref_ce = vocab_parallel_cross_entropy(ref_logits, ignore)
    ce = vocab_parallel_cross_entropy(logits, ignore)
    out["ce_tokens"] = rel(ce, ref_ce)
    assert float(ce.detach()[:, ::3].abs().max()) == 0.0

    ref_opt = optimizer(ref.parameters(), opt_kind)
    opt = optimizer(model.parameters(), opt_kind)
    start = {n: p.detach().clone() for n, p in ref.named_parameters()} if TRACE else None
    loss_rel = grad_rel = norm_rel = 0.0
    for step in range(steps):
        tokens, labels, mask = batch(step, cfg, seq, dtype)
        with amp():
            ref_loss = lm_loss(ref(tokens), labels, mask)
            loss = lm_loss(model(tokens), labels, mask)
        assert loss.dtype == ref_loss.dtype == dtype
        ref_loss.backward()
        loss.backward()
        step_loss = abs(loss.item() - ref_loss.item()) / abs(ref_loss.item())
        loss_rel = max(loss_rel, step_loss)
        if step == 0:
            ref_grads = {n: p.grad for n, p in ref.named_parameters()}
            grads = canonical(model, cfg, tp, grads=True)
            assert sorted(grads) == sorted(ref_grads)
            grad_rel = max(rel(grads[n], ref_grads[n]) for n in grads)
        ref_norm = grad_norm_and_clip(list(ref.parameters()), 0.5)
        norm = grad_norm_and_clip(list(model.parameters()), 0.5)
        step_norm = abs(norm - ref_norm) / ref_norm
        norm_rel = max(norm_rel, step_norm)
        ref_opt.step()
        opt.step()
        ref_opt.zero_grad()
        opt.zero_grad()
        if TRACE:
            w, moved, worst = weights_rel(model, ref, cfg, tp, start)
            if dist.get_rank() == 0:
                print(
                    f"trace {label} step {step + 1:2d}: loss {step_loss:.2e} "
                    f"grad_norm {step_norm:.2e} weights {w:.2e} (moved {moved:.2e}, "
                    f"worst tensor elementwise {worst:.2e})",
                    flush=True,
                )
    out.update(loss=loss_rel, grads_step0=grad_rel, grad_norm=norm_rel)
    if steps:
        out["weights_after"] = weights_rel(model, ref, cfg, tp)[0]
    return out


def dropout_checks(tp_mesh, tp: int) -> dict[str, float]:
    """With dropout: masks on sequence shards (SP) differ between TP ranks, masks on replicated
    activations (no SP) are equal, the default random stream stays in step on all ranks, and
    activation checkpointing recomputes the same masks (same loss and gradients)."""
    out = {}
    for sp in (False, True):
        cfg = llama(hidden_dropout=0.3, attention_dropout=0.3)
        base = build_model(cfg, seed=7)
        plain, ckpt = copy.deepcopy(base), copy.deepcopy(base)
        ckpt.checkpoint_activations = True
        apply_tensor_parallel(plain, tp_mesh, sequence_parallel=sp)
        apply_tensor_parallel(ckpt, tp_mesh, sequence_parallel=sp)
        masks: list[torch.Tensor] = []
        hook = plain.layers[0].hidden_dropout.register_forward_hook(
            lambda m, a, o, masks=masks: masks.append((o == 0) & (a[0] != 0))
        )
        tokens, labels, mask = batch(0, cfg, 16)
        losses, grads = [], []
        for model in (plain, ckpt):
            torch.manual_seed(11)
            lm_loss(model(tokens), labels, mask).backward()
            losses.append(lm_loss(model(tokens), labels, mask).detach())  # 2nd draw, no grad
            grads.append(canonical(model, cfg, tp, grads=True))
        hook.remove()
        key = "sp" if sp else "tp"
        out[f"ckpt_same_grads_{key}"] = max(rel(grads[1][n], grads[0][n]) for n in grads[0])
        out[f"ckpt_same_loss_{key}"] = abs(float(losses[1] - losses[0]))
        first = masks[0].contiguous()
        gathered = [torch.empty_like(first) for _ in range(tp)]
        dist.all_gather(gathered, first)
        same = all(torch.equal(g, gathered[0]) for g in gathered)
        assert first.any() and same != sp, (sp, same)
        after = torch.rand(4)
        everywhere = [torch.empty_like(after) for _ in range(tp)]
        dist.all_gather(everywhere, after)
        assert all(torch.equal(e, after) for e in everywhere), "default RNG out of step"
    return out


def saved_activation_bytes(model: torch.nn.Module, tokens: torch.Tensor) -> int:
    """Bytes this rank keeps for backward in one forward, parameters not counted."""
    params = set()
    for p in model.parameters():
        local = p.to_local() if isinstance(p, DTensor) else p
        params.add(local.untyped_storage().data_ptr())
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        local = t.to_local() if isinstance(t, DTensor) else t
        local = getattr(local, "elem", local)  # an in-flight functional collective's result
        storage = local.untyped_storage()
        if storage.data_ptr() not in params:
            seen[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(tokens)
    return sum(seen.values())


def activation_checks(tp_mesh, tp: int) -> dict[str, float]:
    """Saved activations per rank: TP cuts those inside the regions, SP also those between."""
    cfg = VARIANTS["llama-gqa"]
    tokens = batch(0, cfg, 32)[0]
    ref = build_model(cfg, seed=7)
    tp_only, sp = copy.deepcopy(ref), copy.deepcopy(ref)
    apply_tensor_parallel(tp_only, tp_mesh, sequence_parallel=False)
    apply_tensor_parallel(sp, tp_mesh, sequence_parallel=True)
    one = saved_activation_bytes(ref, tokens)
    with_tp = saved_activation_bytes(tp_only, tokens)
    with_sp = saved_activation_bytes(sp, tokens)
    assert with_sp < with_tp < one, (one, with_tp, with_sp)
    return {"tp_over_one": with_tp / one, "sp_over_one": with_sp / one}


def op_calls(fn) -> tuple[object, collections.Counter]:
    """fn()'s result, and how often each neox:: op ran in it (CPU profiler)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        result = fn()
    return result, collections.Counter(e.name for e in prof.events() if e.name.startswith("neox::"))


def traced_collectives(fn) -> list[tuple[str, int, str]]:
    """(op, elements, dtype) of every functional collective `fn` issues on this rank, and
    ("allreduce", -1, "") for each `torch.distributed.all_reduce` (the profiler's record)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        fn()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "trace.json"
        prof.export_chrome_trace(str(path))
        events = json.loads(path.read_text())["traceEvents"]
    calls = []
    for ev in events:
        name, args = ev.get("name", ""), ev.get("args", {})
        if name.startswith("_c10d_functional::") and "wait_tensor" not in name:
            dims, types = args["Input Dims"], args["Input type"]
            calls.append((name.split("::")[1], math.prod(dims[0]), types[0]))
        elif name == "c10d::allreduce_":
            calls.append(("allreduce", -1, ""))
    return calls


def collective_checks(tp_mesh, tp: int) -> dict[str, float]:
    """Under bf16 autocast (fp32 weights) what crosses the TP boundaries is bf16.

    One forward + backward of the LLaMA shape, with and without SP: every collective of
    activation size (the [B, S, H] hidden states or their sequence shard) carries bf16, but
    the embedding's sum in fp32 (exact: one rank holds each row; under SP also its gradient's
    all-gather). Without SP no gradient is left partial; with SP the norm weights' are, and
    `sum_partial_grads` sums them all in one all-reduce, to what DTensor's own redistribute
    gives.
    """
    cfg = VARIANTS["llama-gqa"]
    tokens, labels, mask = batch(0, cfg, 16)
    sizes = {tokens.numel() * cfg.hidden_size, tokens.numel() * cfg.hidden_size // tp}
    out: dict[str, float] = {}
    for sp in (False, True):
        key = "sp" if sp else "tp"
        model = build_model(cfg, seed=7, device=DEVICE)
        apply_tensor_parallel(model, tp_mesh, sequence_parallel=sp)

        def step(model=model) -> None:
            with torch.autocast(DEVICE.type, torch.bfloat16):
                loss = lm_loss(model(tokens), labels, mask)
            loss.backward()

        calls = [c for c in traced_collectives(step) if c[1] in sizes]
        dtypes = [c[2] for c in calls]
        # per layer: attention and MLP out (forward), their inputs' gradients (backward); the
        # LM head's input gradient; under SP each boundary also has its inverse (all-gather
        # forward, reduce-scatter backward, and back), the embedding's too
        per = 2 if sp else 1
        expect = (4 * cfg.num_layers + 1) * per
        assert dtypes.count("c10::BFloat16") == expect and dtypes.count("float") == per, (
            key,
            calls,
        )
        out[f"bf16_collectives_{key}"] = float(dtypes.count("c10::BFloat16"))
        out[f"fp32_collectives_{key}"] = float(dtypes.count("float"))
        partial = [
            n for n, p in model.named_parameters()
            if any(pl.is_partial() for pl in p.grad.placements)
        ]  # fmt: skip
        if not sp:
            assert not partial, partial
            continue
        assert len(partial) == 2 * cfg.num_layers + 1, partial  # the norm weights
        params = list(model.parameters())
        want = {
            id(p): p.grad.redistribute(placements=[Replicate()]).to_local().clone()
            for p in params
            if p.grad.placements[0].is_partial()
        }
        calls = traced_collectives(lambda params=params: sum_partial_grads(params))
        assert calls == [("allreduce", -1, "")], calls
        for p in params:
            assert not p.grad.placements[0].is_partial()
            if id(p) in want:
                assert torch.allclose(p.grad.to_local(), want[id(p)], rtol=1e-6, atol=0)
        out["partial_grad_allreduces_sp"] = float(len(calls))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument(
        "--runs",
        required=True,
        help="comma list of VARIANT[+sp][+fused][+fp64][+bf16][+sgd][+compile]:STEPS, dropout, "
        "activations, collectives",
    )
    ap.add_argument("--out", help="write the results as JSON here (rank 0)")
    ap.add_argument("--trace", action="store_true", help="print every step's differences")
    ap.add_argument(
        "--compile-backend",
        default="aot_eager",
        help="torch.compile backend of +compile runs (aot_eager: traced as inductor would be, "
        "no code generated, quick on CPU; inductor: as neox-train)",
    )
    ap.add_argument("--device", default="cpu", help="cpu (gloo) or cuda (NCCL, one GPU a rank)")
    args = ap.parse_args()
    global DEVICE, TRACE
    TRACE = args.trace
    if args.device == "cuda":
        local = int(os.environ["LOCAL_RANK"])
        DEVICE = torch.device("cuda", local)
        torch.cuda.set_device(DEVICE)
        torch.backends.cuda.matmul.allow_tf32 = False  # fp32 comparisons
        dist.init_process_group("nccl", device_id=DEVICE)
        rank, world = dist.get_rank(), dist.get_world_size()
    else:
        rank, world = init_gloo()
    mesh = init_device_mesh(DEVICE.type, (world,), mesh_dim_names=("tp",))
    results = {}
    for run in args.runs.split(","):
        checks = {"dropout": dropout_checks, "activations": activation_checks,
                  "collectives": collective_checks}  # fmt: skip
        if run in checks:
            results[run] = checks[run](mesh, world)
            continue
        key, steps = run.split(":")
        name, *mods = key.split("+")
        # +fused: the fused ops' PyTorch references on CPU, as CUDA runs the kernels
        unknown = set(mods) - {"sp", "fused", "fp64", "bf16", "sgd", "compile"}
        assert not unknown, f"{run}: unknown modifiers {sorted(unknown)}"
        dtype = torch.float64 if "fp64" in mods else torch.float32
        opt_kind = "sgd" if "sgd" in mods else "adamw"
        with force_fusion_on_cpu("fused" in mods):
            results[key] = run_variant(
                name, "sp" in mods, int(steps), mesh, world, dtype, opt_kind, key,
                args.compile_backend if "compile" in mods else None, "bf16" in mods,
                "fused" in mods,
            )  # fmt: skip
    if rank == 0:
        for key, diffs in results.items():
            print(key, " ".join(f"{k} {v:.1e}" for k, v in diffs.items()), flush=True)
        if args.out:
            Path(args.out).write_text(json.dumps(results, indent=1))
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
