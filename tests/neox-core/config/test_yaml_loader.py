"""GPT-NeoX YAML as found in the wild parses, with the line of every key."""

from __future__ import annotations

import pytest

from neox_core.config import ConfigError
from neox_core.config.yaml_loader import load_yaml_file


def test_json_style_with_comments_trailing_commas_and_python_literals(write) -> None:
    path = write(
        "neox.yml",
        """\
        # a GPT-NeoX config
        {
          "pipe-parallel-size": 1,   # comment after a value
          "lr": 6e-4,
          "min_lr": 6E-5,
          "eps": 1.0e-8,
          "no-weight-tying": True,
          "gpt_j_residual": False,
          "sparsity_config": None,
          "optimizer": {"type": "Adam", "params": {"betas": [0.9, 0.95,],},},
          "attention-config": [[["flash"], 12]],
        }
        """,
    )
    parsed = load_yaml_file(path)
    assert parsed.values == {
        "pipe-parallel-size": 1,
        "lr": 6e-4,
        "min_lr": 6e-5,
        "eps": 1e-8,
        "no-weight-tying": True,
        "gpt_j_residual": False,
        "sparsity_config": None,
        "optimizer": {"type": "Adam", "params": {"betas": [0.9, 0.95]}},
        "attention-config": [[["flash"], 12]],
    }
    assert parsed.lines[("pipe-parallel-size",)] == 3
    assert parsed.lines[("attention-config",)] == 11
    assert parsed.lines[("optimizer", "params", "betas")] == 10


def test_plain_yaml_style_also_parses(write) -> None:
    path = write("plain.yml", "num_layers: 2\noptimizer:\n  type: adam\n  params:\n    lr: 0.1\n")
    parsed = load_yaml_file(path)
    assert parsed.values["optimizer"]["params"]["lr"] == 0.1
    assert parsed.lines[("optimizer", "params", "lr")] == 5


def test_quoted_none_stays_a_string(write) -> None:
    path = write("q.yml", '{"wandb_group": "None"}')
    assert load_yaml_file(path).values["wandb_group"] == "None"


def test_duplicate_key_in_one_file_is_an_error_with_both_lines(write) -> None:
    path = write("dup.yml", '{\n  "lr": 1,\n  "seed": 2,\n  "lr": 3,\n}\n')
    with pytest.raises(ConfigError, match=r"dup\.yml:4: key 'lr' appears twice .*line 2"):
        load_yaml_file(path)


def test_invalid_yaml_names_file_and_line(write) -> None:
    path = write("bad.yml", '{\n  "a": 1,\n  "b": [1, 2,\n}\n')
    with pytest.raises(ConfigError, match=r"bad\.yml:\d+: invalid YAML"):
        load_yaml_file(path)


def test_top_level_must_be_a_mapping(write) -> None:
    path = write("list.yml", "- 1\n- 2\n")
    with pytest.raises(ConfigError, match=r"list\.yml:1: a config file must be a mapping"):
        load_yaml_file(path)


def test_missing_file_names_it(tmp_path) -> None:
    with pytest.raises(ConfigError, match=r"nope\.yml: cannot read"):
        load_yaml_file(tmp_path / "nope.yml")
