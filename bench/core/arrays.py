"""The on-disk array cache: content-keyed ``.npy`` files, written atomically, memory-mapped.

Every entry is keyed by a hash of what produced it (callers build the key: pixels by image
list + preprocessing, features additionally by the encoder weights), so a changed input
never reads a stale entry. Each ``.npy`` has a JSON sidecar recording how long it took to
compute, so the cache can report the time it saved. Reads memory-map the array.
:meth:`ArrayCache.get_or_fill` writes arrays computed block by block straight into
memory-mapped files (optionally in another dtype, e.g. float16 feature banks), so an array
larger than RAM can be cached and read back. :meth:`ArrayCache.get_or_fill_rows` fills
one array block by block with plain file writes (no map, so the filling process's memory
holds one block, not the array) and records after each block, atomically, how many rows
are on disk: an interrupted fill resumes from its last complete block.
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
from bench.core.locks import exclusive


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

    def partial_paths(self, kind: str, key: str) -> tuple[Path, Path]:
        """The data file and the progress record of an unfinished :meth:`get_or_fill_rows`."""
        path = self.path(kind, key)
        return path.with_name(f"{key}.partial.npy"), path.with_name(f"{key}.partial.json")

    def get_or_fill_rows(
        self,
        kind: str,
        key: str,
        shape: tuple[int, ...],
        dtype: str | np.dtype,
        fill: Callable[[int], Iterable[np.ndarray]],
        meta: dict[str, Any],
    ) -> np.ndarray:
        """One array of ``shape`` filled block by block, returned memory-mapped (read-only).

        On a miss ``fill(start)`` yields consecutive blocks of rows from row ``start`` on;
        each is written at its place in ``<key>.partial.npy`` with a plain file write, the
        file is synced and ``<key>.partial.json`` (rows done) replaced atomically, so a
        fill interrupted at any point resumes from its last complete block (``start`` > 0)
        and ends with the same bytes. Finished, the file is renamed to ``<key>.npy``. One
        process fills a key at a time (a file lock); another waits and then reads it."""
        path = self.path(kind, key)
        sidecar = path.with_suffix(".json")
        if not (path.is_file() and sidecar.is_file()):
            path.parent.mkdir(parents=True, exist_ok=True)
            with exclusive(path.with_name(f".{key}.lock")):
                if not (path.is_file() and sidecar.is_file()):
                    self._fill_rows(kind, key, tuple(shape), np.dtype(dtype), fill, meta)
                    return np.load(path, mmap_mode="r")
        info = json.loads(sidecar.read_text())
        self.stats.hits += 1
        self.stats.seconds_saved += float(info.get("seconds", 0.0))
        self.stats.events.append({"kind": kind, "key": key, "hit": True})
        return np.load(path, mmap_mode="r")

    def _fill_rows(
        self,
        kind: str,
        key: str,
        shape: tuple[int, ...],
        dtype: np.dtype,
        fill: Callable[[int], Iterable[np.ndarray]],
        meta: dict[str, Any],
    ) -> None:
        path = self.path(kind, key)
        data, progress = self.partial_paths(kind, key)
        record = {"shape": list(shape), "dtype": dtype.str, "rows_done": 0, "seconds": 0.0}
        if data.is_file() and progress.is_file():
            done = json.loads(progress.read_text())
            if done.get("shape") == record["shape"] and done.get("dtype") == record["dtype"]:
                record = done
        row_bytes = int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize
        if record["rows_done"] == 0:  # a fresh (sparse) file with its .npy header
            header = {
                "descr": np.lib.format.dtype_to_descr(dtype),
                "fortran_order": False,
                "shape": shape,
            }
            with data.open("wb") as handle:
                np.lib.format.write_array_header_1_0(handle, header)
                handle.truncate(handle.tell() + shape[0] * row_bytes)
        with data.open("rb") as handle:
            np.lib.format.read_magic(handle)
            np.lib.format.read_array_header_1_0(handle)
            offset = handle.tell()
        start, began = int(record["rows_done"]), time.perf_counter()
        earlier = float(record["seconds"])
        with data.open("r+b") as handle:
            row = start
            for block in fill(start):
                block = np.ascontiguousarray(block, dtype=dtype)
                if block.shape[1:] != shape[1:] or row + len(block) > shape[0]:
                    raise ValueError(
                        f"{kind}/{key}: block of shape {block.shape} does not fit rows "
                        f"{row}..{row + len(block)} of an array of shape {shape}"
                    )
                handle.seek(offset + row * row_bytes)
                handle.write(memoryview(block).cast("B"))
                handle.flush()
                os.fsync(handle.fileno())
                row += len(block)
                record = {
                    **record,
                    "rows_done": row,
                    "seconds": earlier + time.perf_counter() - began,
                }
                write_json_atomic(progress, record, indent=None)
        if row != shape[0]:
            raise ValueError(f"{kind}/{key}: fill gave {row} rows, expected {shape[0]}")
        seconds = earlier + time.perf_counter() - began
        os.replace(data, path)
        write_json_atomic(
            path.with_suffix(".json"),
            {**meta, "seconds": seconds, "shape": list(shape), "resumed_at": start},
            indent=None,
        )
        progress.unlink(missing_ok=True)
        self.stats.misses += 1
        self.stats.seconds_computing += seconds
        self.stats.events.append({"kind": kind, "key": key, "hit": False})


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
