"""Read GPT-NeoX YAML files as written in the wild, remembering the line of every key.

GPT-NeoX configs are JSON-like YAML: braces, quoted keys with dashes, `# comments`, trailing
commas, Python-style `True`/`False`/`None`, and floats such as `6e-4` that YAML 1.1 reads as
strings. PyYAML copes with braces, comments and trailing commas; this loader adds `None` as null,
exponent floats without a dot, duplicate-key detection and line numbers.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from neox_core.config.errors import ConfigError


class _NeoxYamlLoader(yaml.SafeLoader):
    """SafeLoader plus the scalars GPT-NeoX files use."""


# `6e-4`, `1E5`: YAML 1.1 wants a dot in a float; GPT-NeoX users do not write one.
_FLOAT_NO_DOT = re.compile(r"^[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+$")
_NoneWord = re.compile(r"^None$")


def _construct_float_no_dot(loader: yaml.SafeLoader, node: yaml.Node) -> float:
    return float(loader.construct_scalar(node).replace("_", ""))


_NeoxYamlLoader.add_implicit_resolver("tag:neox:float", _FLOAT_NO_DOT, list("-+0123456789"))
_NeoxYamlLoader.add_constructor("tag:neox:float", _construct_float_no_dot)
_NeoxYamlLoader.add_implicit_resolver("tag:yaml.org,2002:null", _NoneWord, ["N"])


@dataclass
class YamlFile:
    """One parsed config file: its top-level values and the line of every key path."""

    path: Path
    values: dict[str, Any]
    # key path (top-level key, nested key, ...) as written -> 1-based line number
    lines: dict[tuple[str, ...], int]


def _construct(
    loader: _NeoxYamlLoader, node: yaml.Node, path: Path, prefix: tuple[str, ...]
) -> Any:
    """A scalar's value; an explicit tag that does not fit (`!!int save`) names its line."""
    try:
        return loader.construct_object(node, deep=True)
    except (ValueError, TypeError, OverflowError, AttributeError) as exc:
        raise ConfigError(
            f"{path}:{node.start_mark.line + 1}: {'.'.join(map(str, prefix)) or 'key'}: "
            f"invalid value {node.value!r} for tag {node.tag} ({exc})"
        ) from exc


def _walk(
    loader: _NeoxYamlLoader,
    node: yaml.Node,
    prefix: tuple[str, ...],
    lines: dict[tuple[str, ...], int],
    path: Path,
) -> Any:
    if isinstance(node, yaml.MappingNode):
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = _construct(loader, key_node, path, (*prefix, "key"))
            line = key_node.start_mark.line + 1
            if not isinstance(key, str):
                raise ConfigError(f"{path}:{line}: key {key!r} is not a string")
            if key in out:
                first = lines.get((*prefix, key), "?")
                raise ConfigError(
                    f"{path}:{line}: key {key!r} appears twice in this file (first at line {first})"
                )
            lines[(*prefix, key)] = line
            out[key] = _walk(loader, value_node, (*prefix, key), lines, path)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_walk(loader, item, prefix, lines, path) for item in node.value]
    return _construct(loader, node, path, prefix)


def load_yaml_file(path: str | Path) -> YamlFile:
    """Parse one GPT-NeoX config file; errors carry the file name and line."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file: {exc.strerror or exc}") from exc
    loader = _NeoxYamlLoader(text)
    try:
        node = loader.get_single_node()
        lines: dict[tuple[str, ...], int] = {}
        if node is None:
            return YamlFile(path=path, values={}, lines={})
        if not isinstance(node, yaml.MappingNode):
            raise ConfigError(
                f"{path}:{node.start_mark.line + 1}: a config file must be a mapping of keys"
            )
        values = _walk(loader, node, (), lines, path)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise ConfigError(f"{where}: invalid YAML: {exc.problem or exc}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML: {exc}") from exc
    finally:
        loader.dispose()
    return YamlFile(path=path, values=values, lines=lines)
