"""neox_kernels.optim.FusedAdamW against torch.optim.AdamW.

CPU: FusedAdamW takes torch's own step there, and must equal AdamW(fused=True) bit for bit,
GradScaler attributes included; its state_dict loads into AdamW and back. The Python side of
the kernel path (pointer lists, step counts, lr, grad_scale, found_inf) is checked on CPU
against a NumPy emulation of csrc/cuda/adamw.cu's arithmetic, through a stand-in extension
that works on the tensors' host addresses.

GPU (marker `gpu`): the CUDA kernel against AdamW(fused=True) over 10 steps on awkward sizes.
Tolerance: max |difference| <= 1e-6 x max(1, max |param|) for parameters and moments (the
kernel repeats ATen's arithmetic, so they are equal but where the two builds contract a double
multiply-add differently); step counts exactly equal.
"""

from __future__ import annotations

import copy
import ctypes
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from neox_kernels import optim  # noqa: E402
from neox_kernels.ops import _backend as be  # noqa: E402
from neox_kernels.optim import FusedAdamW  # noqa: E402

SIZES = (1, 3, 4097, 2**20 + 5, 64)


def _params(sizes, device="cpu", seed=0) -> list[torch.nn.Parameter]:
    g = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(n, generator=g).to(device)) for n in sizes]


def _groups(params, wd=0.1):
    half = len(params) // 2
    return [
        {"params": params[:half], "weight_decay": wd},
        {"params": params[half:], "weight_decay": 0.0},
    ]


def _copy(params):
    return [torch.nn.Parameter(p.detach().clone()) for p in params]


def _set_grads(models, step, seed=1):
    g = torch.Generator().manual_seed(seed + step)
    for group in zip(*models, strict=True):
        grad = torch.randn(group[0].shape, generator=g) * 3
        for p in group:
            p.grad = grad.to(p.device).clone()


def _state(opt, params):
    return [(opt.state[p]["exp_avg"], opt.state[p]["exp_avg_sq"], opt.state[p]["step"]) for p in params]  # fmt: skip


def _run(opts_and_params, steps, device, skip=(), scale=True, lr_tensor_at=None):
    """Steps as neox-core's deferred step makes them: found_inf and grad_scale attributes."""
    models = [ps for _, ps in opts_and_params]
    for i in range(steps):
        _set_grads(models, i)
        bad = torch.tensor(1.0 if i in skip else 0.0, device=device)
        divisor = torch.tensor(0.5 + (i % 3) * 0.75, device=device)
        for opt, _ in opts_and_params:
            if lr_tensor_at is not None and i == lr_tensor_at:
                for group in opt.param_groups:
                    group["lr"] = torch.tensor(group["lr"], device=device)
            opt.found_inf = bad
            if scale:
                opt.grad_scale = divisor
            try:
                opt.step()
            finally:
                del opt.found_inf
                opt.__dict__.pop("grad_scale", None)


def _assert_close(x, y, exact: bool) -> None:
    """Equal, or (exact=False) within 1e-6 x max(1, max |x|), the module's stated tolerance."""
    if exact:
        assert torch.equal(x, y)
        return
    bound = 1e-6 * max(1.0, x.abs().max().item())
    diff = (x - y).abs().max().item()
    assert diff <= bound, f"max |difference| {diff:.3e} > {bound:.3e}"


def _assert_same(a_opt, a_params, b_opt, b_params, exact=True):
    for p, q in zip(a_params, b_params, strict=True):
        _assert_close(p, q, exact)
    for sa, sb in zip(_state(a_opt, a_params), _state(b_opt, b_params), strict=True):
        for x, y in zip(sa, sb, strict=True):
            _assert_close(x, y, exact)


# -- CPU: torch's own step -----------------------------------------------------------------


def test_defaults_report_fused_so_deferred_steps_can_use_it() -> None:
    opt = FusedAdamW(_params((3, 4)))
    assert opt.defaults["fused"] and all(g["fused"] for g in opt.param_groups)
    assert opt._step_supports_amp_scaling
    assert not FusedAdamW(_params((3,)), fused=False).defaults["fused"]
    with pytest.raises(ValueError, match="differentiable"):
        FusedAdamW(_params((3,)), differentiable=True)


def test_cpu_steps_equal_torch_fused_adamw_bit_for_bit() -> None:
    ours = _params(SIZES[:4])
    ref = _copy(ours)
    kw = dict(lr=1e-2, betas=(0.9, 0.95), eps=1e-8)
    a = FusedAdamW(_groups(ours), **kw)
    b = torch.optim.AdamW(_groups(ref), fused=True, **kw)
    _run([(a, ours), (b, ref)], steps=6, device="cpu", skip={2})
    _assert_same(a, ours, b, ref)
    assert {int(a.state[p]["step"]) for p in ours} == {5}


def test_state_dict_round_trips_through_torch_adamw() -> None:
    ours = _params((5, 7, 9))
    a = FusedAdamW(_groups(ours), lr=1e-2)
    _run([(a, ours)], steps=3, device="cpu")
    ref = _copy(ours)
    b = torch.optim.AdamW(_groups(ref), lr=1e-2, fused=True)
    b.load_state_dict(copy.deepcopy(a.state_dict()))  # else the moments are shared tensors
    assert set(b.state_dict()["state"][0]) == {"step", "exp_avg", "exp_avg_sq"}
    back_params = _copy(ours)
    c = FusedAdamW(_groups(back_params), lr=1e-2)
    c.load_state_dict(copy.deepcopy(b.state_dict()))
    _run([(a, ours), (b, ref), (c, back_params)], steps=2, device="cpu")
    _assert_same(a, ours, b, ref)
    _assert_same(a, ours, c, back_params)


# -- CPU: the kernel path's Python side, on an emulation of the kernel ------------------------


def _host(ptr: int, n: int) -> np.ndarray:
    """n fp32 values at a host address, writable in place."""
    return np.ctypeslib.as_array((ctypes.c_float * n).from_address(ptr)) if n else np.zeros(0, np.float32)  # fmt: skip


class _EmulatedKernel:
    """neox::adamw_step's arithmetic (csrc/cuda/adamw.cu) on host memory, in NumPy."""

    def __init__(self) -> None:
        self.calls = 0

    def adamw_step(self, device, ps, gs, ms, vs, ss, ns, lr, lr_ptr, b1, b2, wd, eps, scale_ptr, inf_ptr, stream):  # fmt: skip
        self.calls += 1
        f32, f64 = np.float32, np.float64
        if inf_ptr and _host(inf_ptr, 1)[0] != 0:
            return
        lr = float(_host(lr_ptr, 1)[0]) if lr_ptr else lr
        for p_ptr, g_ptr, m_ptr, v_ptr, s_ptr, n in zip(ps, gs, ms, vs, ss, ns, strict=True):
            p, g = _host(p_ptr, n), _host(g_ptr, n).copy()
            m, v, step_t = _host(m_ptr, n), _host(v_ptr, n), _host(s_ptr, 1)
            if scale_ptr:
                g = g / _host(scale_ptr, 1)[0]
            step = f32(step_t[0] + f32(1))
            step_size = f32(lr / f64(f32(1 - b1 ** f64(step))))
            bc2_sqrt = f32(math.sqrt(1 - b2 ** f64(step)))
            if wd != 0:
                p[:] = (p.astype(f64) - (lr * wd) * p.astype(f64)).astype(f32)
            g64 = g.astype(f64)
            b1f, b2f = f64(f32(b1)), f64(f32(b2))  # the kernel takes the betas as fp32
            m[:] = (b1f * m.astype(f64) + (1 - b1f) * g64).astype(f32)
            v[:] = (b2f * v.astype(f64) + (1 - b2f) * g64 * g64).astype(f32)
            denom = ((np.sqrt(v) / bc2_sqrt).astype(f64) + eps).astype(f32)
            p[:] = p - (step_size * m) / denom
        for s_ptr in ss:
            _host(s_ptr, 1)[0] += 1


@pytest.fixture
def emulated(monkeypatch) -> _EmulatedKernel:
    kernel = _EmulatedKernel()
    monkeypatch.setattr(be, "cuda_extension", lambda: kernel)
    monkeypatch.setattr(be, "stream", lambda t: 0)
    monkeypatch.setattr(be, "device_index", lambda t: 0)
    monkeypatch.setattr(optim, "_KERNEL_DEVICE", "cpu")
    monkeypatch.delenv("NEOX_KERNELS_REFERENCE", raising=False)
    return kernel


@pytest.mark.parametrize("scale", [True, False])
def test_kernel_path_matches_torch_on_an_emulated_kernel(emulated, scale) -> None:
    ours = _params(SIZES)
    ref = _copy(ours)
    kw = dict(lr=3e-3, betas=(0.9, 0.95), eps=1e-6)
    a = FusedAdamW(_groups(ours), **kw)
    b = torch.optim.AdamW(_groups(ref), fused=True, **kw)
    _run([(a, ours), (b, ref)], steps=8, device="cpu", skip={1, 5}, scale=scale, lr_tensor_at=4)
    assert emulated.calls == 8 * 2  # both groups, every step (a skipped one included)
    _assert_same(a, ours, b, ref, exact=False)
    assert [int(a.state[p]["step"]) for p in ours] == [6] * len(ours)


def test_kernel_path_leaves_everything_alone_when_found_inf(emulated) -> None:
    ours = _params((7, 4097))
    a = FusedAdamW(_groups(ours), lr=1e-2)
    _run([(a, ours)], steps=2, device="cpu")
    before = [p.detach().clone() for p in ours]
    state = [[t.clone() for t in s] for s in _state(a, ours)]
    _run([(a, ours)], steps=1, device="cpu", skip={0})
    assert all(torch.equal(p, q) for p, q in zip(before, ours, strict=True))
    for s, t in zip(state, _state(a, ours), strict=True):
        assert all(torch.equal(x, y) for x, y in zip(s, t, strict=True))


def test_groups_the_kernel_cannot_take_fall_back_to_torch(emulated, monkeypatch) -> None:
    ours = _params((5, 6))
    a = FusedAdamW([{"params": ours[:1]}, {"params": ours[1:], "amsgrad": True}], lr=1e-2)
    _run([(a, ours)], steps=1, device="cpu", scale=False)
    assert emulated.calls == 1 and "max_exp_avg_sq" in a.state[ours[1]]
    monkeypatch.setenv("NEOX_KERNELS_REFERENCE", "1")
    _run([(a, ours)], steps=1, device="cpu", scale=False)
    assert emulated.calls == 1


@pytest.fixture
def one_rank_mesh():
    """A one-process gloo group and its CPU mesh, for DTensor parameters."""
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh

    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        yield init_device_mesh("cpu", (1,))
    finally:
        dist.destroy_process_group()


def test_kernel_path_runs_on_the_local_shards_of_dtensors(emulated, one_rank_mesh) -> None:
    from torch.distributed.tensor import Replicate, Shard, distribute_tensor

    def shard(t, placement=Shard(0)):  # noqa: B008
        return distribute_tensor(t.detach().clone(), one_rank_mesh, [placement])

    base = _params((5, 4097, 64))
    ours = [torch.nn.Parameter(shard(p)) for p in base]
    ref = [torch.nn.Parameter(shard(p)) for p in base]
    a = FusedAdamW(_groups(ours), lr=1e-2)
    b = torch.optim.AdamW(_groups(ref), lr=1e-2, fused=True)
    for i in range(3):
        g = torch.Generator().manual_seed(i)
        for p, q in zip(ours, ref, strict=True):
            grad = torch.randn(p.shape, generator=g)
            p.grad, q.grad = shard(grad), shard(grad)
        for opt in (a, b):
            opt.found_inf = torch.tensor(1.0 if i == 1 else 0.0)
            opt.grad_scale = torch.tensor(2.0)
            opt.step()
            del opt.found_inf, opt.grad_scale
    assert emulated.calls == 3 * 2
    for p, q in zip(ours, ref, strict=True):
        assert (p.full_tensor() - q.full_tensor()).abs().max().item() <= 1e-6 * p.full_tensor().abs().max().item()  # fmt: skip
    assert {int(a.state[p]["step"]) for p in ours} == {2}
    # a gradient placed unlike its parameter: torch's step (which redistributes)
    for p in ours:
        p.grad = shard(torch.ones(p.shape), Replicate())
    a.step()
    assert emulated.calls == 3 * 2


# -- GPU: the CUDA kernel ------------------------------------------------------------------

needs_kernel = pytest.mark.skipif(
    not optim.kernel_available(), reason="neox-kernels built without CUDA, or no GPU"
)


def _misaligned(n: int, device: str) -> torch.nn.Parameter:
    """A contiguous parameter 4 bytes past an allocation's start: the kernel's scalar path."""
    g = torch.Generator().manual_seed(n)
    base = torch.randn(n + 1, generator=g).to(device)
    return torch.nn.Parameter(base[1:])


@pytest.mark.gpu
@needs_kernel
@pytest.mark.parametrize("lr_tensor", [False, True], ids=["lr_float", "lr_tensor"])
@pytest.mark.parametrize("scale", [True, False], ids=["grad_scale", "no_scale"])
def test_cuda_kernel_matches_torch_fused_adamw(lr_tensor, scale) -> None:
    ours = [*_params(SIZES, "cuda"), _misaligned(4099, "cuda")]
    ref = _copy(ours)
    kw = dict(lr=torch.tensor(3e-3, device="cuda") if lr_tensor else 3e-3, betas=(0.9, 0.95), eps=1e-8)  # fmt: skip
    a = FusedAdamW(_groups(ours), **kw)
    b = torch.optim.AdamW(_groups(ref), fused=True, **{**kw, "lr": kw["lr"].clone() if lr_tensor else kw["lr"]})  # fmt: skip
    _run([(a, ours), (b, ref)], steps=10, device="cuda", skip={3, 7}, scale=scale)
    torch.cuda.synchronize()
    _assert_same(a, ours, b, ref, exact=False)
    assert [int(a.state[p]["step"]) for p in ours] == [8] * len(ours)


@pytest.mark.gpu
@needs_kernel
def test_cuda_kernel_found_inf_changes_nothing() -> None:
    ours = _params((3, 4097, 2**20 + 5), "cuda")
    a = FusedAdamW(_groups(ours), lr=1e-2)
    _run([(a, ours)], steps=2, device="cuda")
    before = [p.detach().clone() for p in ours]
    state = [[t.clone() for t in s] for s in _state(a, ours)]
    _run([(a, ours)], steps=1, device="cuda", skip={0})
    torch.cuda.synchronize()
    assert all(torch.equal(p, q) for p, q in zip(before, ours, strict=True))
    for s, t in zip(state, _state(a, ours), strict=True):
        assert all(torch.equal(x, y) for x, y in zip(s, t, strict=True))


@pytest.mark.gpu
@needs_kernel
def test_cuda_kernel_over_more_tensors_than_one_launch_holds() -> None:
    sizes = [int(n) for n in torch.randint(1, 3000, (1100,), generator=torch.Generator().manual_seed(0))]  # fmt: skip
    ours = _params(sizes, "cuda")
    ref = _copy(ours)
    a = FusedAdamW(_groups(ours), lr=1e-3)
    b = torch.optim.AdamW(_groups(ref), lr=1e-3, fused=True)
    _run([(a, ours), (b, ref)], steps=3, device="cuda", skip={1})
    torch.cuda.synchronize()
    _assert_same(a, ours, b, ref, exact=False)
    assert {int(a.state[p]["step"]) for p in ours} == {2}
