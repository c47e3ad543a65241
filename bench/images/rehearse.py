"""Rehearsal folders: a benchmark's official layout at its real size, without its images.

:func:`rehearse` copies a format's real annotation files (``../shared/data/<format>`` or a
given folder) into the place the official layout has them and writes a placeholder JPEG
for every image they name, at the sizes and aspect ratios of the real images
(:attr:`bench.formats.base.DatasetFormat.image_sizes`), so that decoding and TargetPad
cost what they cost on the real data. CIRCO's gallery (the COCO unlabeled set) is filled
up to its real size with images no annotation names. Every image is a function of the
seed and its name alone (a smooth random field plus a noise texture, JPEG quality 90),
so the folder is the same whatever the number of worker processes; images are written
atomically and existing ones are kept, so an interrupted rehearsal resumes.

Placeholders carry no content: a rehearsal folder measures the input pipeline and checks
layouts, readers and recipes, never retrieval quality. The files are JPEG bytes under
the names the official layout uses (``.png`` for FashionIQ and CIRR, as the reference
code reads them; decoders go by content), so decoding costs a JPEG's, cheaper than the
real CIRR PNGs.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from bench.core.atomic import atomic_path
from bench.core.runtime import resolve_workers
from bench.formats import get_format
from bench.formats.base import ImageSizes

#: Names of images per task handed to a worker process.
CHUNK = 64
JPEG_QUALITY = 90


def default_annotations(format_name: str) -> Path:
    """The real annotation files of a format: ``$CIRBENCH_SHARED_DATA/<format>``, default
    ``../shared/data/<format>`` beside the repository."""
    shared = os.environ.get("CIRBENCH_SHARED_DATA")
    base = Path(shared) if shared else Path(__file__).resolve().parents[2].parent / "shared/data"
    return base / format_name


def _name_seed(seed: int, name: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}\0{name}".encode()).digest()[:8], "little")


def image_size(sizes: ImageSizes, rng: np.random.Generator, scale: float = 1.0) -> tuple[int, int]:
    """(width, height) drawn from a format's size distribution, scaled by ``scale``."""
    weights = np.array([w for w, _, _ in sizes.aspects], dtype=np.float64)
    _, low, high = sizes.aspects[int(rng.choice(len(weights), p=weights / weights.sum()))]
    aspect = float(np.exp(rng.uniform(np.log(low), np.log(high))))
    long_side = float(rng.uniform(sizes.long_side[0], sizes.long_side[1])) * scale
    if aspect >= 1:
        width, height = long_side, long_side / aspect
    else:
        width, height = long_side * aspect, long_side
    return max(8, round(width)), max(8, round(height))


def placeholder(seed: int, name: str, sizes: ImageSizes, scale: float = 1.0) -> Image.Image:
    """The placeholder image of ``name``: a smooth random colour field (an 8 x 8 grid
    resized bicubically) plus a 64 x 64 noise texture tiled over it (so JPEG spends on it
    about what it spends on a photo)."""
    rng = np.random.default_rng(_name_seed(seed, name))
    width, height = image_size(sizes, rng, scale)
    grid = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    field = np.asarray(Image.fromarray(grid).resize((width, height), Image.Resampling.BICUBIC))
    tile = rng.integers(-10, 11, (64, 64, 3), dtype=np.int16)
    reps = (-(-height // 64), -(-width // 64), 1)
    noise = np.tile(tile, reps)[:height, :width]
    pixels = np.clip(field.astype(np.int16) + noise, 0, 255).astype(np.uint8)
    return Image.fromarray(pixels)


def _write_chunk(
    seed: int, sizes: ImageSizes, scale: float, items: Sequence[tuple[str, str]]
) -> int:
    """Write the placeholders of ``(name, path)`` items that are not on disk yet."""
    written = 0
    for name, path in items:
        if os.path.exists(path):
            continue
        image = placeholder(seed, name, sizes, scale)
        with atomic_path(path) as tmp:
            image.save(tmp, format="JPEG", quality=JPEG_QUALITY)
        written += 1
    return written


@dataclass
class Rehearsal:
    """What :func:`rehearse` wrote: the folder, the images named, written and kept."""

    root: Path
    format: str
    images: int
    written: int
    annotations: Path

    def as_dict(self) -> dict[str, object]:
        return {
            "root": str(self.root),
            "format": self.format,
            "images": self.images,
            "written": self.written,
            "annotations": str(self.annotations),
        }


def rehearsal_images(
    format_name: str, root: Path, gallery_size: int | None = None
) -> dict[str, Path]:
    """Every image of a rehearsal folder whose annotations are in place under ``root``:
    the named ones, then (formats whose gallery is more) fillers up to ``gallery_size``
    (default the real gallery's size), in a fixed order."""
    fmt = get_format(format_name)
    images = dict(sorted(fmt.named_images(root).items()))
    total = fmt.gallery_size if gallery_size is None else gallery_size
    if fmt.gallery_size is not None and total and total > len(images):
        images.update(fmt.gallery_fillers(root, images, total - len(images)))
    return images


def _chunks(items: list[tuple[str, str]]) -> Iterator[list[tuple[str, str]]]:
    for start in range(0, len(items), CHUNK):
        yield items[start : start + CHUNK]


def rehearse(
    format_name: str,
    out: Path,
    *,
    annotations: Path | None = None,
    seed: int = 0,
    limit: int | None = None,
    workers: int | None = None,
    scale: float = 1.0,
    gallery_size: int | None = None,
    progress: bool = True,
) -> Rehearsal:
    """Write a rehearsal folder of ``format_name`` at ``out`` (see the module docstring).

    ``limit``: only the first ``limit`` images (0: annotations only); the readers then
    report the others as missing. ``scale`` shrinks every image (tests); ``workers``
    processes (default: the machine's cores) write the images."""
    fmt = get_format(format_name)
    source = Path(annotations) if annotations is not None else default_annotations(format_name)
    if not source.is_dir() or not fmt.looks_like(source):
        raise FileNotFoundError(
            f"{source}: no {fmt.title} annotation files there (give --annotations DIR)"
        )
    out = Path(out)
    target = fmt.annotation_folder(out)
    shutil.copytree(source, target, dirs_exist_ok=True)
    items: list[tuple[str, str]] = []
    if limit != 0:  # 0: annotations only, no image listed (fast)
        images = rehearsal_images(format_name, out, gallery_size)
        items = [(name, str(path)) for name, path in images.items()][:limit]
    n = resolve_workers(workers)
    written = 0
    bar = tqdm(total=len(items), desc=f"rehearse {format_name}", disable=not progress)
    if n <= 1:
        for chunk in _chunks(items):
            written += _write_chunk(seed, fmt.image_sizes, scale, chunk)
            bar.update(len(chunk))
    else:
        with ProcessPoolExecutor(n) as pool:
            sizes = fmt.image_sizes
            jobs = [
                (pool.submit(_write_chunk, seed, sizes, scale, c), len(c)) for c in _chunks(items)
            ]
            for job, count in jobs:
                written += job.result()
                bar.update(count)
    bar.close()
    return Rehearsal(out, format_name, len(items), written, source)


def rehearse_data_root(
    parent: Path, formats: Sequence[str] | None = None, **options: object
) -> dict[str, Rehearsal]:
    """A data root in the reference layout (``--data-root``): each format's rehearsal
    folder under its reference name (``fashionIQ_dataset/``, ``cirr_dataset/``,
    ``CIRCO/``); ``options`` as :func:`rehearse` takes them."""
    from bench.formats import format_names

    chosen = formats or format_names()
    return {
        name: rehearse(name, Path(parent) / get_format(name).reference_folders[0], **options)  # type: ignore[arg-type]
        for name in chosen
    }
