"""The GPT-NeoX key table is consistent, documented, and behaves as it says."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest

from neox_core.config import ConfigError, load_config
from neox_core.config.keys import DIRECT, IGNORED, SPECIAL, UNSUPPORTED, all_known_keys

ROOT = Path(__file__).resolve().parents[3]


def test_tables_do_not_overlap() -> None:
    tables = [set(DIRECT), set(SPECIAL), set(IGNORED), set(UNSUPPORTED)]
    for a, b in itertools.combinations(tables, 2):
        assert not a & b, a & b


def test_every_key_is_documented() -> None:
    doc = (ROOT / "docs" / "config.md").read_text(encoding="utf-8")
    missing = [k for k in all_known_keys() if f"`{k}`" not in doc]
    assert not missing, f"docs/config.md does not list {missing}"


def test_every_ignored_key_is_accepted_and_listed(tiny, write) -> None:
    extra = write("ignored.yml", json.dumps(dict.fromkeys(IGNORED, True)))
    cfg = load_config([tiny, extra])
    assert set(IGNORED) <= set(cfg.ignored)


def test_unsupported_keys_accept_only_their_harmless_values(tiny, write) -> None:
    harmless = {key: values[0] for key, (values, _) in UNSUPPORTED.items()}
    cfg = load_config([tiny, write("harmless.yml", json.dumps(harmless))])
    assert set(UNSUPPORTED) <= set(cfg.ignored)
    for key, (values, _) in UNSUPPORTED.items():
        odd = "something-else" if values[0] is not None else 12345
        bad = write("bad.yml", json.dumps({key: odd}))
        with pytest.raises(ConfigError, match="not yet supported"):
            load_config([tiny, bad])
