"""Combining spec fragments: deep merges, ``--set key.sub=value`` overrides, flattening."""

from __future__ import annotations

import copy
from typing import Any

import yaml

from bench.config.base import SpecError, load_yaml_text


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """``override`` merged into a copy of ``base``, recursively for nested mappings."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def apply_overrides(tree: dict[str, Any], overrides: list[str], source: str) -> dict[str, Any]:
    """Apply ``key.sub=value`` overrides (values parsed as YAML) to a nested dict copy."""
    tree = copy.deepcopy(tree)
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise SpecError(f"{source}: override {item!r} is not of the form key.sub=value")
        try:
            value = load_yaml_text(raw)
        except yaml.YAMLError as exc:
            raise SpecError(f"{source}: override {item!r}: cannot parse value: {exc}") from None
        node = tree
        parts = key.strip().split(".")
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise SpecError(f"{source}: override {item!r}: {part!r} is not a section")
            node = child
        node[parts[-1]] = value
    return tree


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested mapping as ``{dotted.key: value}`` (MLflow params)."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


def dotted(data: dict[str, Any], key: str) -> Any:
    """``data["a"]["b"]`` for ``"a.b"`` (None where absent)."""
    for part in key.split("."):
        if not isinstance(data, dict) or part not in data:
            return None
        data = data[part]
    return data
