"""The method registry: ``@register_method("name")`` on a :class:`~methods.base.CIRMethod`
subclass, ``create_method(name, backbone, params)`` the one door in, ``list_methods()``
what is registered (the ``methods`` package imports every method module on import)."""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from typing import Any

from pydantic import ValidationError

from bench.backbones import Backbone
from bench.config import validation_problems
from bench.core.errors import CirbenchError
from methods.base import CIRMethod

_REGISTRY: dict[str, type[CIRMethod]] = {}


class UnknownMethodError(CirbenchError, KeyError):
    def __str__(self) -> str:  # KeyError quotes its message otherwise
        return str(self.args[0])


def register_method(name: str) -> Callable[[type[CIRMethod]], type[CIRMethod]]:
    """Class decorator: register a :class:`CIRMethod` subclass under ``name``."""

    def decorate(cls: type[CIRMethod]) -> type[CIRMethod]:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"method {name!r} is already registered by {_REGISTRY[name]}")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return decorate


def list_methods(pattern: str = "*") -> list[str]:
    """Registered method names matching a shell-style wildcard."""
    return sorted(n for n in _REGISTRY if fnmatch.fnmatch(n, pattern))


def get_method_class(name: str) -> type[CIRMethod]:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownMethodError(
            f"unknown method {name!r}; registered: {', '.join(list_methods())}"
        ) from None


def display_name(name: str) -> str:
    """The name reports, plots and tables show for method ``name``: its ``paper_name``
    (``blip4cir_bi`` -> ``BLIP4CIR+Bi``), else the registry name; the one table of them."""
    cls = _REGISTRY.get(name)
    return (cls.paper_name if cls is not None else "") or name


def create_method(name: str, backbone: Backbone, params: dict[str, Any] | None = None) -> CIRMethod:
    """Build method ``name`` on ``backbone`` with validated hyperparameters."""
    cls = get_method_class(name)
    try:
        validated = cls.Params.model_validate(params or {})
    except ValidationError as exc:
        problems = "; ".join(validation_problems(exc, "method.params"))
        raise CirbenchError(f"invalid hyperparameters for {name!r}: {problems}") from None
    return cls(backbone, validated)
