"""Pipeline parallelism (issue 18) through the real `neox-train` on CPU (gloo, fp32).

Several layouts run in one torchrun launch (`workers/pp_train.py`) so torch's import and the
process start are paid once (CI budget). Each is compared with one process training the same
global batch: losses and gradient norms within 1e-5 relative over 10 steps.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from neox_core.config import ConfigError, load_config, with_world_size
from neox_core.distributed.pipeline_partition import partition_layers, stage_splits
from neox_core.training.run import main_train

WORKER = Path(__file__).parent / "workers" / "pp_train.py"
STEP = re.compile(r"iteration\s+(\d+)/\s*\d+ \|.* lm_loss: ([0-9.E+-]+) \|.*")
# not anchored to line starts: another rank's unfinished line can precede a marker in
# torchrun's merged stdout
RUN = re.compile(r"=== RUN (\S+) rc=(\d+)")
TIED = re.compile(r"TIED (\S+) ([-+0-9.e]+)")
VAL = re.compile(r"validation results at iteration (\d+) \| lm_loss value: ([0-9.E+-]+) \|")

BASE = {
    "split": "90,10,0", "vocab_size": 96, "make_vocab_size_divisible_by": 64, "num-workers": 0,
    "num-layers": 3, "hidden-size": 32, "num-attention-heads": 4, "seq-length": 32,
    "max-position-embeddings": 32, "pos-emb": "rotary", "rotary-pct": 0.5,
    "no-weight-tying": False, "hidden-dropout": 0.0,
    "optimizer": {"type": "Adam", "params": {"lr": 0.003, "betas": [0.9, 0.95], "eps": 1.0e-8}},
    "min_lr": 0.0003, "lr-decay-style": "cosine", "warmup": 0.1, "weight-decay": 0.1,
    "gradient_clipping": 1.0, "train_batch_size": 4, "train_micro_batch_size_per_gpu": 1,
    "train-iters": 10, "seed": 5, "eval-interval": 5, "eval-iters": 2, "log-interval": 1,
    "log_grad_norm": False,
}  # fmt: skip


def _write(path: Path, keys: dict) -> str:
    path.write_text(json.dumps(keys))
    return str(path)


def _losses(out: str) -> dict[int, float]:
    return {int(m.group(1)): float(m.group(2)) for m in STEP.finditer(out)}


def _val(out: str) -> dict[int, float]:
    """Validation losses by iteration (eval through the pipeline under PP)."""
    return {int(m.group(1)): float(m.group(2)) for m in VAL.finditer(out)}


# model-shape keys of BASE; the rest is data and schedule, merged after a converted model's YAML
SHAPE = {"vocab_size", "make_vocab_size_divisible_by", "num-layers", "hidden-size",
         "num-attention-heads", "max-position-embeddings", "pos-emb", "rotary-pct",
         "no-weight-tying"}  # fmt: skip


def _hf_checkpoints(tmp: Path) -> dict[str, Path]:
    """A tiny random GPT-NeoX with tied embeddings (transformers) converted by `neox-ckpt hf-to-neox` at PP 1 and
    PP 2, and the PP 1 output resharded by `neox-ckpt reshard --tp 2 --pp 2`."""
    import torch
    import transformers

    from neox_ckpt.cli import main as ckpt

    config = transformers.GPTNeoXConfig(
        vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=32, rotary_pct=0.5,
        tie_word_embeddings=True,  # neox-ckpt writes the embedding into both end stages' files
    )  # fmt: skip
    torch.manual_seed(3)
    transformers.GPTNeoXForCausalLM(config).save_pretrained(tmp / "hf")
    out = {"pp1": tmp / "hf_pp1", "pp2": tmp / "hf_pp2", "re": tmp / "re_tp2_pp2"}
    for key, extra in (("pp1", []), ("pp2", ["--pp", "2"])):
        args = ["hf-to-neox", "--hf-model", str(tmp / "hf"), "--output-dir", str(out[key])]
        assert ckpt([*args, *extra]) == 0
    reshard = ["reshard", str(out["pp1"]), "--output-dir", str(out["re"]), "--tp", "2", "--pp", "2"]
    assert ckpt(reshard) == 0
    assert (out["pp2"] / "global_step0" / "model_tp00_pp01.safetensors").is_file()
    assert (out["re"] / "global_step0" / "model_tp01_pp01.safetensors").is_file()
    return out


def _runs(out: str) -> dict[str, str]:
    """Each run's stdout (rank 0), by the name given to the worker."""
    parts, start = {}, 0
    for m in RUN.finditer(out):
        assert m.group(2) == "0", out[start : m.end()][-3000:]
        parts[m.group(1)] = out[start : m.start()]
        start = m.end()
    return parts


def _single_out(cfg: list[str], capsys, steps: int = 10) -> str:
    """One process's run (the reference); its stdout."""
    assert main_train(load_config(cfg)) == 0
    out = capsys.readouterr().out
    assert sorted(_losses(out)) == list(range(1, steps + 1))
    return out


def _single(cfg: list[str], capsys, steps: int = 10) -> dict[int, float]:
    return _losses(_single_out(cfg, capsys, steps))


def _close(got: dict[int, float], want: dict[int, float], steps=range(1, 11)) -> float:
    worst = 0.0
    for i in steps:
        assert got[i] == pytest.approx(want[i], rel=1e-5), (i, got[i], want[i])
        worst = max(worst, abs(got[i] - want[i]) / abs(want[i]))
    return worst


# -- fast: the partition ------------------------------------------------------------------


def test_partition_methods_split_layers(tmp_path: Path) -> None:
    cfg = load_config([_write(tmp_path / "a.yml", {**BASE, "data-path": "x", "num-layers": 7})])
    m = cfg.model
    assert partition_layers(m, 2, "type:transformer") == [(0, 4), (4, 7)]
    assert partition_layers(m, 3, "type:transformer") == [(0, 3), (3, 5), (5, 7)]
    # DeepSpeed's uniform over [embed, 7 layers, head]: 9 items -> 5 + 4
    assert partition_layers(m, 2, "uniform") == [(0, 4), (4, 7)]
    assert partition_layers(m, 4, "uniform") == [(0, 2), (2, 4), (4, 6), (6, 7)]
    # parameters: the embedding (96 -> 128 rows x 32) and tied head weigh about a layer each
    spans = partition_layers(m, 2, "parameters")
    assert spans[0][0] == 0 and spans[-1][1] == 7 and spans[0][1] == spans[1][0]
    with pytest.raises(ConfigError, match=r"8 stages .* only num_layers = 7"):
        partition_layers(m, 8, "type:transformer")
    with pytest.raises(ConfigError, match=r"expected one of"):
        partition_layers(m, 2, "type:mlp")
    pp = _write(tmp_path / "pp.yml", {"pipe_parallel_size": 2, "gradient_accumulation_steps": 4})
    splits = stage_splits(load_config([str(tmp_path / "a.yml"), pp]))
    assert [(s.rank, s.start, s.stop, s.first, s.last) for s in splits] == [
        (0, 0, 4, True, False),
        (1, 4, 7, False, True),
    ]
    assert splits[0].parameters + splits[1].parameters > 0


def test_pipeline_layout_errors(tmp_path: Path, monkeypatch, capsys) -> None:
    base = _write(tmp_path / "a.yml", {**BASE, "data-path": "x"})
    four_layers = _write(tmp_path / "four.yml", {"num-layers": 4})
    few = _write(tmp_path / "few.yml", {"pipe_parallel_size": 4, "gradient_accumulation_steps": 2})
    with pytest.raises(ConfigError, match=r"4 stages .* only num_layers = 3"):
        load_config([base, few])
    mb = _write(tmp_path / "mb.yml", {"pipe_parallel_size": 2, "train_batch_size": 1})
    with pytest.raises(ConfigError, match=r"1f1b with pipe_parallel_size = 2 needs at least 2"):
        load_config([base, mb])
    inter = _write(
        tmp_path / "i.yml",
        {"pipe_parallel_size": 2, "pipe_schedule": "interleaved_1f1b", "pipe_virtual_stages": 2},
    )
    with pytest.raises(ConfigError, match=r"4 stages .* only num_layers = 3"):
        load_config([base, inter])
    tasks = _write(tmp_path / "t.yml", {"pipe_parallel_size": 2, "eval_tasks": ["lambada"]})
    with pytest.raises(ConfigError, match=r"eval_tasks .* pipe_parallel_size > 1 is not yet"):
        load_config([base, tasks])
    # the layout must multiply to the world size: 3 processes cannot hold PP 2
    pp = _write(tmp_path / "pp.yml", {"pipe_parallel_size": 2})
    monkeypatch.setenv("WORLD_SIZE", "3")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("LOCAL_RANK", "0")
    assert main_train(load_config([base, pp])) == 2
    assert "world size 3 is not divisible by model_parallel_size x pipe_parallel_size" in (
        capsys.readouterr().err
    )
    # zero_bubble is refused with data parallelism (tested exact at PP 2 x TP 2 only)
    zb = _write(
        tmp_path / "zb.yml",
        {"pipe_parallel_size": 2, "pipe_schedule": "zero_bubble", "pipe_virtual_stages": 2},
    )
    monkeypatch.setenv("WORLD_SIZE", "4")
    with pytest.raises(ConfigError, match=r"zero_bubble with data-parallel size 2 .* not yet"):
        with_world_size(load_config([base, four_layers, zb]), 4)


# -- slow: training parity, tied embeddings, checkpoints ---------------------------------


@pytest.mark.slow
def test_pp2_layouts_schedules_and_checkpoints_match_one_process(
    tmp_path: Path, torchrun, capsys, learnable_corpus
) -> None:
    """One 4-process launch (CI budget: one start-up for every layout): PP2 x DP2 with 1F1B
    (DDP), GPipe (ZeRO 1), interleaved 1F1B and activation checkpointing; PP2 x TP2; exact
    resume at PP2 x DP2 and PP2 x TP2; PP1 -> PP2 x DP2; `neox-ckpt hf-to-neox --pp 2` and
    `reshard --tp 2 --pp 2` outputs finetuned at PP 2; then PP2 x DP2 -> PP1 and PP2 x TP2 ->
    PP1 in this process, and `neox-ckpt verify` on the PP2 checkpoint. Validation losses (eval
    through the pipeline) are compared with one process's too."""
    data = learnable_corpus(tmp_path)
    base = _write(tmp_path / "base.yml", {**BASE, "data-path": data})
    four = _write(tmp_path / "four.yml", {"num-layers": 4})

    def layout(name: str, **keys) -> str:
        return _write(tmp_path / f"{name}.yml", keys)

    ref_dir = tmp_path / "ref"
    ref_out = _single_out(
        [base, layout("ref_save", save=str(ref_dir), checkpoint_factor=5)], capsys
    )
    ref4_out = _single_out([base, four], capsys)
    ref, ref4, ref_val, ref4_val = (
        _losses(ref_out),
        _losses(ref4_out),
        _val(ref_out),
        _val(ref4_out),
    )
    hf = _hf_checkpoints(tmp_path)
    hf_keys = {k: v for k, v in BASE.items() if k not in SHAPE}
    hf_train = _write(tmp_path / "hf_train.yml", {**hf_keys, "data-path": data, "train-iters": 2})
    hf_ref = _single([str(hf["pp1"] / "neox.yml"), hf_train], capsys, steps=2)

    pp2 = {"pipe_parallel_size": 2}
    pp_dir = tmp_path / "pp2"
    tp_dir = tmp_path / "pp2_tp2"
    runs = {
        # 3 layers: 2 + 1 per stage (uneven), tied embedding split over the stages
        "1f1b_dp2": [base, layout("a", **pp2, save=str(pp_dir), checkpoint_factor=5)],
        "gpipe_dp2_zero1": [
            base,
            layout("b", **pp2, pipe_schedule="gpipe", zero_optimization={"stage": 1}),
        ],
        "interleaved_dp2": [
            base,
            four,
            layout("c", **pp2, pipe_schedule="interleaved_1f1b", pipe_virtual_stages=2),
        ],
        "zero_bubble_tp2": [
            base,
            four,
            layout(
                "z",
                **pp2,
                **{"model-parallel-size": 2},
                pipe_schedule="zero_bubble",
                pipe_virtual_stages=2,
            ),
        ],
        "1f1b_tp2": [
            base,
            layout("d", **pp2, **{"model-parallel-size": 2}, save=str(tp_dir), checkpoint_factor=5),
        ],
        "ckpt_act": [base, layout("h", **pp2, checkpoint_activations=True)],
        # resume at PP2 x DP2 from its own step 5, and from one process's step 5
        "resume": [base, layout("e", **pp2, load=str(pp_dir), iteration=5)],
        "from_pp1": [base, layout("f", **pp2, load=str(ref_dir), iteration=5)],
        "resume_tp2": [
            base,
            layout("i", **pp2, **{"model-parallel-size": 2}, load=str(tp_dir), iteration=5),
        ],
        # converted checkpoints train directly at PP 2 (the YAML says pipe-parallel-size 2)
        "hf_pp2": [str(hf["pp2"] / "neox.yml"), hf_train],
        "reshard_tp2_pp2": [
            str(hf["pp1"] / "neox.yml"),
            hf_train,
            layout("j", **pp2, **{"model-parallel-size": 2}, load=str(hf["re"])),
        ],
    }
    args = [f"{name}={','.join(files)}" for name, files in runs.items()]
    run = torchrun(WORKER, 4, *args, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-5000:]
    out = _runs(run.stdout)
    assert set(out) == set(runs), re.findall(r".*=== RUN.*", run.stdout)
    first = out["1f1b_dp2"]
    assert "data-parallel 2 x tensor-parallel 1 x pipeline-parallel 2" in first
    assert "pipeline stage 0 (pipe rank 0): embedding, layers 0-1" in first
    assert "pipeline stage 1 (pipe rank 1): layer 2, final norm, head, loss" in first
    assert "stage 3 (pipe rank 1): layer 3, final norm, head, loss" in out["interleaved_dp2"]
    assert "data-parallel 1 x tensor-parallel 2 x pipeline-parallel 2" in out["1f1b_tp2"]
    assert re.search(r"> pipeline \(1f1b\): stage 0: [0-9.]+ ms, bubble", first)
    assert "activation checkpointing full" in out["ckpt_act"]
    deltas, val_deltas = {}, {}
    for name in (
        "1f1b_dp2",
        "gpipe_dp2_zero1",
        "interleaved_dp2",
        "zero_bubble_tp2",
        "1f1b_tp2",
        "ckpt_act",
    ):
        inter = name.startswith(("interleaved", "zero_bubble"))
        deltas[name] = _close(_losses(out[name]), ref4 if inter else ref)
        val_deltas[name] = _close(_val(out[name]), ref4_val if inter else ref_val, (5, 10))
    # tied embeddings: the first and last stage's copies are equal after every step
    tied = TIED.findall(run.stdout)
    assert {name for name, _ in tied} == set(runs)
    assert all(float(diff) == 0.0 for _, diff in tied), tied
    # exact resume at the same layout; PP 1 -> PP 2 x DP 2 reshards on load
    for name, full in (("resume", first), ("resume_tp2", out["1f1b_tp2"])):
        resumed = _losses(out[name])
        assert sorted(resumed) == list(range(6, 11)), name
        for i in range(6, 11):
            assert resumed[i] == pytest.approx(_losses(full)[i], rel=1e-6), (name, i)
        assert _val(out[name])[10] == pytest.approx(_val(full)[10], rel=1e-6), name
    # hf-to-neox --pp 2 and reshard --tp 2 --pp 2 outputs: the PP 1 load's two steps
    for name in ("hf_pp2", "reshard_tp2_pp2"):
        assert "loaded weights from" in out[name], name
        deltas[name] = _close(_losses(out[name]), hf_ref, range(1, 3))
    deltas["from_pp1"] = _close(_losses(out["from_pp1"]), ref, range(6, 11))
    manifest = json.loads((pp_dir / "global_step5" / "manifest.json").read_text())
    assert manifest["parallel"]["pipe_parallel_size"] == 2
    assert (pp_dir / "global_step5" / "model_tp00_pp01.safetensors").is_file()
    # PP 2 x DP 2 -> PP 1: one process continues the pipelined run's checkpoint
    back = _single_from(base, layout("g", load=str(pp_dir), iteration=5), capsys=capsys)
    deltas["to_pp1"] = _close(back, ref, range(6, 11))
    back = _single_from(base, layout("k", load=str(tp_dir), iteration=5), capsys=capsys)
    deltas["tp2_to_pp1"] = _close(back, ref, range(6, 11))
    # neox-ckpt verify: the PP 2 checkpoint neox-train wrote, then a flipped byte in stage 1
    _verify_pp_checkpoint(pp_dir, capsys)
    with capsys.disabled():
        print("\nrelative loss deltas vs one process:", deltas)
        print("relative validation loss deltas vs one process:", val_deltas)
        print(
            "seconds per run:", dict(re.findall(r"=== RUN (\S+) rc=0 \(([0-9.]+) s\)", run.stdout))
        )


def _verify_pp_checkpoint(save: Path, capsys) -> None:
    from neox_ckpt.cli import main as ckpt

    capsys.readouterr()
    assert ckpt(["verify", str(save), "--iteration", "5"]) == 0
    ok = capsys.readouterr().out
    assert "OK global_step5 (iteration 5, TP 1 x PP 2 x DP 2" in ok, ok
    f = save / "global_step5" / "model_tp00_pp01.safetensors"
    data = bytearray(f.read_bytes())
    data[-3] ^= 0x01
    f.write_bytes(bytes(data))
    assert ckpt(["verify", str(save), "--iteration", "5"]) == 1
    bad = capsys.readouterr().out
    assert "model_tp00_pp01.safetensors: content hash xxh3_64" in bad, bad


def _single_from(*cfg: str, capsys) -> dict[int, float]:
    assert main_train(load_config(list(cfg))) == 0
    losses = _losses(capsys.readouterr().out)
    assert sorted(losses) == list(range(6, 11))
    return losses


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("NEOX_TEST_8PROC") != "1", reason="set NEOX_TEST_8PROC=1")
def test_pp2_tp2_dp2_eight_processes(tmp_path: Path, torchrun, capsys, learnable_corpus) -> None:
    data = learnable_corpus(tmp_path)
    base = _write(tmp_path / "base.yml", {**BASE, "data-path": data, "train_batch_size": 8})
    ref_out = _single_out([base], capsys)
    ref = _losses(ref_out)
    lay = _write(
        tmp_path / "l.yml",
        {"pipe_parallel_size": 2, "model-parallel-size": 2, "zero_optimization": {"stage": 1}},
    )
    run = torchrun(WORKER, 8, f"pp2tp2dp2={base},{lay}", timeout=900)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-5000:]
    out = _runs(run.stdout)["pp2tp2dp2"]
    delta = _close(_losses(out), ref)
    val_delta = _close(_val(out), _val(ref_out), (5, 10))
    with capsys.disabled():
        print(f"\nPP2 x TP2 x DP2: relative loss delta {delta:.2e}, validation {val_delta:.2e};",
              re.findall(r"=== RUN \S+ rc=0 \([0-9.]+ s\)", run.stdout))  # fmt: skip
