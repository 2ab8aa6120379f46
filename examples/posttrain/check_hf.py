"""Load the exported DPO model in transformers and compare it with neox on preference pairs.

Prints the HF model's sequence log-probabilities of a few chosen/rejected answers and the
largest difference from neox's own model on the same tokens (it should be ~1e-6 in fp32).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

HERE = Path(__file__).resolve().parent


def main(hf_dir: str) -> None:
    from neox_core.checkpoint import load_checkpoint
    from neox_core.config import load_config
    from neox_core.models import build_model

    hf = AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32).eval()
    tok = PreTrainedTokenizerFast(tokenizer_file=str(Path(hf_dir) / "tokenizer.json"))
    cfg = load_config([HERE / "model.yml", HERE / "dpo.yml"])
    ours = build_model(cfg.model, seed=None)
    load_checkpoint("runs/posttrain/dpo", model=ours, weights_only=True)
    ours.eval()
    template = (HERE / "chat_template.jinja").read_text()
    tok.chat_template = template
    pairs = [json.loads(x) for x in (HERE / "dpo_valid.jsonl").read_text().splitlines()[:8]]
    worst, wins = 0.0, 0
    for p in pairs:
        scores = []
        for answer in (p["chosen"], p["rejected"]):
            prompt = tok.apply_chat_template(
                [{"role": "user", "content": p["prompt"]}],
                tokenize=False,
                add_generation_prompt=True,
            )
            full = prompt + answer + "\n"
            ids = torch.tensor([tok(full)["input_ids"]])
            n_prompt = len(tok(prompt)["input_ids"])
            with torch.no_grad():
                logits = hf(ids).logits
                worst = max(worst, (logits - ours(ids)[..., : logits.shape[-1]]).abs().max().item())
            logps = torch.log_softmax(logits[0, :-1], -1).gather(-1, ids[0, 1:, None])[:, 0]
            scores.append(logps[n_prompt - 1 :].sum().item())
        wins += scores[0] > scores[1]
        print(f"{p['prompt']!r}: chosen {scores[0]:.2f}, rejected {scores[1]:.2f}")
    print(
        f"transformers loaded {hf_dir}: prefers the chosen answer in {wins}/{len(pairs)} pairs; "
        f"max |logit difference| vs neox {worst:.2e}"
    )


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "runs/posttrain/hf")
