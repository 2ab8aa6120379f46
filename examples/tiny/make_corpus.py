"""Write the tiny example's corpus and train its tokenizer (run once; outputs are committed).

The text is generated from a small grammar of our own (no third-party text): short
stories about a harbour town, counting and arithmetic lines, and weather reports. It is
regular enough that a 2-layer model learns it visibly in a minute on a CPU.

    uv run python examples/tiny/make_corpus.py       # writes corpus.jsonl and tokenizer.json
"""

from __future__ import annotations

import json
import random
from pathlib import Path

HERE = Path(__file__).resolve().parent
NUMBERS = [
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
]
PEOPLE = [
    "the baker",
    "the fisher",
    "the old sailor",
    "the young clerk",
    "the miller",
    "the weaver",
    "the lamplighter",
    "the ferryman",
    "the schoolteacher",
    "the potter",
]
NAMES = ["Ada", "Bram", "Cora", "Dov", "Elin", "Finn", "Greta", "Hugo", "Ines", "Jonas"]
THINGS = [
    "a basket of apples",
    "a lantern",
    "a net",
    "a loaf of bread",
    "a copper kettle",
    "a bundle of letters",
    "a wooden boat",
    "a jar of honey",
    "a blue scarf",
    "a map",
]
PLACES = [
    "the harbour",
    "the market",
    "the lighthouse",
    "the mill",
    "the bridge",
    "the school",
    "the square",
    "the orchard",
    "the pier",
    "the chapel",
]
VERBS = ["carried", "found", "mended", "sold", "painted", "lost", "borrowed", "hid"]
TIMES = ["In the morning", "At noon", "In the evening", "Before dawn", "After the rain"]
WEATHER = ["clear", "windy", "foggy", "rainy", "calm", "stormy"]
FEELINGS = ["glad", "tired", "curious", "worried", "proud", "quiet"]


def story(rng: random.Random) -> str:
    name, who = rng.choice(NAMES), rng.choice(PEOPLE)
    lines = [f"{rng.choice(TIMES)}, {name} walked to {rng.choice(PLACES)}."]
    for _ in range(rng.randint(2, 5)):
        thing, place = rng.choice(THINGS), rng.choice(PLACES)
        lines.append(f"{name} met {who}, who {rng.choice(VERBS)} {thing} near {place}.")
        lines.append(
            f"{who.capitalize()} was {rng.choice(FEELINGS)}, and {name} was {rng.choice(FEELINGS)}."
        )
    lines.append(f"Then {name} went home to {rng.choice(PLACES)} and slept.")
    return " ".join(lines)


def arithmetic(rng: random.Random) -> str:
    lines = []
    for _ in range(rng.randint(3, 8)):
        a, b = rng.randint(0, 6), rng.randint(0, 6)
        lines.append(f"{NUMBERS[a]} plus {NUMBERS[b]} is {NUMBERS[a + b]}.")
    start = rng.randint(0, 5)
    lines.append("Counting: " + ", ".join(NUMBERS[start : start + rng.randint(3, 7)]) + ".")
    return " ".join(lines)


def weather(rng: random.Random) -> str:
    days = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
    first = rng.randint(0, 6)
    lines = ["Weather report for the harbour town."]
    for i in range(rng.randint(2, 5)):
        day = days[(first + i) % 7]
        lines.append(
            f"On {day} the sky is {rng.choice(WEATHER)} and the sea is {rng.choice(WEATHER)}."
        )
    return " ".join(lines)


def generate(n_docs: int = 800, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    kinds = (story, story, arithmetic, weather)
    return [rng.choice(kinds)(rng) for _ in range(n_docs)]


def train_tokenizer(texts: list[str], vocab_size: int = 1024) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<|endoftext|>", "<|padding|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    tok.save(str(HERE / "tokenizer.json"))


def main() -> None:
    texts = generate()
    with open(HERE / "corpus.jsonl", "w", encoding="utf-8") as f:
        for t in texts:
            f.write(json.dumps({"text": t}) + "\n")
    train_tokenizer(texts)


if __name__ == "__main__":
    main()
