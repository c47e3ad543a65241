"""Content digests: what keys caches, run folders and provenance records."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any


def digest(*parts: Any) -> str:
    """A short SHA-256 of JSON-serialisable parts."""
    blob = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def file_digest(path: Path, chunk: int = 1 << 20) -> str:
    """SHA-256 (first 16 hex digits) of a file's bytes."""
    sha = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(chunk):
            sha.update(block)
    return sha.hexdigest()[:16]


def image_list_digest(names: Sequence[str], paths: dict[str, Path]) -> str:
    """Hash of an ordered image list and of each file's size and modification time."""
    sha = hashlib.sha256()
    for name in names:
        st = os.stat(paths[name])
        sha.update(f"{name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return sha.hexdigest()[:20]


def tensor_fingerprint(tensors: Iterable[Any]) -> str:
    """Hash of parameter values (identifies encoder weights)."""
    sha = hashlib.sha256()
    for t in tensors:
        sha.update(t.detach().cpu().contiguous().numpy().tobytes())
    return sha.hexdigest()[:20]
