"""`precision: fp8` (neox, beyond GPT-NeoX): bf16 plus float8 decoder linears, and its refusals."""

from __future__ import annotations

import pytest

from neox_core.config import ConfigError, load_config


def test_fp8_is_bf16_with_the_fp8_linear_flag(tiny, write) -> None:
    fp8 = write("fp8.yml", '{\n  "precision": "fp8",\n}\n')
    cfg = load_config([tiny, fp8])
    p = cfg.precision
    assert p.dtype == "bf16" and p.fp8_linear and p.fp32_master_weights
    assert cfg.sources["precision.fp8_linear"] == f"{fp8}:2"
    assert cfg.sources["precision.dtype"] == f"{fp8}:2"
    assert not load_config([tiny]).precision.fp8_linear
    bf16 = write("bf16.yml", '{"precision": "bfloat16"}')
    assert not load_config([tiny, bf16]).precision.fp8_linear


def test_fp8_agrees_with_a_bf16_block_and_as_an_override(tiny, write) -> None:
    both = write("both.yml", '{"precision": "fp8", "bf16": {"enabled": true}}')
    cfg = load_config([tiny, both])
    assert cfg.precision.dtype == "bf16" and cfg.precision.fp8_linear
    cfg = load_config([tiny], {"precision": "fp8"})
    assert cfg.precision.dtype == "bf16" and cfg.precision.fp8_linear


def test_fp8_with_fp16_is_a_conflict_naming_both_keys(tiny, write) -> None:
    clash = write("clash.yml", '{\n  "precision": "fp8",\n  "fp16": {"enabled": true},\n}\n')
    with pytest.raises(ConfigError) as err:
        load_config([tiny, clash])
    msg = str(err.value)
    assert "conflicting precision settings" in msg
    assert f"precision -> fp8 ({clash}:2)" in msg and "fp16.enabled -> fp16" in msg


def test_fp8_with_fp16_dtype_override_is_refused(tiny, write) -> None:
    fp8 = write("fp8.yml", '{"precision": "fp8"}')
    with pytest.raises(ConfigError, match=r"fp8\.yml:1: precision = fp8: .*not fp16"):
        load_config([tiny, fp8], {"precision.dtype": "fp16"})


@pytest.mark.parametrize(
    ("key", "field"),
    [("model_parallel_size", "model_parallel_size"), ("pipe_parallel_size", "pipe_parallel_size")],
)
def test_fp8_with_tensor_or_pipeline_parallelism_is_refused(tiny, write, key, field) -> None:
    bad = write("bad.yml", f'{{\n  "precision": "fp8",\n  "{key}": 2,\n}}\n')
    with pytest.raises(ConfigError) as err:
        load_config([tiny, bad])
    msg = str(err.value)
    assert msg.startswith(f"{bad}:2: precision = fp8: not yet supported with {bad}:3: {field} = 2")
    assert "precision: bf16" in msg


def test_unknown_precision_lists_fp8(tiny, write) -> None:
    bad = write("bad.yml", '{"precision": "fp4"}')
    with pytest.raises(ConfigError, match="expected one of fp16, bfloat16, fp32, fp8"):
        load_config([tiny, bad])
