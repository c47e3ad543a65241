"""What every spec model shares: strict validation, one error message format, YAML reading."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from bench.core.errors import CirbenchError


class SpecError(CirbenchError, ValueError):
    """A spec (experiment, suite, profile, method base) is invalid; the message names the
    file and the dotted key."""


class Strict(BaseModel):
    """A frozen model that rejects unknown keys (every spec block derives from it)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def validation_problems(exc: ValidationError, prefix: str = "") -> list[str]:
    """One ``dotted.key: message`` line per problem of a pydantic error (``unknown key`` for
    extra fields); ``prefix`` is prepended to every key (e.g. ``method.params``)."""
    lines = []
    for err in exc.errors():
        key = ".".join(str(p) for p in (*([prefix] if prefix else []), *err["loc"])) or "<root>"
        message = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
        lines.append(f"{key}: {message}")
    return lines


def read_yaml(path: Path) -> Any:
    """A YAML file's content, or a :class:`SpecError` naming the file."""
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SpecError(f"{path}: file not found") from None
    except yaml.YAMLError as exc:
        raise SpecError(f"{path}: malformed YAML: {exc}") from None
