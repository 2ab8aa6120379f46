"""Ten DPO steps in TRL and in neox from the same model, data and optimizer settings give the
same losses within 1e-4.

TRL: `DPOTrainer.train()` (AdamW, constant LR, gradient clipping 1.0) on a 4-pair dataset it
tokenizes itself, one batch of all 4 pairs per step. neox: neox-core's `train_step` with the
neox-posttrain DPO plug-in, neox's AdamW and constant schedule, on GPT-NeoX-layout samples of
the very token ids TRL produced.
"""

from __future__ import annotations

import copy
import dataclasses
import tempfile

import numpy as np
import pytest
import torch
from twins import MODEL, config, tokenizer

from neox_core.models import build_model
from neox_core.models.hf_names import hf_config_kwargs, load_hf_state_dict
from neox_core.training.optimizer import build_optimizer
from neox_core.training.schedules import build_schedule
from neox_core.training.step import StepSettings, train_step
from neox_posttrain.impls import DPO

transformers = pytest.importorskip("transformers")
trl = pytest.importorskip("trl")

STEPS, LR, BETA, SEQ = 10, 1e-3, 0.1, 32
PAIRS = [
    ("the harbour town", " is calm and clear.", " is rainy."),
    ("Elin walked to", " the chapel.", " the sea and the sea."),
    ("On Monday the sky", " is clear.", " sailor lantern."),
    ("two plus two is", " four.", " seven and nine."),
]


@pytest.mark.slow
def test_ten_dpo_steps_match_trl() -> None:
    from datasets import Dataset

    tok = tokenizer()
    model_cfg = dataclasses.replace(MODEL, vocab_size=len(tok), padded_vocab_size=640)
    hf_config = transformers.GPTNeoXConfig(**hf_config_kwargs(model_cfg))
    torch.manual_seed(0)
    hf = transformers.GPTNeoXForCausalLM(hf_config)
    ours = build_model(model_cfg, seed=None)
    load_hf_state_dict(ours, hf.state_dict())
    ref_hf, ref_ours = copy.deepcopy(hf).eval(), copy.deepcopy(ours).eval()

    losses_trl: list[float] = []

    class Recording(trl.DPOTrainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            loss = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            if self.model.training:
                losses_trl.append(float(loss.detach()))
            return loss

    ds = Dataset.from_list([{"prompt": p, "chosen": c, "rejected": r} for p, c, r in PAIRS])
    args = trl.DPOConfig(
        output_dir=tempfile.mkdtemp(),
        report_to=[],
        beta=BETA,
        learning_rate=LR,
        lr_scheduler_type="constant",
        weight_decay=0.0,
        adam_beta1=0.9,
        adam_beta2=0.999,
        adam_epsilon=1e-8,
        max_grad_norm=1.0,
        per_device_train_batch_size=len(PAIRS),
        max_steps=STEPS,
        use_cpu=True,
        bf16=False,
        save_strategy="no",
        seed=0,
    )
    trainer = Recording(
        model=hf, ref_model=ref_hf, args=args, train_dataset=ds, processing_class=tok
    )
    tokenized = [trainer.train_dataset[i] for i in range(len(PAIRS))]  # what TRL trains on
    trainer.train()

    # neox: the same ids in GPT-NeoX's layout (labels copy the completion, -100 elsewhere)
    def doc(prompt: list[int], answer: list[int]) -> tuple[np.ndarray, np.ndarray]:
        pad = SEQ + 1 - len(prompt) - len(answer)
        tokens = np.array(prompt + answer + [0] * pad)
        labels = np.array([-100] * len(prompt) + answer + [-100] * pad)
        return tokens, labels

    sample: dict[str, list] = {"pos": [], "pos_label": [], "neg": [], "neg_label": []}
    for ex in tokenized:
        for side, key in (("pos", "chosen_ids"), ("neg", "rejected_ids")):
            t, lab = doc(ex["prompt_ids"], ex[key])
            sample[side].append(t)
            sample[f"{side}_label"].append(lab)
    batch = {k: torch.from_numpy(np.stack(v)) for k, v in sample.items()}

    cfg = config(train_impl="dpo", dataset_impl="pairwise", dpo_beta=BETA)
    impl = DPO(cfg)
    impl.reference = ref_ours
    opt = build_optimizer(ours, type="adamw", lr=LR, betas=(0.9, 0.999), eps=1e-8, weight_decay=0)
    sched = build_schedule(
        lr=LR,
        min_lr=0.0,
        warmup=0.0,
        lr_decay_iters=STEPS,
        train_iters=STEPS,
        decay_style="constant",
    )
    sched.apply(opt)
    settings = StepSettings("fp32", 1, 1.0, "stop", torch.device("cpu"), impl=impl)
    data = iter(lambda: batch, None)
    losses_neox = [
        train_step(ours, opt, sched, None, data, settings, i + 1).loss for i in range(STEPS)
    ]

    assert len(losses_trl) == STEPS
    diffs = [abs(a - b) for a, b in zip(losses_neox, losses_trl, strict=True)]
    print("TRL ", [f"{x:.6f}" for x in losses_trl])
    print("neox", [f"{x:.6f}" for x in losses_neox])
    print(f"max |difference| over {STEPS} steps: {max(diffs):.2e}")
    assert losses_trl[-1] < losses_trl[0]  # it trains
    assert max(diffs) < 1e-4
