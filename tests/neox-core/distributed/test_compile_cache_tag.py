"""torch.compile's caches are keyed on neox's custom-op sources (`tag_compile_caches`).

Inductor keys a cached graph on the traced code, not on the fake kernels of the custom ops it
calls; without the tag, a graph cached before a fake kernel changed keeps the old promise.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from neox_core.distributed import compile as neox_compile

SRC = [Path(__file__).parents[3] / "packages" / p / "src" for p in ("neox-core", "neox-kernels")]


def test_every_module_that_registers_custom_ops_is_in_the_digest() -> None:
    registering = {
        path.resolve()
        for root in SRC
        for path in root.rglob("*.py")
        if "register_fake(" in path.read_text() or "custom_op(" in path.read_text()
    }
    assert registering, "no custom op found: the scan is wrong"
    assert registering <= {p.resolve() for p in neox_compile.custom_op_sources()}


def test_tag_follows_the_op_sources_and_keeps_the_users_tag(monkeypatch, tmp_path) -> None:
    op = tmp_path / "ops.py"
    op.write_text("fake = 'contiguous'\n")
    monkeypatch.setattr(neox_compile, "custom_op_sources", lambda: [op])
    # the config's own patch, which restores the value (monkeypatch would delete the key)
    with torch.compiler.config.patch(cache_key_tag="users-tag"):
        first = neox_compile.tag_compile_caches()
        assert first.startswith("users-tag,neox-ops-")
        assert neox_compile.tag_compile_caches() == first  # idempotent: one neox entry
        op.write_text("fake = 'like k'\n")
        second = neox_compile.tag_compile_caches()
        assert second.startswith("users-tag,neox-ops-") and second.count("neox-ops-") == 1
        assert second != first
    assert torch.compiler.config.cache_key_tag != second


def test_compiling_the_layers_tags_the_caches() -> None:
    model = torch.nn.Module()
    model.layers = torch.nn.ModuleList([torch.nn.Linear(4, 4)])
    digest = neox_compile.sources_digest(neox_compile.custom_op_sources())
    with torch.compiler.config.patch(cache_key_tag=""):
        neox_compile.apply_compile(model, backend="eager")
        assert torch.compiler.config.cache_key_tag == f"neox-ops-{digest}"


_COMPILE_ONCE = """
import sys
from pathlib import Path

import torch
from torch._dynamo.utils import counters

from neox_core.distributed import compile as neox_compile

neox_compile.custom_op_sources = lambda: [Path(sys.argv[1])]
neox_compile.tag_compile_caches()
torch.compile(lambda x: (x.sin() + 1).cos())(torch.randn(8))
print("hit" if counters["inductor"]["fxgraph_cache_hit"] else "miss")
"""


@pytest.mark.slow
def test_a_changed_op_source_misses_inductors_cache(tmp_path) -> None:
    """Real inductor caches (on disk, one process per compile, as two runs of neox-train)."""
    op = tmp_path / "ops.py"
    script = tmp_path / "compile_once.py"
    script.write_text(textwrap.dedent(_COMPILE_ONCE))
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "cache")}
    env.pop("TORCH_COMPILE_CACHE_KEY_TAG", None)

    def compile_once() -> str:
        run = subprocess.run(
            [sys.executable, str(script), str(op)], env=env, capture_output=True, text=True
        )
        assert run.returncode == 0, run.stderr[-2000:]
        return run.stdout.split()[-1]

    op.write_text("fake = 'contiguous'\n")
    assert compile_once() == "miss"
    assert compile_once() == "hit"  # the cache works across processes
    op.write_text("fake = 'like k'\n")
    assert compile_once() == "miss"
