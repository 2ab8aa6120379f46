"""Our DPO, KTO and reward-model losses equal TRL's own trainers' on the same batches.

TRL's `DPOTrainer`, `KTOTrainer` and `RewardTrainer` run their `compute_loss` on an HF
GPT-NeoX model; ours run the neox-posttrain plug-ins (`neox.train_impl` dpo/kto/rm) on the
neox model with the same weights, fed GPT-NeoX-layout samples (tokens + -100 labels) of
the same examples. Compared in fp32: per-example losses, chosen/rejected rewards, and
every parameter's gradient of the batch loss, within 1e-5.
"""

from __future__ import annotations

import random

import pytest
import torch
from twins import MODEL, config, forward, hf_twin, trl_dpo, trl_kto, trl_reward

from neox_core.models.hf_names import from_hf, load_by_name
from neox_posttrain.batches import sequence_batch
from neox_posttrain.impls import DPO, KTO, RewardModelling, kto_halves
from neox_posttrain.losses import sequence_logps
from neox_posttrain.reward_model import RewardModel

TOL = 1e-5
SEQ = 24
EOS = 99


def _examples(n: int, seed: int, kind: str) -> list[dict]:
    rng = random.Random(seed)

    def ids(lo: int, hi: int) -> list[int]:
        return [rng.randrange(1, 99) for _ in range(rng.randrange(lo, hi))]

    out = []
    for i in range(n):
        ex = {"prompt_ids": ids(2, 8)}
        if kind == "pair":
            ex["chosen_ids"], ex["rejected_ids"] = ids(1, 9), ids(1, 9)
        else:
            ex["completion_ids"], ex["label"] = ids(1, 9), i % 2 == 0
        out.append(ex)
    return out


def _padded(values: list[int], pad: int) -> torch.Tensor:
    return torch.tensor(values + [pad] * (SEQ + 1 - len(values)))


def _doc(prompt: list[int], completion: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """GPT-NeoX layout: tokens, and labels that copy the completion and hold -100 elsewhere."""
    return _padded(prompt + completion, 0), _padded([-100] * len(prompt) + completion, -100)


def _pair_sample(examples: list[dict]) -> dict[str, torch.Tensor]:
    out: dict[str, list] = {"pos": [], "pos_label": [], "neg": [], "neg_label": []}
    for ex in examples:
        for side, key in (("pos", "chosen_ids"), ("neg", "rejected_ids")):
            t, label = _doc(ex["prompt_ids"], ex[key])
            out[side].append(t)
            out[f"{side}_label"].append(label)
    return {k: torch.stack(v) for k, v in out.items()}


def _kto_sample(examples: list[dict]) -> dict[str, torch.Tensor]:
    out: dict[str, list] = {"text": [], "label": [], "reward": []}
    for ex in examples:
        t, label = _doc(ex["prompt_ids"], ex["completion_ids"])
        out["text"].append(t)
        out["label"].append(label)
        n = len(ex["prompt_ids"]) + len(ex["completion_ids"])
        out["reward"].append(_padded([1 if ex["label"] else -1] * n, 0))
    return {k: torch.stack(v) for k, v in out.items()}


def _grads_match(hf, ours, cfg=MODEL) -> float:
    hf_grads = {n: p.grad for n, p in hf.named_parameters() if p.grad is not None}
    expected = from_hf(hf_grads, cfg)
    worst = 0.0
    for name, p in ours.named_parameters():
        if name not in expected:
            continue
        got = p.grad if p.grad is not None else torch.zeros_like(p)
        worst = max(worst, (got - expected[name]).abs().max().item())
    return worst


@pytest.mark.parametrize("beta", [0.1, 0.5])
def test_dpo_matches_trl(beta: float) -> None:
    hf, ours = hf_twin(0)
    hf_ref, ours_ref = hf_twin(1)
    trainer = trl_dpo(hf, hf_ref, beta)
    impl = DPO(config(train_impl="dpo", dataset_impl="pairwise", dpo_beta=beta))
    impl.reference = ours_ref.eval()
    examples = _examples(4, seed=3, kind="pair")

    for ex in examples:  # per example: loss and both rewards
        with torch.no_grad():
            want = trainer.compute_loss(hf, trainer.data_collator([ex])).item()
            got, metrics = impl.loss(ours, _pair_sample([ex]), forward)
        m = trainer._metrics["train"]
        assert abs(got.item() - want) < TOL
        assert abs(metrics["rewards/chosen"] - m["rewards/chosen"][-1]) < TOL
        assert abs(metrics["rewards/rejected"] - m["rewards/rejected"][-1]) < TOL
        assert abs(metrics["logps/chosen"] - m["logps/chosen"][-1]) < TOL

    # the batch: loss, TRL's metric values, gradients of every parameter
    want = trainer.compute_loss(hf, trainer.data_collator(examples))
    want.backward()
    got, metrics = impl.loss(ours, _pair_sample(examples), forward)
    got.backward()
    assert abs(got.item() - want.item()) < TOL
    for name in ("rewards/accuracies", "rewards/margins", "logps/rejected"):
        assert abs(metrics[name] - trainer._metrics["train"][name][-1]) < TOL, name
    assert _grads_match(hf, ours) < TOL


def test_dpo_reference_free_is_a_zero_reference() -> None:
    _, ours = hf_twin(0)
    examples = _examples(3, seed=4, kind="pair")
    free = DPO(config(train_impl="dpo", dataset_impl="pairwise", dpo_reference_free=True))
    assert not free.needs_reference
    loss, metrics = free.loss(ours, _pair_sample(examples), forward)
    c, r = metrics["logps/chosen"], metrics["logps/rejected"]
    assert metrics["rewards/margins"] == pytest.approx(0.1 * (c - r), abs=1e-5)
    assert loss.item() > 0


def test_kto_matches_trl() -> None:
    beta, wd, wu = 0.2, 1.0, 1.5
    hf, ours = hf_twin(0)
    hf_ref, ours_ref = hf_twin(1)
    trainer = trl_kto(hf, hf_ref, beta, wd, wu)
    cfg = config(
        train_impl="kto", kto_beta=beta, kto_desirable_weight=wd, kto_undesirable_weight=wu
    )
    impl = KTO(cfg)
    impl.reference = ours_ref.eval()
    examples = _examples(4, seed=5, kind="kto")
    halves = [examples[:2], examples[2:]]
    collate = trainer.data_collator

    def trl_batch(items: list[dict], kl_items: list[dict]) -> dict:
        batch = collate(items)
        kl = collate(kl_items)  # TRL's KL batch: the other half's completions
        for k in ("input_ids", "attention_mask", "completion_mask"):
            batch[f"KL_{k}"] = kl[k]
        return batch

    # ours, per example (losses and rewards of the whole micro-batch)
    sample = _kto_sample(examples)
    b = sequence_batch(sample)
    with torch.no_grad():
        policy = sequence_logps(ours(b.tokens), b.targets, b.mask)
        ref = sequence_logps(ours_ref(b.tokens), b.targets, b.mask)
    desirable = sample["reward"].sum(-1) > 0
    out = kto_halves(policy, ref, desirable, cfg.posttrain)

    for i, ex in enumerate(examples):
        other = halves[1 - i // 2]
        with torch.no_grad():
            want = trainer.compute_loss(hf, trl_batch([ex], other)).item()
        m = trainer._metrics["train"]
        assert abs(out.losses[i].item() - want) < TOL, i
        key = "rewards/chosen" if ex["label"] else "rewards/rejected"
        assert abs(out.rewards[i].item() - m[key][-1]) < TOL, i

    # gradients: our mean over 4 = the mean of TRL's two half-batch losses (KL is detached)
    for i, half in enumerate(halves):
        (0.5 * trainer.compute_loss(hf, trl_batch(half, halves[1 - i]))).backward()
    got, metrics = impl.loss(ours, sample, forward)
    got.backward()
    assert abs(got.item() - out.losses.mean().item()) < TOL
    assert _grads_match(hf, ours) < TOL
    assert metrics["kl"] >= 0


def test_reward_model_matches_trl() -> None:
    hf, _ = hf_twin(0, cls_name="GPTNeoXForSequenceClassification")
    trainer = trl_reward(hf)
    hf.config.pad_token_id = 127  # an id no sample uses: HF scores the last non-pad token
    ours = RewardModel(MODEL)
    state = dict(hf.state_dict())
    score = state.pop("score.weight")
    state["lm_head.weight"] = torch.zeros_like(ours.lm_head.weight)
    load_by_name(ours, {**from_hf(state, MODEL), "score.weight": score})

    rng = random.Random(7)
    chats = [([rng.randrange(1, 99) for _ in range(rng.randrange(3, 12))]) for _ in range(6)]
    chosen, rejected = chats[:3], chats[3:]
    # TRL: the chat and one EOS, right-padded; chosen rows first
    rows = [[*c, EOS] for c in chosen + rejected]
    width = max(map(len, rows))
    inputs = {
        "input_ids": torch.tensor([r + [127] * (width - len(r)) for r in rows]),
        "attention_mask": torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows]),
    }
    want = trainer.compute_loss(hf, dict(inputs))
    want.backward()

    # ours: GPT-NeoX's --for-rm layout, tokens chat + [eos, eos], labels -100.. + [-100, eos]
    def doc(chat):
        return _padded([*chat, EOS, EOS], 0), _padded([-100] * (len(chat) + 1) + [EOS], -100)

    sample: dict[str, list] = {"pos": [], "pos_label": [], "neg": [], "neg_label": []}
    for side, group in (("pos", chosen), ("neg", rejected)):
        for chat in group:
            t, label = doc(chat)
            sample[side].append(t)
            sample[f"{side}_label"].append(label)
    impl = RewardModelling(config(train_impl="rm", dataset_impl="pairwise"))
    got, metrics = impl.loss(ours, {k: torch.stack(v) for k, v in sample.items()}, forward)
    got.backward()
    assert abs(got.item() - want.item()) < TOL
    m = trainer._metrics["train"]
    assert abs(metrics["accuracy"] - m["accuracy"][-1]) < TOL
    assert abs(metrics["margin"] - m["margin"][-1]) < TOL
    assert (ours.score.weight.grad - hf.score.weight.grad).abs().max().item() < TOL
    hf_grads = {n: p.grad for n, p in hf.named_parameters() if n != "score.weight"}
    hf_grads["lm_head.weight"] = torch.zeros_like(ours.lm_head.weight)  # unused by the RM
    expected = from_hf(hf_grads, MODEL)
    for name, p in ours.named_parameters():
        if name in expected and name != "lm_head.weight":
            assert (p.grad - expected[name]).abs().max().item() < TOL, name
