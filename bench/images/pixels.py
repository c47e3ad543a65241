"""Preprocessed pixels of an image list: cached once, streamed, in parallel.

:func:`load_pixels` decodes and preprocesses (e.g. TargetPad) every image of a list into a
uint8 ``(N, 3, S, S)`` array kept in the array cache, keyed by the image list (names, file
sizes and modification times) and the preprocessing, and returns it memory-mapped. The
images are preprocessed by ``workers`` processes (``train.num_workers``; default the
machine's cores), a block of rows each (:data:`BLOCK_BYTES`), and written block by block
(:meth:`bench.core.arrays.ArrayCache.get_or_fill_rows`): the filling process holds at most
one block per worker and one more, never the array, and an interrupted fill resumes from its last
complete block. Every row depends only on its image, so 1 and N workers give the same
bytes.

Where a cached array does not pay (one pass over the images, or no disk to spare for it)
:class:`StreamedPixels` is the same array decoded on the fly: a sequential pass runs
through a ``torch.utils.data.DataLoader`` with the same workers, random rows through a
process pool. ``CIRBENCH_PIXEL_CACHE`` chooses: ``auto`` (default: cache unless the disk
cannot hold it), ``on``, ``off``.
"""

from __future__ import annotations

import multiprocessing
import os
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from bench.core.arrays import ArrayCache
from bench.core.disk import format_size, room_for
from bench.core.errors import CirbenchError, DataFormatError
from bench.core.hashing import digest, image_list_digest
from bench.core.runtime import resolve_workers
from bench.images.transforms import TargetPadTransform

#: Bytes of preprocessed pixels per block: a worker's unit of work and of resuming.
BLOCK_BYTES = 8 << 20
#: How the pixels of a run are held (``CIRBENCH_PIXEL_CACHE``).
PIXEL_CACHE_ENV = "CIRBENCH_PIXEL_CACHE"
PIXEL_CACHE_MODES = ("auto", "on", "off")


def _read_pixels(path: Path, transform: TargetPadTransform) -> np.ndarray:
    try:
        with Image.open(path) as image:
            return transform.pixels(image)
    except FileNotFoundError:
        raise DataFormatError(path, "image file not found") from None
    except OSError as exc:
        raise DataFormatError(path, f"cannot decode image: {exc}") from None


def preprocess_images(paths: Sequence[str | Path], transform: TargetPadTransform) -> np.ndarray:
    """uint8 ``(len(paths), 3, S, S)`` pixels of image files (in this process)."""
    out = np.empty((len(paths), 3, transform.size, transform.size), dtype=np.uint8)
    for i, path in enumerate(paths):
        out[i] = _read_pixels(Path(path), transform)
    return out


def pixels_key(names: Sequence[str], paths: dict[str, Path], transform: TargetPadTransform) -> str:
    """The cache key of an image list's pixels."""
    return digest("pixels", image_list_digest(names, paths), transform.describe())


def pixel_bytes(count: int, transform: TargetPadTransform) -> int:
    """Bytes of ``count`` images' cached pixels."""
    return count * 3 * transform.size * transform.size


def block_rows(transform: TargetPadTransform) -> int:
    """Rows per block: :data:`BLOCK_BYTES` of pixels (at least one image)."""
    return max(1, BLOCK_BYTES // pixel_bytes(1, transform))


def _pool(workers: int) -> ProcessPoolExecutor:
    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
    return ProcessPoolExecutor(workers, mp_context=context)


def iter_pixel_blocks(
    paths: Sequence[str | Path],
    transform: TargetPadTransform,
    *,
    start: int = 0,
    workers: int = 1,
    rows: int | None = None,
) -> Iterator[np.ndarray]:
    """Consecutive blocks of preprocessed rows from ``start`` on, computed by ``workers``
    processes (1: in this one), at most ``workers + 1`` blocks in flight."""
    rows = rows or block_rows(transform)
    spans = [(s, min(s + rows, len(paths))) for s in range(start, len(paths), rows)]
    workers = min(workers, len(spans))
    if workers <= 1:
        for lo, hi in spans:
            yield preprocess_images(paths[lo:hi], transform)
        return
    pending: deque[Future[np.ndarray]] = deque()
    todo = iter(spans)
    with _pool(workers) as pool:
        try:
            for lo, hi in todo:
                pending.append(pool.submit(preprocess_images, paths[lo:hi], transform))
                if len(pending) > workers:
                    break
            while pending:
                block = pending.popleft().result()
                for lo, hi in todo:  # refill the window by one
                    pending.append(pool.submit(preprocess_images, paths[lo:hi], transform))
                    break
                yield block
        finally:
            for job in pending:
                job.cancel()


def pixel_cache_mode() -> str:
    """``CIRBENCH_PIXEL_CACHE``: ``auto`` (default), ``on`` or ``off``."""
    mode = os.environ.get(PIXEL_CACHE_ENV, "auto").strip().lower()
    if mode not in PIXEL_CACHE_MODES:
        raise CirbenchError(f"{PIXEL_CACHE_ENV}={mode!r}: expected one of {PIXEL_CACHE_MODES}")
    return mode


def load_pixels(
    cache: ArrayCache,
    names: Sequence[str],
    paths: dict[str, Path],
    transform: TargetPadTransform,
    *,
    progress: bool = True,
    desc: str = "preprocess images",
    workers: int | None = None,
    stream: bool | None = None,
) -> np.ndarray | StreamedPixels:
    """Preprocessed uint8 images (N, 3, S, S) for ``names``: from the cache (filled once,
    see the module docstring) or, with ``stream`` (default: ``CIRBENCH_PIXEL_CACHE``),
    a :class:`StreamedPixels` decoding them on the fly. ``workers``: processes (None or
    0: the machine's cores)."""
    n = resolve_workers(workers)
    key = pixels_key(names, paths, transform)
    if stream is None:
        stream = _should_stream(cache, key, len(names), transform, desc)
    if stream:
        return StreamedPixels([paths[name] for name in names], transform, n)
    files = [paths[name] for name in names]
    shape = (len(names), 3, transform.size, transform.size)
    bar = tqdm(total=len(names), desc=desc, disable=not progress, leave=False)

    def fill(start: int) -> Iterator[np.ndarray]:
        bar.update(start)
        for block in iter_pixel_blocks(files, transform, start=start, workers=n):
            bar.update(len(block))
            yield block

    try:
        return cache.get_or_fill_rows("pixels", key, shape, np.uint8, fill, {"images": len(names)})
    finally:
        bar.close()


def _should_stream(
    cache: ArrayCache, key: str, count: int, transform: TargetPadTransform, desc: str
) -> bool:
    """``auto``: stream when the cache has no entry and the disk could not hold one."""
    mode = pixel_cache_mode()
    if mode != "auto":
        return mode == "off"
    if cache.path("pixels", key).is_file():
        return False
    needed = pixel_bytes(count, transform)
    if needed <= room_for(cache.root):
        return False
    print(
        f"cirbench: {desc}: a pixel cache of {format_size(needed)} would not fit the disk "
        f"of {cache.root}; decoding the images on the fly instead ({PIXEL_CACHE_ENV}=off)",
        flush=True,
    )
    return True


def pixel_batches(pixels: np.ndarray | StreamedPixels, batch_size: int) -> Iterator[np.ndarray]:
    """Consecutive batches of an array's rows (a :class:`StreamedPixels` decodes ahead)."""
    if isinstance(pixels, StreamedPixels):
        yield from pixels.batches(batch_size)
        return
    for start in range(0, len(pixels), batch_size):
        yield pixels[start : start + batch_size]


class _ImageDataset(torch.utils.data.Dataset):
    def __init__(self, paths: Sequence[Path], transform: TargetPadTransform) -> None:
        self.paths, self.transform = list(paths), transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> np.ndarray:
        return _read_pixels(self.paths[index], self.transform)


def _stack(items: list[np.ndarray]) -> np.ndarray:
    return np.stack(items)


class StreamedPixels:
    """The pixels :func:`load_pixels` would cache, decoded when asked (see the module
    docstring): indexes like the uint8 ``(N, 3, S, S)`` array (an int, a slice or rows)."""

    def __init__(self, paths: Sequence[Path], transform: TargetPadTransform, workers: int) -> None:
        self.paths = list(paths)
        self.transform = transform
        self.workers = workers
        self.shape = (len(self.paths), 3, transform.size, transform.size)
        self.dtype = np.dtype(np.uint8)
        self._executor: ProcessPoolExecutor | None = None

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: Any) -> np.ndarray:
        rows = np.arange(len(self))[index]
        if np.ndim(rows) == 0:
            return preprocess_images([self.paths[int(rows)]], self.transform)[0]
        files = [str(self.paths[int(r)]) for r in rows]
        if self.workers <= 1 or len(files) < 2:
            return preprocess_images(files, self.transform)
        if self._executor is None:
            self._executor = _pool(self.workers)
        size = -(-len(files) // self.workers)
        parts = [files[i : i + size] for i in range(0, len(files), size)]
        jobs = [self._executor.submit(preprocess_images, p, self.transform) for p in parts]
        return np.concatenate([job.result() for job in jobs])

    def batches(self, batch_size: int) -> Iterator[np.ndarray]:
        """Consecutive batches in row order, decoded ahead by a DataLoader's workers."""
        loader = torch.utils.data.DataLoader(
            _ImageDataset(self.paths, self.transform),
            batch_size=batch_size,
            num_workers=self.workers if self.workers > 1 else 0,
            collate_fn=_stack,
        )
        yield from loader

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(cancel_futures=True)
            self._executor = None

    def __del__(self) -> None:
        self.close()
