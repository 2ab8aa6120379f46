"""Hub repository names for an experiment: `sfm-<experiment>` and `neox-ckpt-<model>`.

The Hub allows 96 characters of `[A-Za-z0-9._-]` per repository name, no `--` or `..`, and no
`-`/`.` at either end. Rules, applied in order and recorded in the mapping:

1. A name that is already valid and fits is used unchanged.
2. Otherwise: every run of other characters becomes `-`; `--`/`..` runs collapse to one.
3. Too long: phrases in `PHRASES`, then whole words (split on `-`, `_`, `.`) in
   `ABBREVIATIONS` are shortened (case-insensitive).
4. Still too long: cut to fit.
5. Whenever rule 2, 3 or 4 changed the name, `-<6 hex of sha256(original)>` is appended, so two
   different originals never share a repository name (the suffix is part of the 96).

A shared mapping file (`--name-map`) records `short -> original` across experiments; a short
name already taken by another original is refused with both names.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from neox_ckpt.errors import ConversionError

MAX_NAME = 96
HASH_CHARS = 6
HF_PREFIX = "sfm-"
NEOX_PREFIX = "neox-ckpt-"

# word -> abbreviation, for names that do not fit (documented in the README)
ABBREVIATIONS: dict[str, str] = {
    "pretrain": "pt",
    "pretraining": "pt",
    "midtrain": "mt",
    "midtraining": "mt",
    "finetune": "ft",
    "finetuning": "ft",
    "instruct": "inst",
    "experiment": "exp",
    "checkpoint": "ckpt",
    "warmup": "wu",
    "cooldown": "cd",
    "batch": "bs",
    "sequence": "seq",
    "context": "ctx",
    "tokens": "tok",
    "billion": "b",
    "million": "m",
    "baseline": "base",
    "ablation": "abl",
    "english": "en",
    "multilingual": "ml",
    "version": "v",
}

# multi-word phrases (any of - _ . between the words), shortened before single words
PHRASES: dict[str, str] = {"learning-rate": "lr", "batch-size": "bs", "sequence-length": "seqlen"}

_VALID = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?")


def is_valid_name(name: str) -> bool:
    return (
        len(name) <= MAX_NAME
        and _VALID.fullmatch(name) is not None
        and "--" not in name
        and ".." not in name
    )


@dataclass
class ShortName:
    """One repository name and how it was derived from the original."""

    original: str
    name: str
    rules: list[str] = field(default_factory=list)


def _sanitize(text: str) -> str:
    s = re.sub(r"[^A-Za-z0-9._-]+", "-", text)
    s = re.sub(r"-{2,}", "-", s)
    s = re.sub(r"\.{2,}", ".", s)
    s = re.sub(r"[-.]*([-.])[-.]*", r"\1", s)  # mixed runs like "-." become one separator
    return s.strip("-.")


def _abbreviate(text: str) -> str:
    for phrase, short in PHRASES.items():
        words = phrase.split("-")
        text = re.sub(
            r"(?i)(?<![A-Za-z0-9])" + r"[-_.]".join(words) + r"(?![A-Za-z0-9])", short, text
        )
    parts = re.split(r"([-_.])", text)
    return "".join(ABBREVIATIONS.get(p.lower(), p) for p in parts)


def repo_name(prefix: str, original: str) -> ShortName:
    """`prefix + original` made a valid, unique Hub repository name (rules in the module doc)."""
    if not original:
        raise ConversionError("empty experiment/model name")
    full = prefix + original
    if is_valid_name(full):
        return ShortName(original, full, [])
    rules = []
    body = _sanitize(original)
    if body != original:
        rules.append("replaced characters the Hub does not allow")
    suffix = "-" + hashlib.sha256(original.encode("utf-8")).hexdigest()[:HASH_CHARS]
    room = MAX_NAME - len(prefix) - len(suffix)
    if len(body) > room:
        shorter = _abbreviate(body)
        if shorter != body:
            rules.append("abbreviated words")
            body = shorter
    if len(body) > room:
        body = body[:room].rstrip("-._")
        rules.append(f"cut to {room} characters")
    rules.append(f"appended {suffix} (sha256 of the original) for uniqueness")
    name = f"{prefix}{body}{suffix}" if body else f"{prefix.rstrip('-')}{suffix}"
    if not is_valid_name(name):  # only if the prefix itself is odd
        raise ConversionError(f"cannot make a valid Hub repository name from {original!r}")
    return ShortName(original, name, rules)


def check_and_record(path: Path, names: list[ShortName]) -> None:
    """Refuse a short name the shared mapping gives to another original; record the new ones."""
    from neox_ckpt.hub_state import atomic_write_json

    known: dict[str, str] = {}
    if path.is_file():
        try:
            known = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as e:
            raise ConversionError(f"--name-map {path}: not a JSON object ({e})") from None
        if not isinstance(known, dict):
            raise ConversionError(f"--name-map {path}: expected a JSON object short -> original")
    changed = False
    for n in names:
        have = known.get(n.name)
        if have is not None and have != n.original:
            raise ConversionError(
                f"--name-map {path}: repository name {n.name!r} is already used for {have!r}; "
                f"cannot also use it for {n.original!r}"
            )
        if have is None:
            known[n.name] = n.original
            changed = True
    if changed:
        atomic_write_json(path, dict(sorted(known.items())))


__all__ = ["ABBREVIATIONS", "MAX_NAME", "ShortName", "check_and_record", "repo_name"]
