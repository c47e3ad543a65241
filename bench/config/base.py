"""What every spec model shares: strict validation, one error message format, YAML reading.

Specs are read with :class:`SpecLoader`: YAML 1.1 as PyYAML reads it, except that a key
given twice in one mapping is an error (naming the key and both lines) and ``1e-4`` is
the float YAML 1.2 makes of it (PyYAML would read a string). :func:`validate_strict`
validates with strict types: no ``true`` for a number, no ``1.5`` for an int, no string
(``'1e-4'``) for a number, in every nested block; an int is a float.
"""

from __future__ import annotations

import copy
import re
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic_core import PydanticCustomError

from bench.core.errors import CirbenchError, DataFormatError
from bench.core.reading import read_text

M = TypeVar("M", bound=BaseModel)

#: The synthetic benchmark's sizes, smallest first (their counts:
#: ``bench.synthetic.world.SIZES``; ``compact`` is the default profile's world). The
#: method base files' ``synthetic.sizes`` use the same names (``bench.config.bases``).
SyntheticSize = Literal["tiny", "compact", "small", "default"]
SYNTHETIC_SIZES: tuple[str, ...] = get_args(SyntheticSize)


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


class SpecLoader(yaml.SafeLoader):
    """The YAML loader of specs (see the module docstring)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:  # its own keys (a ``<<`` merge may be overridden)
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)  # type: ignore[no-untyped-call]
            line = key_node.start_mark.line + 1
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"key {key!r} given twice (lines {seen[key]} and {line}); "
                    "the first would be silently replaced",
                    key_node.start_mark,
                )
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


SpecLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def load_yaml_text(text: str) -> Any:
    """YAML text read with :class:`SpecLoader` (``yaml.YAMLError`` on a problem)."""
    return yaml.load(text, Loader=SpecLoader)


#: Parsed YAML by file text: a suite resolves the same method files for every point, and
#: parsing them again was most of a report's time.
_parsed: dict[str, Any] = {}


def read_yaml(path: Path) -> Any:
    """A YAML file's content (a fresh copy; the same text is parsed once), or a
    :class:`SpecError` naming the file."""
    try:
        text = read_text(path)
    except DataFormatError as exc:
        raise SpecError(str(exc)) from None
    if text not in _parsed:
        try:
            _parsed[text] = load_yaml_text(text)
        except yaml.YAMLError as exc:
            raise SpecError(f"{path}: malformed YAML: {exc}") from None
        except RecursionError:
            raise SpecError(f"{path}: YAML nested too deeply") from None
    return copy.deepcopy(_parsed[text])


def validate_strict(model: type[M], data: Any) -> M:
    """``model`` validated from ``data`` with strict numbers (see the module docstring):
    a ``bool`` or a string where the field takes numbers (and no string or bool) is an
    error, anywhere in nested blocks; ``pydantic.ValidationError`` on a problem."""
    errors: list[Any] = []
    _strict_numbers(model, data, (), errors)
    if errors:
        raise ValidationError.from_exception_data(model.__name__, errors)
    return model.model_validate(data)


def _members(annotation: Any) -> list[Any]:
    """The alternatives of a (possibly ``Optional`` / ``Annotated``) annotation."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _members(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        return [m for a in typing.get_args(annotation) for m in _members(a)]
    return [annotation]


def _check_value(annotation: Any, value: Any, loc: tuple[Any, ...], errors: list[Any]) -> None:
    members = _members(annotation)
    if any(m is Any for m in members):
        return
    numeric = any(m in (int, float) for m in members)
    textual = any(
        m is str
        or (typing.get_origin(m) is Literal and any(isinstance(a, str) for a in m.__args__))
        for m in members
    )
    takes_bool = any(m is bool for m in members)
    if numeric and (
        (isinstance(value, bool) and not takes_bool) or (isinstance(value, str) and not textual)
    ):
        kind = "a boolean" if isinstance(value, bool) else "a string"
        errors.append(
            {
                "type": PydanticCustomError("strict_number", f"expected a number, got {kind}"),
                "loc": loc,
                "input": value,
            }
        )
        return
    for member in members:
        origin = typing.get_origin(member)
        if isinstance(member, type) and issubclass(member, BaseModel):
            _strict_numbers(member, value, loc, errors)
        elif origin in (tuple, list) and isinstance(value, list | tuple):
            args = [a for a in typing.get_args(member) if a is not Ellipsis]
            for index, item in enumerate(value):
                if args:
                    _check_value(args[min(index, len(args) - 1)], item, (*loc, index), errors)
        elif origin is dict and isinstance(value, dict):
            item_type = typing.get_args(member)[1] if typing.get_args(member) else Any
            for key, item in value.items():
                _check_value(item_type, item, (*loc, key), errors)


def _strict_numbers(
    model: type[BaseModel], data: Any, loc: tuple[Any, ...], errors: list[Any]
) -> None:
    if not isinstance(data, dict):
        return
    for name, info in model.model_fields.items():
        key = info.alias or name
        if key in data:
            _check_value(info.annotation, data[key], (*loc, key), errors)
