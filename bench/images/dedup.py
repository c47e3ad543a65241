"""Pixel-identical images merged into one: the SPN bank's de-duplication.

Two image files are duplicates when their decoded RGB pixels are identical (same size,
same bytes), whatever their names or file formats; near-identical images stay apart. The
SPN reference merges such images into one bank row (``zscir/deduplicate_images.py``,
``optimized_images.json``), so that a target's twin is never its negative. The digests of
an image list are computed once and cached, keyed by the list (names, sizes, mtimes).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

from PIL import Image
from tqdm import tqdm

from bench.core.atomic import write_json_atomic
from bench.core.errors import DataFormatError
from bench.core.hashing import digest, image_list_digest


def pixel_digest(path: Path) -> str:
    """SHA-256 of an image's decoded RGB pixels and size (the file's format is ignored)."""
    try:
        with Image.open(path) as image:
            rgb = image.convert("RGB")
    except FileNotFoundError:
        raise DataFormatError(path, "image file not found") from None
    except OSError as exc:
        raise DataFormatError(path, f"cannot decode image: {exc}") from None
    sha = hashlib.sha256(f"{rgb.width}x{rgb.height}".encode())
    sha.update(rgb.tobytes())
    return sha.hexdigest()


def pixel_digests(
    names: Sequence[str],
    paths: dict[str, Path],
    cache_root: Path,
    *,
    progress: bool = True,
) -> dict[str, str]:
    """name -> :func:`pixel_digest` of every image, cached under ``cache_root/dedup``."""
    key = digest("pixel-digests", image_list_digest(names, paths))
    cached = cache_root / "dedup" / f"{key}.json"
    if cached.is_file():
        return json.loads(cached.read_text(encoding="utf-8"))
    out = {
        n: pixel_digest(paths[n])
        for n in tqdm(names, desc="dedup: image digests", disable=not progress, leave=False)
    }
    write_json_atomic(cached, out, indent=None)
    return out


def duplicate_groups(digests: dict[str, str]) -> dict[str, str]:
    """name -> the name standing for its group (the first of the group in ``digests``'
    order); names without a twin map to themselves."""
    first: dict[str, str] = {}
    return {name: first.setdefault(d, name) for name, d in digests.items()}
