"""Writes the example's chat and preference sets (our own text, generated from a seed).

sft.jsonl / sft_valid.jsonl: a user asks an arithmetic or harbour question, the assistant
answers correctly. dpo.jsonl / dpo_valid.jsonl: the same kind of prompt with a correct
(chosen) and a wrong (rejected) answer. Run from the repository root:

    uv run python examples/posttrain/make_data.py
"""

from __future__ import annotations

import json
import random
from pathlib import Path

HERE = Path(__file__).resolve().parent
NAMES = ["Elin", "the old sailor", "the baker", "Tomas", "the harbour master"]
PLACES = ["the chapel", "the school", "the pier", "the market", "the lighthouse"]
WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"]


def arithmetic(rng: random.Random) -> tuple[str, str, str]:
    a, b = rng.randrange(0, 6), rng.randrange(0, 5)
    wrong = rng.choice([x for x in range(0, 11) if x != a + b])
    q = f"What is {WORDS[a]} plus {WORDS[b]}?"
    return (
        q,
        f"{WORDS[a]} plus {WORDS[b]} is {WORDS[a + b]}.",
        f"{WORDS[a]} plus {WORDS[b]} is {WORDS[wrong]}.",
    )


def harbour(rng: random.Random) -> tuple[str, str, str]:
    name, place = rng.choice(NAMES), rng.choice(PLACES)
    other = rng.choice([p for p in PLACES if p != place])
    q = f"{name} walked to {place}. Where did {name} walk?"
    return q, f"{name} walked to {place}.", f"{name} walked to {other}."


def rows(n: int, seed: int) -> list[tuple[str, str, str]]:
    rng = random.Random(seed)
    return [(arithmetic if rng.random() < 0.6 else harbour)(rng) for _ in range(n)]


def write(name: str, records: list[dict]) -> None:
    with open(HERE / name, "w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")


def main() -> None:
    for split, n, seed in (("", 600, 1), ("_valid", 64, 2)):
        sft = [
            {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}
            for q, a, _ in rows(n, seed)
        ]
        write(f"sft{split}.jsonl", sft)
        dpo = [{"prompt": q, "chosen": a, "rejected": w} for q, a, w in rows(n, seed + 10)]
        write(f"dpo{split}.jsonl", dpo)


if __name__ == "__main__":
    main()
