"""The one entry point that reads a data file: every OS and decoding error becomes a
:class:`~bench.core.errors.DataFormatError` naming the file.

:func:`read_text` turns a missing file, a folder, an unreadable file, a symlink loop, any
other ``OSError``, a file over the size limit and non-UTF-8 bytes into one error each;
:func:`read_json` adds malformed JSON, ``NaN`` / ``Infinity`` (not JSON), nesting deeper
than :data:`MAX_JSON_DEPTH` and Python's own recursion limit. The size limit is
:data:`MAX_BYTES` (``CIRBENCH_MAX_FILE_MB`` overrides it): the largest official
annotation file is about 7 MB (CIRR's train captions), generated sets stay far below it.
"""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path
from typing import Any

from bench.core.errors import DataFormatError

#: Bytes a data file may hold (``CIRBENCH_MAX_FILE_MB`` overrides it).
MAX_BYTES = 512 * 2**20
#: How deep JSON arrays and objects may nest (annotation files nest 3 levels at most).
MAX_JSON_DEPTH = 32


def max_bytes() -> int:
    """The size limit of a data file in bytes (see the module docstring)."""
    value = os.environ.get("CIRBENCH_MAX_FILE_MB")
    if value is None:
        return MAX_BYTES
    try:
        return int(float(value) * 2**20)
    except ValueError:
        raise DataFormatError(
            "CIRBENCH_MAX_FILE_MB", f"expected a number of megabytes, got {value!r}"
        ) from None


def _os_problem(exc: OSError) -> str:
    if isinstance(exc, FileNotFoundError):
        return "file not found"
    if isinstance(exc, IsADirectoryError):
        return "is a directory, expected a file"
    if isinstance(exc, PermissionError):
        return "permission denied (cannot read the file)"
    if exc.errno == errno.ELOOP:
        return "symlink loop (too many levels of symbolic links)"
    return f"cannot read: {exc.strerror or exc}"


def read_text(path: str | Path, *, limit: int | None = None) -> str:
    """A UTF-8 text file's content (see the module docstring for the errors)."""
    path = Path(path)
    limit = max_bytes() if limit is None else limit
    try:
        if path.is_dir():  # open() of a folder raises IsADirectoryError only on some systems
            raise IsADirectoryError(errno.EISDIR, "is a directory", str(path))
        with path.open("rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            if size > limit:
                raise DataFormatError(
                    path,
                    f"file is {size / 2**20:.1f} MB, over the {limit / 2**20:.0f} MB limit "
                    "of a data file (CIRBENCH_MAX_FILE_MB raises it)",
                )
            data = handle.read(limit + 1)
    except OSError as exc:
        raise DataFormatError(path, _os_problem(exc)) from None
    if len(data) > limit:  # grew while read, or a device / pipe without a size
        raise DataFormatError(path, f"over the {limit / 2**20:.0f} MB limit of a data file")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataFormatError(path, f"not UTF-8 text: {exc}") from None


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _depth(value: Any) -> int:
    """Nesting depth of parsed JSON (iterative: no recursion limit)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        deepest = max(deepest, depth)
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return deepest


def read_json(
    path: str | Path, *, limit: int | None = None, max_depth: int = MAX_JSON_DEPTH
) -> Any:
    """A JSON file's content (see the module docstring for the errors)."""
    text = read_text(path, limit=limit)
    try:
        value = json.loads(text, parse_constant=_no_constant)
    except json.JSONDecodeError as exc:
        raise DataFormatError(
            path, f"malformed JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"
        ) from None
    except ValueError as exc:  # NaN / Infinity
        raise DataFormatError(path, f"malformed JSON: {exc}") from None
    except RecursionError:
        raise DataFormatError(
            path, f"JSON nested too deeply to parse (limit {max_depth} levels)"
        ) from None
    depth = _depth(value)
    if depth > max_depth:
        raise DataFormatError(path, f"JSON nested {depth} levels deep, over the limit {max_depth}")
    return value
