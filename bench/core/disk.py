"""Disk space: how much a run's caches need, how much is free, how much to leave free.

``CIRBENCH_KEEP_FREE`` (bytes, or with a unit: ``500M``, ``20G``; default ``1G``) is the
space cirbench leaves free on the disk of its caches: a run whose new cache files would
eat into it is refused before any work (:mod:`bench.train.budget`), and a pixel cache that
would is decoded on the fly instead (:mod:`bench.images.pixels`).
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from bench.core.errors import CirbenchError

KEEP_FREE_ENV = "CIRBENCH_KEEP_FREE"
DEFAULT_KEEP_FREE = "1G"
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)i?B?\s*$", re.IGNORECASE)


class DiskSpaceError(CirbenchError):
    """A run's caches would not fit on the disk (with what it must leave free)."""


def parse_size(text: str, source: str = KEEP_FREE_ENV) -> int:
    """``"20G"`` -> bytes (units K, M, G, T: powers of 1024)."""
    match = _SIZE.match(str(text))
    if not match:
        raise CirbenchError(f"{source}={text!r}: expected a size like 500M, 20G or 1048576")
    return int(float(match.group(1)) * _UNITS[match.group(2).upper()])


def format_size(n: float) -> str:
    """Bytes as a short human-readable size (``11.3 GB``; powers of 1000)."""
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"  # pragma: no cover


def keep_free() -> int:
    """The bytes to leave free on the cache disk (``CIRBENCH_KEEP_FREE``)."""
    return parse_size(os.environ.get(KEEP_FREE_ENV, DEFAULT_KEEP_FREE))


def free_bytes(path: Path) -> int:
    """Free bytes on the disk of ``path`` (its nearest existing parent)."""
    path = Path(path).resolve()
    while not path.exists() and path != path.parent:
        path = path.parent
    return shutil.disk_usage(path).free


def room_for(path: Path) -> int:
    """Bytes that may still be written under ``path``: free minus what to leave free."""
    return free_bytes(path) - keep_free()
