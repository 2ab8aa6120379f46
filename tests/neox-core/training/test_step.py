"""One training step: NaN/inf handling per `on_nan`, fp16 loss scaling, bf16 autocast,
weight-decay groups, gradient accumulation."""

from __future__ import annotations

import itertools

import pytest
import torch

from neox_core.config import load_config
from neox_core.models import build_model
from neox_core.training.optimizer import build_optimizer, param_groups
from neox_core.training.precision import DynamicLossScaler
from neox_core.training.schedules import build_schedule
from neox_core.training.step import (
    NonFiniteLossError,
    StepSettings,
    resolve_results,
    train_step,
)


class Poisonable(torch.nn.Module):
    """A small real LM whose output can be turned to NaN, as a diverged model's would."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(32, 16)
        self.norm = torch.nn.LayerNorm(16)
        self.head = torch.nn.Linear(16, 32)
        self.poison = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.head(self.norm(self.embed(x)))
        return y * float("nan") if self.poison else y


def _data(vocab: int = 32, batch: int = 2, seq: int = 9):
    g = torch.Generator().manual_seed(0)
    while True:
        yield {"text": torch.randint(0, vocab, (batch, seq), generator=g)}


def _setup(model: torch.nn.Module, **kw):
    opt = build_optimizer(
        model, type="adam", lr=1e-2, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1
    )
    sched = build_schedule(
        lr=1e-2, min_lr=0.0, warmup=0.0, lr_decay_iters=10, train_iters=10, decay_style="constant"
    )
    sched.apply(opt)
    settings = dict(
        precision="fp32",
        gradient_accumulation_steps=2,
        clip_grad=1.0,
        on_nan="skip",
        device=torch.device("cpu"),
    )
    settings.update(kw)
    return opt, sched, StepSettings(**settings)


def _params(m: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in m.parameters()]


def test_nan_loss_is_skipped_and_counted_or_stops() -> None:
    torch.manual_seed(0)
    model = Poisonable()
    opt, sched, s = _setup(model)
    data = _data()
    ok = train_step(model, opt, sched, None, data, s, 1)
    assert not ok.skipped and not ok.nan and sched.num_iters == 1
    model.poison = True
    before = _params(model)
    bad = train_step(model, opt, sched, None, data, s, 2)
    assert bad.skipped and bad.nan and sched.num_iters == 1
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    s.on_nan = "stop"
    with pytest.raises(NonFiniteLossError, match="iteration 3"):
        train_step(model, opt, sched, None, data, s, 3)


def test_fp16_overflow_skips_the_step_and_lowers_the_scale() -> None:
    torch.manual_seed(0)
    model = Poisonable()
    opt, sched, s = _setup(model, precision="fp16")
    scaler = DynamicLossScaler.from_config(
        initial_scale_power=60, loss_scale_window=1000, hysteresis=1, min_loss_scale=1.0
    )
    data = _data()
    before = _params(model)
    r = train_step(model, opt, sched, scaler, data, s, 1)
    assert r.skipped and not r.nan  # an overflow, not a NaN loss
    assert scaler.scale == 2.0**59 and sched.num_iters == 0
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    scaler.cur_scale = 2.0**8
    r = train_step(model, opt, sched, scaler, data, s, 2)
    assert not r.skipped and sched.num_iters == 1
    assert not all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


def test_bf16_autocast_keeps_fp32_master_weights() -> None:
    torch.manual_seed(0)
    model = Poisonable()
    opt, sched, s = _setup(model, precision="bf16")
    data = _data()
    losses = [train_step(model, opt, sched, None, data, s, i).loss for i in range(1, 6)]
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert all(torch.isfinite(torch.tensor(losses)))


def test_accumulation_of_two_micro_batches_equals_one_batch_of_both() -> None:
    torch.manual_seed(0)
    a, b = Poisonable(), Poisonable()
    b.load_state_dict(a.state_dict())
    opt_a, sched_a, s_a = _setup(a, gradient_accumulation_steps=2, clip_grad=0.0)
    opt_b, sched_b, s_b = _setup(b, gradient_accumulation_steps=1, clip_grad=0.0)
    micro = list(itertools.islice(_data(batch=2), 2))
    train_step(a, opt_a, sched_a, None, iter(micro), s_a, 1)
    train_step(
        b, opt_b, sched_b, None, iter([{"text": torch.cat([m["text"] for m in micro])}]), s_b, 1
    )
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(pa, pb, rtol=1e-5, atol=1e-6)


def test_weight_decay_groups_exclude_biases_and_norms(tmp_path) -> None:
    cfg_path = tmp_path / "m.yml"
    cfg_path.write_text(
        '{"num-layers": 1, "hidden-size": 32, "num-attention-heads": 4, '
        '"seq-length": 16, "vocab_size": 64, "norm": "rmsnorm", "pos-emb": "rotary"}'
    )
    model = build_model(load_config([cfg_path]).model, seed=0)
    decay, no_decay = param_groups(model, 0.1)
    names = {id(p): n for n, p in model.named_parameters()}
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert all(p.ndim == 2 for p in decay["params"])
    assert {names[id(p)] for p in no_decay["params"]} == {
        n for n, p in model.named_parameters() if n.endswith("bias") or "norm" in n
    }
    assert "embed.weight" in {names[id(p)] for p in decay["params"]}
    assert len(param_groups(model, 0.0)) == 1


def test_batches_follow_gpt_neox_get_batch() -> None:
    from neox_core.training.batch import make_batch, masked_lm_loss

    text = torch.tensor([[5, 6, 7, -100, -100]])
    b = make_batch({"text": text})
    assert b.tokens.tolist() == [[5, 6, 7, 0]]  # padding never reaches the embedding
    assert b.labels.tolist() == [[6, 7, 0, 0]]
    assert b.loss_mask.tolist() == [[1.0, 1.0, 0.0, 0.0]]
    labelled = make_batch(
        {"text": torch.tensor([[1, 2, 3, 4]]), "label": torch.tensor([[-100, -100, 3, 4]])}
    )
    assert labelled.labels.tolist() == [[0, 3, 4]] and labelled.loss_mask.tolist() == [[0, 1, 1]]
    logits = torch.zeros(1, 3, 8)
    assert masked_lm_loss(logits, labelled).item() == pytest.approx(torch.log(torch.tensor(8.0)))
    none = make_batch({"text": torch.tensor([[1, 2]]), "label": torch.tensor([[-100, -100]])})
    assert masked_lm_loss(torch.zeros(1, 1, 8), none).item() == 0.0


def test_deferred_step_matches_the_synced_one_and_skips_nan_on_the_device() -> None:
    """defer_sync (one GPU): results stay tensors, updates equal, a NaN step changes nothing."""
    torch.manual_seed(0)
    synced, deferred = Poisonable(), Poisonable()
    deferred.load_state_dict(synced.state_dict())
    # a clip the gradients exceed: the deferred step clips through the fused AdamW's grad_scale
    opt_s, sched_s, s_s = _setup(synced, clip_grad=0.2)
    opt_d, sched_d, s_d = _setup(deferred, clip_grad=0.2, defer_sync=True)
    # the fused AdamW neox-train builds on CUDA (it skips a step on a device flag)
    opt_d = torch.optim.AdamW(param_groups(deferred, 0.1), lr=1e-2, betas=(0.9, 0.95), fused=True)
    sched_d.apply(opt_d)
    data_s, data_d = _data(), _data()
    for i in range(1, 4):
        a = train_step(synced, opt_s, sched_s, None, data_s, s_s, i)
        b = train_step(deferred, opt_d, sched_d, None, data_d, s_d, i)
        assert b.pending and not a.pending
        (b,) = resolve_results([b])
        assert b.loss == pytest.approx(a.loss, rel=1e-5)
        assert b.grad_norm == pytest.approx(a.grad_norm, rel=1e-5)
        assert b.grad_norm > s_d.clip_grad
        assert not b.skipped and not b.nan
    for p, q in zip(synced.parameters(), deferred.parameters(), strict=True):
        torch.testing.assert_close(q, p, rtol=1e-5, atol=1e-6)
    deferred.poison = True
    before = _params(deferred)
    bad = train_step(deferred, opt_d, sched_d, None, data_d, s_d, 4)
    assert all(torch.equal(a, b) for a, b in zip(before, deferred.parameters(), strict=True))
    (bad,) = resolve_results([bad])
    assert bad.skipped and bad.nan
    steps = {int(opt_d.state[p]["step"]) for p in deferred.parameters()}
    assert steps == {3}  # AdamW's own count did not advance either
