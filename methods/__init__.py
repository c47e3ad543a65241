"""CIR methods, registered by name (:mod:`methods.registry`).

A method is one module of this package with a :class:`~methods.base.CIRMethod` subclass
decorated by ``@register_method("name")``, plus its base settings
``experiments/methods/<name>.yaml``; every module here is imported when the package is,
so nothing else needs an edit to add a method.
"""

from __future__ import annotations

import importlib
import pkgutil

from methods.registry import create_method, get_method_class, list_methods, register_method

_INFRASTRUCTURE = {"base", "registry"}

for _module in pkgutil.iter_modules(__path__):
    if _module.name not in _INFRASTRUCTURE:
        importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["create_method", "get_method_class", "list_methods", "register_method"]
