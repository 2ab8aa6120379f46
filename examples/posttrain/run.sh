#!/usr/bin/env bash
# SFT of the tiny model on a small chat set, then DPO on a small preference set, then export
# to HF and load in transformers. CPU only; run from the repository root:
#   bash examples/posttrain/run.sh
set -euo pipefail
D=runs/posttrain/data
TOK=(--tokenizer-path examples/tiny/tokenizer.json --chat-template examples/posttrain/chat_template.jinja)
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}  # a 182K-parameter model: threads only contend

rm -rf runs/posttrain && mkdir -p "$D"
for split in "" _valid; do
  uv run neox-data tokenize --input "examples/posttrain/sft$split.jsonl" \
    --output-prefix "$D/sft$split" --mode chat "${TOK[@]}" > /dev/null
  uv run neox-data tokenize --input "examples/posttrain/dpo$split.jsonl" \
    --output-prefix "$D/dpo$split" --mode dpo "${TOK[@]}" > /dev/null
done

uv run neox-posttrain sft examples/posttrain/model.yml examples/posttrain/sft.yml
uv run neox-posttrain dpo examples/posttrain/model.yml examples/posttrain/dpo.yml
uv run neox-ckpt neox-to-hf --input-dir runs/posttrain/dpo --output-dir runs/posttrain/hf \
  --tokenizer examples/tiny/tokenizer.json
uv run python examples/posttrain/check_hf.py runs/posttrain/hf
