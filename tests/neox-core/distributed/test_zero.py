"""ZeRO 0-3 (DDP / FSDP2) and TP x ZeRO against one process, under torchrun (gloo, CPU).

The worker (`workers/zero_parity.py`) trains through the trainer's own `train_step` with
`parallelize`, and compares each step's loss (mean over ranks) and gradient norm with one
process holding the whole global batch; it also reports per-rank bytes of parameters,
gradients and optimizer state.
"""

from __future__ import annotations

import json

import pytest
import torch

from neox_core.config import ConfigError, load_config
from neox_core.distributed.grad_norm import clip_grad_norm, total_grad_norm
from neox_core.distributed.parallel_dims import ParallelDims


def _report(run) -> dict:
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-6000:]
    line = next(x for x in run.stdout.splitlines() if x.startswith("RESULT "))
    return json.loads(line.removeprefix("RESULT "))


def _check_sharded_bytes(entry: dict, n: int) -> None:
    for kind in ("params", "grads", "optimizer"):
        mine, total = entry["bytes"][kind], entry["one_process_bytes"][kind]
        assert mine == pytest.approx(total / n, rel=0.10), (kind, mine, total, n)


@pytest.mark.slow
def test_zero_stages_at_dp2_match_one_process(torchrun, workers) -> None:
    report = _report(torchrun(workers / "zero_parity.py", 2, "--layouts", "1:0,1:1,1:2,1:3"))
    for stage in range(4):
        assert report[f"tp1_dp2_zero{stage}"]["max_rel_diff"] <= 1e-5
    z0 = report["tp1_dp2_zero0"]
    assert z0["bytes"] == z0["one_process_bytes"]  # DDP: everything replicated
    for stage in (1, 2, 3):  # FSDP2 shards params, grads and optimizer state at stages 1-3
        _check_sharded_bytes(report[f"tp1_dp2_zero{stage}"], 2)
    # one step of 2 micro batches, 3 FSDP units (2 decoder layers and the root): ZeRO 1 gathers
    # and reduces once per unit and step (at the accumulation boundary, as DeepSpeed's stage 1),
    # ZeRO 2 once per unit and micro batch (its gradients stay sharded)
    z1, z2 = report["tp1_dp2_zero1"], report["tp1_dp2_zero2"]
    assert (z1["reduce_scatters"], z1["all_gathers"]) == (3, 3), z1
    assert (z2["reduce_scatters"], z2["all_gathers"]) == (6, 6), z2


@pytest.mark.slow
def test_tp2_x_dp2_zero3_and_dp4_zero3(torchrun, workers) -> None:
    """The 2-D mesh composes: TP 2 x DP 2 with ZeRO 3 (and ZeRO 0) equals one process; at
    DP 4 each rank holds a quarter; with TP 2 x DP 2 ZeRO 3 each rank holds a quarter too."""
    run = torchrun(
        workers / "zero_parity.py", 4, "--layouts", "2:3,2:0,1:3", "--model", "llama-gqa"
    )
    report = _report(run)
    for key in ("tp2_dp2_zero3", "tp2_dp2_zero0", "tp1_dp4_zero3"):
        assert report[key]["max_rel_diff"] <= 1e-5, (key, report[key])
    _check_sharded_bytes(report["tp1_dp4_zero3"], 4)
    _check_sharded_bytes(report["tp2_dp2_zero3"], 4)


@pytest.mark.slow
def test_bf16_gathers_feed_the_layers_bf16_and_keep_fp32_master_weights(torchrun, workers) -> None:
    """`zero_gather_dtype: bf16` at DP 2: a layer's forward sees bf16 weights (norms too), the
    sharded parameters and Adam state stay fp32, and the losses follow the fp32-gather run's
    (both under bf16 autocast) to within what rounding the norms' weights to bf16 moves."""
    report = _report(torchrun(workers / "zero_gather_dtype.py", 2))
    fp32, bf16 = report["fp32"], report["bf16"]
    assert fp32["seen"] == {"weight": "torch.float32", "norm_weight": "torch.float32"}
    assert bf16["seen"] == {"weight": "torch.bfloat16", "norm_weight": "torch.bfloat16"}
    for run in (fp32, bf16):
        assert run["all_dtensor"] and run["sharded_param_dtypes"] == ["torch.float32"]
        assert run["state_dtypes"] == ["torch.float32"]
    assert fp32["losses"] != bf16["losses"]  # the bf16 gathers did change something
    for a, b in zip(fp32["losses"], bf16["losses"], strict=True):
        assert abs(a - b) <= 2e-2 * abs(a), (fp32["losses"], bf16["losses"])


@pytest.mark.slow
def test_zero_stages_take_the_fused_linear_cross_entropy(torchrun, workers) -> None:
    """With the fused ops on (their CPU references), ZeRO 0, 1 and 3 at DP 2 compute the loss
    with the fused linear + cross-entropy on the head FSDP2 gathered for the forward, TP 2 with
    its vocabulary-parallel form on each rank's head shard, and all match one process."""
    layouts = "1:0,1:1,1:3,2:1"
    report = _report(torchrun(workers / "zero_parity.py", 2, "--layouts", layouts, "--fused",
                              "--steps", "4"))  # fmt: skip
    for key, dp in (("tp1_dp2_zero0", 2), ("tp1_dp2_zero1", 2), ("tp1_dp2_zero3", 2),
                    ("tp2_dp1_zero1", 1)):  # fmt: skip
        assert report[key]["max_rel_diff"] <= 1e-5, (key, report[key])
        # one process takes the whole global batch: GAS 2 micro batches per data-parallel rank
        assert report[key]["one_process_fused_loss_calls"] == 2 * dp
    for key in ("tp1_dp2_zero0", "tp1_dp2_zero1", "tp1_dp2_zero3", "tp2_dp1_zero1"):
        assert report[key]["fused_loss_calls"] == 2, (key, report[key])  # GAS 2 per rank


@pytest.mark.slow
def test_tp2_x_dp2_zero3_takes_the_vocabulary_parallel_fused_loss(torchrun, workers) -> None:
    """The 2-D mesh with the fused ops on: FSDP2 over DP 2 around TP 2, grouped-query
    attention; the vocabulary-parallel fused loss on every rank, equal to one process."""
    run = torchrun(workers / "zero_parity.py", 4, "--layouts", "2:3", "--fused", "--steps", "3",
                   "--model", "llama-gqa")  # fmt: skip
    report = _report(run)["tp2_dp2_zero3"]
    assert report["max_rel_diff"] <= 1e-5, report
    assert report["fused_loss_calls"] == 2, report


def test_layout_errors_name_keys_and_numbers(tmp_path) -> None:
    """Smoke test (no processes): the layout checks the trainer runs before allocating."""
    cfg_file = tmp_path / "m.yml"
    cfg_file.write_text(
        '{"num-layers": 2, "hidden-size": 64, "num-attention-heads": 8, "num_kv_heads": 2,'
        ' "seq-length": 32, "pos-emb": "rotary", "vocab_size": 100, "model-parallel-size": 4,'
        ' "activation": "swiglu", "intermediate_size": 96}'
    )
    cfg = load_config([cfg_file])  # TP 4 > 2 kv heads: kv heads are replicated, accepted
    assert ParallelDims.from_config(cfg, 8) == ParallelDims(dp=2, tp=4)
    with pytest.raises(ConfigError, match=r"world size 6 is not divisible by .* = 4 x 1"):
        ParallelDims.from_config(cfg, 6)
    with pytest.raises(ConfigError, match=r"key/value rows .* must split into 8 equal parts"):
        tiny_kv = tmp_path / "kv.yml"
        tiny_kv.write_text('{"hidden-size": 16, "model-parallel-size": 8, "intermediate_size": 64}')
        load_config([cfg_file, tiny_kv])
    bad = tmp_path / "bad.yml"
    bad.write_text('{"num_kv_heads": 3, "num-attention-heads": 6, "hidden-size": 48}')
    with pytest.raises(ConfigError, match=r"model-parallel-size = 4 does not divide num_attention"):
        load_config([cfg_file, bad])


def test_neox_train_names_a_world_size_that_does_not_fit(
    tmp_path, monkeypatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The launch's world size against the layout: one error line and exit 2, no traceback,
    before any process group or allocation (here WORLD_SIZE 3 for TP 2)."""
    from neox_core.training.run import main_train

    cfg_file = tmp_path / "m.yml"
    cfg_file.write_text(
        '{"num-layers": 2, "hidden-size": 64, "num-attention-heads": 8, "seq-length": 32,'
        ' "pos-emb": "rotary", "vocab_size": 100, "model-parallel-size": 2}'
    )
    monkeypatch.setenv("WORLD_SIZE", "3")
    monkeypatch.setenv("RANK", "0")
    assert main_train(load_config([cfg_file])) == 2
    err = capsys.readouterr().err
    assert err.startswith("neox-train: error: ") and "world size 3" in err, err


def test_grad_norm_and_clipping_match_torch_on_plain_tensors() -> None:
    torch.manual_seed(0)
    a = [torch.nn.Parameter(torch.randn(5, 3)) for _ in range(3)]
    b = [torch.nn.Parameter(p.detach().clone()) for p in a]
    for p, q in zip(a, b, strict=True):
        p.grad = torch.randn_like(p)
        q.grad = p.grad.clone()
    assert float(total_grad_norm(a)) == pytest.approx(
        float(torch.nn.utils.get_total_norm([p.grad for p in a])), rel=1e-6
    )
    mine = clip_grad_norm(a, 0.5)
    ref = torch.nn.utils.clip_grad_norm_(b, 0.5)
    assert float(mine) == pytest.approx(float(ref), rel=1e-6)
    for p, q in zip(a, b, strict=True):
        torch.testing.assert_close(p.grad, q.grad)


def test_grad_norm_of_mixed_dtypes_accumulates_in_fp32_and_keeps_fp64() -> None:
    """One multi-tensor norm per dtype: bf16 gradients are summed in fp32 (a bf16 norm would be
    off by ~1e-3), fp64 ones in fp64; the result equals the fp64 norm of all of them."""
    g = torch.Generator().manual_seed(0)
    grads = [
        torch.randn(300, 7, generator=g).to(torch.bfloat16),
        torch.randn(64, generator=g),
        torch.randn(5, 5, generator=g, dtype=torch.float64) * 1e3,
        torch.randn(4097, generator=g).to(torch.bfloat16),
    ]
    params = [torch.nn.Parameter(torch.zeros_like(x)) for x in grads]
    for p, x in zip(params, grads, strict=True):
        p.grad = x
    exact = torch.cat([x.double().flatten() for x in grads]).norm()
    assert abs(float(total_grad_norm(params)) - float(exact)) < 1e-6 * float(exact)
    fp64_only = total_grad_norm(params[2:3])
    assert fp64_only.dtype == torch.float64 and float(fp64_only) == pytest.approx(
        float(grads[2].norm()), rel=1e-14
    )
