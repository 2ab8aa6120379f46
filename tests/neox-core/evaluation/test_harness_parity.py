"""neox's harness LM scores local tasks as lm-eval's own `hf` backend does on the HF export.

The neox side reads the tensor-parallel-2 checkpoint; the `hf` side the folder that `neox-ckpt
neox-to-hf` exported from it (fp32, CPU). Accuracy, normalised accuracy and bits per byte agree
within 1e-4, word and byte perplexity within 1e-4 on the log scale (they are exp of a mean
log-likelihood); generate_until gives the same strings.
"""

from __future__ import annotations

import math

import pytest

from neox_core.evaluation.harness import run_tasks, task_manager
from neox_core.evaluation.harness_lm import NeoxLM
from neox_core.generation.loading import (
    build_tokenizer_for,
    load_inference_config,
    load_inference_model,
)

lm_eval = pytest.importorskip("lm_eval")

TASKS = ["local_mc", "local_ppl", "local_gen"]
MAX_LENGTH = 32  # shorter than the longest perplexity document: rolling windows are used


def _hf_results(hf_dir, include_path) -> dict:
    from lm_eval import simple_evaluate

    out = simple_evaluate(
        model="hf",
        model_args={
            "pretrained": str(hf_dir),
            "dtype": "float32",
            "device": "cpu",
            "max_length": MAX_LENGTH,
        },
        tasks=TASKS,
        task_manager=task_manager(str(include_path)),  # lm-eval's own, indexed once
        batch_size=2,
        bootstrap_iters=0,
        log_samples=True,
    )
    return dict(out)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["pythia", "llama"])
def test_local_tasks_match_hf_backend(name, inference_checkpoints, local_tasks) -> None:
    ck = inference_checkpoints[name]
    cfg = load_inference_config(list(ck.configs))
    model = load_inference_model(cfg, device="cpu", dtype="fp32").model
    lm = NeoxLM(model, build_tokenizer_for(cfg), max_length=MAX_LENGTH, batch_size=3)
    ours = run_tasks(lm, TASKS, include_path=str(local_tasks), bootstrap_iters=0)
    assert ours.failures == {}
    theirs = _hf_results(ck.hf_dir, local_tasks)["results"]
    for task, metrics in (
        ("local_mc", ("acc,none", "acc_norm,none")),
        ("local_ppl", ("word_perplexity,none", "byte_perplexity,none", "bits_per_byte,none")),
        ("local_gen", ("exact_match,none",)),
    ):
        for metric in metrics:
            got, want = ours.results["results"][task][metric], theirs[task][metric]
            if "perplexity" in metric:
                # exp(mean NLL) of a random model is ~1e9: compare on the log scale it comes from
                got, want = math.log(got), math.log(want)
            assert got == pytest.approx(want, abs=1e-4), (task, metric, got, want)
    # a perplexity far from the vocabulary size shows the model, not chance, is scored
    assert ours.results["results"]["local_ppl"]["word_perplexity,none"] > 1


@pytest.mark.slow
def test_per_request_scores_match(inference_checkpoints, local_tasks) -> None:
    """Below the aggregate: each choice's log-likelihood and each generated string."""
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    ck = inference_checkpoints["pythia"]
    cfg = load_inference_config(list(ck.configs))
    model = load_inference_model(cfg, device="cpu", dtype="fp32").model
    ours = NeoxLM(model, build_tokenizer_for(cfg), max_length=MAX_LENGTH, batch_size=4)
    hf = HFLM(pretrained=str(ck.hf_dir), dtype="float32", device="cpu", max_length=MAX_LENGTH)
    pairs = [("The cat", " sat on the mat"), ("", "Hello"), ("A b c d " * 10, " e f")]
    reqs = [Instance("loglikelihood", {}, p, i) for i, p in enumerate(pairs)]
    for (a, ga), (b, gb) in zip(ours.loglikelihood(reqs), hf.loglikelihood(reqs), strict=True):
        assert a == pytest.approx(b, abs=1e-4) and ga == gb
    rolling = [Instance("loglikelihood_rolling", {}, (t,), 0) for t in ("x y " * 40, "Hi")]
    for a, b in zip(
        ours.loglikelihood_rolling(rolling), hf.loglikelihood_rolling(rolling), strict=True
    ):
        assert a == pytest.approx(b, abs=1e-4)
    gen = [
        Instance("generate_until", {}, (c, {"until": ["\n"], "max_gen_toks": 10}), i)
        for i, c in enumerate(["Once upon a", "The", "It was a dark and stormy"])
    ]
    assert ours.generate_until(gen) == hf.generate_until(gen)
