"""Hub repository names: valid, within 96 characters, unchanged when possible, unique."""

from __future__ import annotations

import json

import pytest

from neox_ckpt.errors import ConversionError
from neox_ckpt.hub_naming import MAX_NAME, check_and_record, is_valid_name, repo_name


def test_valid_short_name_is_unchanged() -> None:
    n = repo_name("sfm-", "pythia-1b_dedup.v2")
    assert n.name == "sfm-pythia-1b_dedup.v2" and n.rules == []


def test_long_name_is_abbreviated_cut_and_hashed() -> None:
    original = "pretrain 7B learning-rate sweep " + "with-extra-long-cooldown-" * 6
    n = repo_name("neox-ckpt-", original)
    assert is_valid_name(n.name) and len(n.name) <= MAX_NAME
    assert n.name.startswith("neox-ckpt-pt-7B-lr-sweep-with-extra-long-cd-")
    assert any("cut" in r for r in n.rules) and any("abbreviated" in r for r in n.rules)
    assert repo_name("neox-ckpt-", original).name == n.name  # deterministic


@pytest.mark.parametrize("original", ["a b", "a/b", "a--b", "-a-", "ünïcode", "x..y"])
def test_invalid_characters_become_valid_names(original) -> None:
    assert is_valid_name(repo_name("sfm-", original).name)


def test_names_differing_only_in_dropped_characters_stay_distinct() -> None:
    long = "x" * 120
    assert repo_name("sfm-", "a b").name != repo_name("sfm-", "a_b ").name
    assert repo_name("sfm-", long + "1").name != repo_name("sfm-", long + "2").name


def test_name_map_records_and_refuses_clashes(tmp_path) -> None:
    path = tmp_path / "names.json"
    a = repo_name("sfm-", "run a")
    check_and_record(path, [a])
    check_and_record(path, [a])  # the same original again is fine
    assert json.loads(path.read_text()) == {a.name: "run a"}
    clash = type(a)("run b", a.name, [])
    with pytest.raises(ConversionError, match="already used for 'run a'"):
        check_and_record(path, [clash])
