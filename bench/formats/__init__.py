"""Benchmark formats: one :class:`~bench.formats.base.DatasetFormat` object each (readers of
the official layouts, texts, metric dispatch, report columns, generated-set layout, pool
rule, statistics), found with :func:`~bench.formats.base.get_format`.

A format is one module of this package with a class decorated by ``@register_format``
(plus its metrics in :mod:`bench.metrics` and, optionally, its synthetic planner); every
module here is imported with the package, so nothing else needs an edit to add one.
"""

from __future__ import annotations

import importlib
import pkgutil

from bench.formats.base import (
    DatasetFormat,
    EvalOptions,
    UnknownFormatError,
    format_names,
    get_format,
    register_format,
)

#: Modules of this package that are not formats.
_INFRASTRUCTURE = {"base", "records", "validation", "generated", "stats"}

for _module in pkgutil.iter_modules(__path__):
    if _module.name not in _INFRASTRUCTURE:
        importlib.import_module(f"{__name__}.{_module.name}")

__all__ = [
    "DatasetFormat",
    "EvalOptions",
    "UnknownFormatError",
    "format_names",
    "get_format",
    "register_format",
]
