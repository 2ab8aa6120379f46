"""Fuzzing `load_config` with broken versions of the shipped GPT-NeoX configs.

Users hand-edit these files; whatever they get wrong must come back as a ConfigError naming
the file, the line and the key (or load as a valid config), never as a traceback. 1,000 cases
from a fixed seed: key typos, wrong types, out-of-range values, missing keys, nested-block
damage and YAML syntax breakage, each applied to one file of a shipped config set.
"""

from __future__ import annotations

import json
import random
import re
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from neox_core.config import ConfigError, NeoxConfig, load_config
from neox_core.config.keys import normalise_key
from neox_core.config.yaml_loader import load_yaml_file

ROOT = Path(__file__).resolve().parents[3]
CONFIGS = ROOT / "examples" / "configs"
SETS = [
    [CONFIGS / "pythia" / "160M.yml", CONFIGS / "local_setup.yml"],
    [CONFIGS / "llama" / "7B.yml", CONFIGS / "llama" / "setup.yml"],
    [CONFIGS / "llama" / "setup.yml", CONFIGS / "llama" / "gqa-1B.yml"],
    [ROOT / "examples" / "tiny" / "config.yml"],
]
CASES = 1000
SEED = 20261204

# raw YAML text for a value: wrong types and out-of-range numbers
WRONG_VALUES = [
    '"abc"', '""', "[1, 2]", "[]", '{"a": 1}', "{}", "true", "false", "null", "1.5", "-3", "0",
    "-1", "100000000000000000000000000000", "9223372036854775808", "1e999", "-1e999", ".nan",
    ".inf", "-.inf", '"1e-4"', "[[1, 2], [3]]", '["x", 1]', "0.0000001", "1000000", "2.5e9",
]  # fmt: skip
SYNTAX_NOISE = ["{", "}", "[", "]", ":", ",", '"', "'", "\t", "&a", "*a", "!!int", "%", "@", "- "]


def _dump(values: dict[str, Any], raw: dict[str, str] | None = None) -> tuple[str, dict[str, int]]:
    """One key per line (JSON values, valid GPT-NeoX YAML); returns text and key -> line."""
    lines, at = ["{"], {}
    for key, value in values.items():
        text = (raw or {}).get(key, json.dumps(value))
        at[key] = len(lines) + 1
        lines.append(f"  {json.dumps(key)}: {text},")
    lines.append("}")
    return "\n".join(lines) + "\n", at


def _typo(rng: random.Random, key: str) -> str:
    i = rng.randrange(len(key))
    ops = [
        lambda: key[:i] + key[i + 1 :],
        lambda: key[:i] + key[i] + key[i:],
        lambda: key[:i] + rng.choice("abcdefghijklmnopqrstuvwxyz_") + key[i + 1 :],
        lambda: key[:i] + key[i + 1 : i + 2] + key[i : i + 1] + key[i + 2 :],
        lambda: key + rng.choice(["s", "_", "x", "-size"]),
    ]
    return rng.choice(ops)()


def _nested_leaf_paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    if isinstance(value, dict):
        out = []
        for k, v in value.items():
            out.append((*prefix, k))
            out.extend(_nested_leaf_paths(v, (*prefix, k)))
        return out
    return []


def _mutate(
    rng: random.Random, values: dict[str, Any], text: str
) -> tuple[str, str, tuple[str, ...]]:
    """(kind, new file text, keys of which the error must name one; empty: any)."""
    kind = rng.choice(["typo", "wrong_type", "out_of_range", "missing", "nested", "syntax"])
    keys = list(values)
    key = rng.choice(keys)
    if kind == "typo":
        new = _typo(rng, key)
        if new in values or not new:
            return kind, _dump(values)[0], ()
        renamed = {(new if k == key else k): v for k, v in values.items()}
        return kind, _dump(renamed)[0], (new,)
    if kind == "wrong_type":
        return kind, _dump(values, {key: rng.choice(WRONG_VALUES)})[0], (key,)
    if kind == "out_of_range":
        numeric = [k for k, v in values.items() if isinstance(v, (int, float))]
        if numeric:
            key = rng.choice(numeric)
        v = values[key] if isinstance(values[key], (int, float)) else 1
        new_value = rng.choice([-abs(v) - 1, 0, -1, abs(v) * 1000 + 7, 1e30, 0.5, -0.5, 2])
        return kind, _dump(values, {key: json.dumps(new_value)})[0], (key,)
    if kind == "missing":
        return kind, _dump({k: v for k, v in values.items() if k != key})[0], ()
    if kind == "nested":
        blocks = [k for k, v in values.items() if isinstance(v, dict) and v]
        if not blocks:
            return kind, _dump(values, {key: rng.choice(WRONG_VALUES)})[0], (key,)
        key = rng.choice(blocks)
        block = json.loads(json.dumps(values[key]))
        path = rng.choice(_nested_leaf_paths(block))
        parent = block
        for p in path[:-1]:
            parent = parent[p]
        how = rng.choice(["value", "drop", "typo"])
        if how == "value":
            parent[path[-1]] = json.loads(
                rng.choice(
                    [
                        v
                        for v in WRONG_VALUES
                        if "e999" not in v and "nan" not in v and "inf" not in v
                    ]
                )
            )
        elif how == "drop":
            del parent[path[-1]]
        else:
            parent[_typo(rng, str(path[-1]))] = parent.pop(path[-1])
        return kind, _dump(values, {key: json.dumps(block)})[0], (key, str(path[-1]))
    # syntax: damage the file as written (comments, Python-style literals and all)
    lines = text.splitlines(keepends=True)
    i = rng.randrange(len(lines))
    line = lines[i]
    j = rng.randrange(len(line) + 1)
    op = rng.choice(["insert", "delete", "truncate", "duplicate", "indent"])
    if op == "insert":
        lines[i] = line[:j] + rng.choice(SYNTAX_NOISE) + line[j:]
    elif op == "delete":
        lines[i] = line[:j] + line[j + 1 :]
    elif op == "truncate":
        return kind, "".join(lines[:i]) + line[:j], ()
    elif op == "duplicate":
        lines.insert(i, line)
    else:
        lines[i] = "   " + line
    return kind, "".join(lines), ()


def _names_key(message: str, key: str) -> bool:
    low = message.lower()
    return (
        key.lower() in low
        or normalise_key(key) in low
        or normalise_key(key) in (normalise_key(w) for w in re.findall(r"[\w.-]+", message))
    )


@pytest.mark.slow
def test_mutated_shipped_configs_give_config_errors_or_load(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(ROOT)  # the shipped configs' paths are relative to the repository root
    rng = random.Random(SEED)
    parsed = {p: load_yaml_file(p).values for s in SETS for p in s}
    texts = {p: p.read_text(encoding="utf-8") for s in SETS for p in s}
    for files in SETS:  # the unmutated dumps are valid
        for f in files:
            out = tmp_path / f"base-{f.parent.name}-{f.name}"
            out.write_text(_dump(parsed[f])[0], encoding="utf-8")
            load_config([out if g == f else g for g in files])
    stats: Counter[str] = Counter()
    bad: list[str] = []
    for case in range(CASES):
        files = rng.choice(SETS)
        target = rng.choice(files)
        kind, text, keys = _mutate(rng, parsed[target], texts[target])
        path = tmp_path / f"case{case}-{target.name}"
        path.write_text(text, encoding="utf-8")
        stats[kind] += 1
        try:
            cfg = load_config([path if f == target else f for f in files])
        except ConfigError as exc:
            stats["config_error"] += 1
            msg = str(exc)
            # a key missing from every file has no line: then the files must be named
            where = re.search(rf"{re.escape(str(path))}:\d+", msg) or (
                kind in ("missing", "syntax") and any(str(f) in msg for f in (path, *files))
            )
            if not where:
                bad.append(f"case {case} ({kind}): no file:line for {path.name}: {msg}")
            elif keys and not any(_names_key(msg, k) for k in keys):
                bad.append(f"case {case} ({kind}): none of {keys} named: {msg}")
            continue
        except Exception as exc:
            stats["traceback"] += 1
            bad.append(f"case {case} ({kind} {keys}): {type(exc).__name__}: {exc}")
            continue
        assert isinstance(cfg, NeoxConfig)
        stats["valid"] += 1
    print(f"config fuzz: {CASES} cases, {dict(stats)}")
    assert not bad, "\n".join(bad[:40]) + f"\n({len(bad)} in all)"
