"""Preprocessed pixels of an image list, computed once and cached.

:func:`load_pixels` decodes and preprocesses (e.g. TargetPad) every image of a list into a
uint8 ``(N, 3, S, S)`` array kept in the array cache, keyed by the image list (names, file
sizes and modification times) and the preprocessing, and returns it memory-mapped.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from bench.core.arrays import ArrayCache
from bench.core.errors import DataFormatError
from bench.core.hashing import digest, image_list_digest
from bench.images.transforms import TargetPadTransform


def _read_pixels(path: Path, transform: TargetPadTransform) -> np.ndarray:
    try:
        with Image.open(path) as image:
            return transform.pixels(image)
    except FileNotFoundError:
        raise DataFormatError(path, "image file not found") from None
    except OSError as exc:
        raise DataFormatError(path, f"cannot decode image: {exc}") from None


def load_pixels(
    cache: ArrayCache,
    names: Sequence[str],
    paths: dict[str, Path],
    transform: TargetPadTransform,
    *,
    progress: bool = True,
    desc: str = "preprocess images",
) -> np.ndarray:
    """Preprocessed uint8 images (N, 3, S, S) for ``names``, computed once and cached."""
    key = digest("pixels", image_list_digest(names, paths), transform.describe())

    def compute() -> np.ndarray:
        out = np.empty((len(names), 3, transform.size, transform.size), dtype=np.uint8)
        for i, name in enumerate(tqdm(names, desc=desc, disable=not progress, leave=False)):
            out[i] = _read_pixels(paths[name], transform)
        return out

    return cache.get_or_compute("pixels", key, compute, {"images": len(names)})
