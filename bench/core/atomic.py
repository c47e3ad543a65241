"""Atomic file writes: the one place that writes a file so that readers never see half of it.

Every writer goes through :func:`atomic_path`: the content is written to a temporary file
beside the target (``.<name>.<pid>.tmp``, unique per process), flushed to disk (fsync) and
renamed over it with :func:`os.replace`, which is atomic on POSIX; on any error the
temporary file is removed.
A process killed mid-write leaves only its temporary file, which
:func:`remove_stale_temporaries` deletes once its process is gone.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.core.faults import reached

_TEMPORARY = re.compile(r"^\..+\.(\d+)\.tmp$")


def temporary_path(path: Path) -> Path:
    """The temporary file this process writes ``path`` through."""
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces ``path`` (parents created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_path(path)
    try:
        yield tmp
        with open(tmp, "rb+") as handle:  # on disk before it replaces the old file
            os.fsync(handle.fileno())
        reached(f"write{path.suffix}")  # written, not yet in place (fault injection)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text_atomic(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json_atomic(
    path: str | Path,
    data: Any,
    *,
    indent: int | None = 2,
    sort_keys: bool = False,
    ensure_ascii: bool = True,
    trailing_newline: bool = False,
) -> None:
    """``data`` as JSON (``json.dumps`` options as given)."""
    text = json.dumps(data, indent=indent, sort_keys=sort_keys, ensure_ascii=ensure_ascii)
    write_text_atomic(path, text + ("\n" if trailing_newline else ""))


def save_torch_atomic(obj: Any, path: str | Path) -> None:
    """``torch.save(obj)`` to ``path`` atomically (checkpoints)."""
    import torch

    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def process_alive(pid: int) -> bool:
    """True when a process with this id exists on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temporaries(folder: str | Path) -> int:
    """Delete the temporary files (``.<name>.<pid>.tmp``) in ``folder`` whose writing process
    is gone (a killed writer's leftovers); returns how many were removed."""
    folder = Path(folder)
    if not folder.is_dir():
        return 0
    removed = 0
    for entry in folder.iterdir():
        match = _TEMPORARY.match(entry.name)
        if match and int(match.group(1)) != os.getpid() and not process_alive(int(match.group(1))):
            entry.unlink(missing_ok=True)
            removed += 1
    return removed
