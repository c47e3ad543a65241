"""The on-disk array cache: content-keyed ``.npy`` files, written atomically, memory-mapped.

Every entry is keyed by a hash of what produced it (callers build the key: pixels by image
list + preprocessing, features additionally by the encoder weights), so a changed input
never reads a stale entry. Each ``.npy`` has a JSON sidecar recording how long it took to
compute, so the cache can report the time it saved. Reads memory-map the array.
:meth:`ArrayCache.get_or_fill` writes arrays computed block by block straight into
memory-mapped files (optionally in another dtype, e.g. float16 feature banks), so an array
larger than RAM can be cached and read back.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bench.core.atomic import (
    atomic_path,
    remove_stale_temporaries,
    temporary_path,
    write_json_atomic,
)
from bench.core.faults import reached


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    seconds_computing: float = 0.0
    seconds_saved: float = 0.0
    events: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, float]:
        return {
            "cache_hits": self.hits,
            "cache_misses": self.misses,
            "cache_seconds_computing": round(self.seconds_computing, 3),
            "cache_seconds_saved": round(self.seconds_saved, 3),
        }


class ArrayCache:
    """A folder of content-keyed ``.npy`` arrays (see the module docstring)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.stats = CacheStats()

    def path(self, kind: str, key: str) -> Path:
        return self.root / kind / f"{key}.npy"

    def get_or_compute(
        self, kind: str, key: str, compute: Callable[[], np.ndarray], meta: dict[str, Any]
    ) -> np.ndarray:
        """Return the cached array for ``key`` or compute, store and return it."""
        path = self.path(kind, key)
        sidecar = path.with_suffix(".json")
        if path.is_file() and sidecar.is_file():
            info = json.loads(sidecar.read_text())
            self.stats.hits += 1
            self.stats.seconds_saved += float(info.get("seconds", 0.0))
            self.stats.events.append({"kind": kind, "key": key, "hit": True})
            return np.load(path, mmap_mode="r")
        remove_stale_temporaries(path.parent)  # leftovers of killed writers
        reached("cache.fill")
        start = time.perf_counter()
        array = np.ascontiguousarray(compute())
        seconds = time.perf_counter() - start
        with atomic_path(path) as tmp, tmp.open("wb") as handle:
            np.save(handle, array)
        write_json_atomic(
            sidecar, {**meta, "seconds": seconds, "shape": list(array.shape)}, indent=None
        )
        self.stats.misses += 1
        self.stats.seconds_computing += seconds
        self.stats.events.append({"kind": kind, "key": key, "hit": False})
        return array

    def get_or_fill(
        self,
        kind: str,
        keys: Sequence[str],
        fill: Callable[[], Iterable[Sequence[np.ndarray]]],
        rows: int,
        meta: dict[str, Any],
        dtype: str | np.dtype | None = None,
        mmap_mode: str = "r",
    ) -> list[np.ndarray]:
        """Arrays computed together (one per key), returned as memory maps (``mmap_mode``
        as :func:`numpy.load` takes it: ``"r"`` read-only, ``"c"`` copy-on-write).

        On a miss ``fill()`` yields, in row order, one block of consecutive rows per key
        each time; every block is written straight into a memory-mapped ``.npy`` file (of
        ``dtype`` when given, else the first block's), so no array is ever whole in RAM.
        Files are published atomically as in :meth:`get_or_compute`; a hit needs every key.
        The compute time is split evenly over the keys' sidecars.
        """
        paths = [self.path(kind, key) for key in keys]
        sidecars = [p.with_suffix(".json") for p in paths]
        if all(p.is_file() for p in paths) and all(s.is_file() for s in sidecars):
            out = []
            for key, path, sidecar in zip(keys, paths, sidecars, strict=True):
                info = json.loads(sidecar.read_text())
                self.stats.hits += 1
                self.stats.seconds_saved += float(info.get("seconds", 0.0))
                self.stats.events.append({"kind": kind, "key": key, "hit": True})
                out.append(np.load(path, mmap_mode=mmap_mode))
            return out
        start = time.perf_counter()
        paths[0].parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(paths[0].parent)  # leftovers of killed writers
        reached("cache.fill")
        tmps = [temporary_path(p) for p in paths]
        try:
            _write_blocks(kind, keys, tmps, fill(), rows, dtype)
            seconds = time.perf_counter() - start
            for path, tmp, sidecar in zip(paths, tmps, sidecars, strict=True):
                os.replace(tmp, path)
                shape = list(np.load(path, mmap_mode="r").shape)
                record = {**meta, "seconds": seconds / len(keys), "shape": shape}
                write_json_atomic(sidecar, record, indent=None)
        finally:
            for tmp in tmps:
                tmp.unlink(missing_ok=True)
        self.stats.misses += len(keys)
        self.stats.seconds_computing += seconds
        self.stats.events.extend({"kind": kind, "key": key, "hit": False} for key in keys)
        return [np.load(path, mmap_mode=mmap_mode) for path in paths]


def _write_blocks(
    kind: str,
    keys: Sequence[str],
    tmps: Sequence[Path],
    blocks_of: Iterable[Sequence[np.ndarray]],
    rows: int,
    dtype: str | np.dtype | None,
) -> None:
    """Write the blocks of :meth:`ArrayCache.get_or_fill` (one per key each time, in row
    order) into new memory-mapped ``.npy`` files ``tmps``, checking shapes, row count and
    range; the files are flushed and their maps released on return."""
    arrays: list[np.memmap] = []
    offset = 0
    try:
        for blocks in blocks_of:
            if len(blocks) != len(keys):
                raise ValueError(f"fill() gave {len(blocks)} blocks for {len(keys)} keys")
            if not arrays:
                for tmp, block in zip(tmps, blocks, strict=True):
                    arrays.append(
                        np.lib.format.open_memmap(
                            tmp,
                            mode="w+",
                            dtype=np.dtype(dtype or block.dtype),
                            shape=(rows, *block.shape[1:]),
                        )
                    )
            n = len(blocks[0])
            for key, array, block in zip(keys, arrays, blocks, strict=True):
                if len(block) != n or block.shape[1:] != array.shape[1:]:
                    raise ValueError(
                        f"{kind}/{key}: block of shape {block.shape} does not fit rows "
                        f"{offset}..{offset + n} of an array of shape {array.shape}"
                    )
                _check_range(block, array.dtype, f"{kind}/{key}")
                array[offset : offset + n] = block
            offset += n
        if not arrays:
            raise ValueError(f"{kind}/{keys[0]}: fill() gave no rows")
        if offset != rows:
            raise ValueError(f"{kind}/{keys[0]}: fill() gave {offset} rows, expected {rows}")
        for array in arrays:
            array.flush()
    finally:
        del arrays[:]


def _check_range(block: np.ndarray, dtype: np.dtype, name: str) -> None:
    """A block stored in a narrower float type must fit its range (float16: |x| <= 65504)."""
    if dtype.kind != "f" or block.dtype.kind != "f" or dtype.itemsize >= block.dtype.itemsize:
        return
    limit = float(np.finfo(dtype).max)
    if block.size and not np.all(np.abs(block) <= limit):
        raise ValueError(
            f"{name}: values beyond the range of {dtype} (|x| > {limit:g} or not finite); "
            "store these features in float32"
        )
