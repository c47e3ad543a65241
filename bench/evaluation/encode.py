"""Image and query representations for evaluation and for banks.

Image representations of a split are computed in one pass over its gallery (references
are gallery images in every format); when the image side is frozen they come from the
feature cache, keyed by the encoder weights, so repeated evaluations never re-encode.
Cached features are memory-mapped from disk (optionally stored as float16) and read a
batch of rows at a time, so a large (e.g. token-level) bank is never whole in RAM.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from bench.core.arrays import ArrayCache
from bench.core.hashing import digest
from bench.core.runtime import autocast
from bench.formats import get_format
from bench.formats.records import CIRSplit
from bench.images.pixels import pixel_batches
from bench.images.transforms import to_model_input
from methods.base import CIRMethod


@dataclass
class SplitImages:
    """A split with its preprocessed gallery pixels (uint8, rows in gallery order)."""

    split: CIRSplit
    pixels: np.ndarray
    pixels_key: str

    def rows(self, names: Sequence[str]) -> np.ndarray:
        index = {n: i for i, n in enumerate(self.split.gallery)}
        return np.fromiter((index[n] for n in names), dtype=np.int64, count=len(names))


#: Storage dtypes of cached features.
FEATURE_DTYPES = ("float32", "float16")


def gather_rows(
    array: torch.Tensor | np.ndarray,
    rows: np.ndarray | torch.Tensor | slice,
    device: torch.device,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Rows of a feature array (a tensor, possibly memory-mapped, or a numpy array) as a
    tensor on ``device`` in ``dtype``: float16 storage is upcast, and only the rows asked
    for are read from a memory-mapped array."""
    if isinstance(array, np.ndarray):
        index = rows.cpu().numpy() if isinstance(rows, torch.Tensor) else rows
        return torch.from_numpy(np.array(array[index])).to(device=device, dtype=dtype)
    if not isinstance(rows, slice):
        rows = torch.as_tensor(rows).to(array.device)
    return array[rows].to(device=device, dtype=dtype)


@dataclass
class Encoded:
    """Image representations of a split's gallery: reference reps and target vectors.

    From the feature cache they are tensors over memory-mapped files (``files``: the
    reference and target files), float32 or float16: read them a batch of rows at a time
    with :meth:`reference_rows` / :meth:`target_rows`, which upcast to float32."""

    reference: torch.Tensor | None  #: None: targets only (``encode_cached(targets_only)``)
    target: torch.Tensor
    files: tuple[Path | None, Path] | None = None

    def reference_rows(self, rows: np.ndarray | torch.Tensor, device: torch.device) -> torch.Tensor:
        if self.reference is None:
            raise ValueError("these features hold targets only (encode_cached targets_only)")
        return gather_rows(self.reference, rows, device)

    def target_rows(self, rows: np.ndarray | torch.Tensor, device: torch.device) -> torch.Tensor:
        return gather_rows(self.target, rows, device)

    def target_matrix(self) -> np.ndarray:
        """Every target vector as one float32 array (a gallery for the metrics)."""
        return self.target.detach().to(device="cpu", dtype=torch.float32).numpy()

    def in_ram(self) -> Encoded:
        """A float32 copy in RAM, as features were held before banks were memory-mapped."""
        reference = self.reference
        return Encoded(
            None if reference is None else reference.to("cpu", torch.float32, copy=True),
            self.target.to(device="cpu", dtype=torch.float32, copy=True),
        )


def iter_encoded(
    method: CIRMethod, pixels: np.ndarray, device: torch.device, batch_size: int
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(reference reps, target vectors) of consecutive batches of uint8 pixels, float32 on
    the CPU, encoded in eval mode (the mode is restored after the last batch)."""
    was_training = method.training
    method.eval()
    try:
        for batch in pixel_batches(pixels, batch_size):
            images = to_model_input(batch, method.transform, device)
            with torch.no_grad(), autocast(device):
                ref, tgt = method.encode_images(images)
            yield ref.float().cpu(), tgt.float().cpu()
    finally:
        method.train(was_training)


def encode_pixels(
    method: CIRMethod, pixels: np.ndarray, device: torch.device, batch_size: int
) -> Encoded:
    """Encode uint8 pixels in batches into reference reps and target vectors (on CPU)."""
    refs, tgts = [], []
    for ref, tgt in iter_encoded(method, pixels, device, batch_size):
        refs.append(ref)
        tgts.append(tgt)
    if not refs:
        raise ValueError("no images to encode")
    return Encoded(torch.cat(refs), torch.cat(tgts))


def encode_cached(
    method: CIRMethod,
    pixels: np.ndarray,
    pixels_key: str,
    device: torch.device,
    batch_size: int,
    cache: ArrayCache | None,
    *,
    dtype: str = "float32",
    targets_only: bool = False,
) -> Encoded:
    """:func:`encode_pixels`, through the feature cache when one is given.

    Cached features are written batch by batch into ``dtype`` files (``float16`` halves a
    bank; the key includes the dtype) and returned as tensors over the memory-mapped
    files, not loaded: read them with :meth:`Encoded.reference_rows` /
    :meth:`Encoded.target_rows`.

    Only pass a cache when the image side is frozen: the key includes a fingerprint of the
    image-side weights, so a cache used while they train just fills up with dead entries.
    ``targets_only`` (with a cache) encodes and caches the target vectors alone (a bank
    stage that reads cached query states instead of reference representations).
    """
    if dtype not in FEATURE_DTYPES:
        raise ValueError(f"feature dtype {dtype!r}: expected one of {FEATURE_DTYPES}")
    if cache is None:
        encoded = encode_pixels(method, pixels, device, batch_size)
        if dtype == "float32":
            return encoded
        return Encoded(encoded.reference.to(torch.float16), encoded.target.to(torch.float16))
    key = digest("features", method.name, method.image_fingerprint(), pixels_key, dtype)

    def fill() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for ref, tgt in iter_encoded(method, pixels, device, batch_size):
            yield ref.numpy(), tgt.numpy()

    meta = {"method": method.name, "images": len(pixels), "dtype": dtype}
    if targets_only:
        return _encode_targets(method, pixels, device, batch_size, cache, key, meta, dtype)
    keys = [key + "-reference", key + "-target"]
    # copy-on-write maps: tensors over the files, never loaded; an in-place write would
    # stay private to this process (a read-only map would crash the process instead)
    ref, tgt = cache.get_or_fill("features", keys, fill, len(pixels), meta, dtype, "c")
    files = (cache.path("features", keys[0]), cache.path("features", keys[1]))
    return Encoded(torch.from_numpy(ref), torch.from_numpy(tgt), files)


def _encode_targets(
    method: CIRMethod,
    pixels: np.ndarray,
    device: torch.device,
    batch_size: int,
    cache: ArrayCache,
    key: str,
    meta: dict,
    dtype: str,
) -> Encoded:
    was_training = method.training
    method.eval()

    def fill() -> Iterator[tuple[np.ndarray]]:
        try:
            for batch in pixel_batches(pixels, batch_size):
                images = to_model_input(batch, method.transform, device)
                with torch.no_grad(), autocast(device):
                    yield (method.encode_target(images).float().cpu().numpy(),)
        finally:
            method.train(was_training)

    [target] = cache.get_or_fill("features", [key + "-target"], fill, len(pixels), meta, dtype, "c")
    return Encoded(None, torch.from_numpy(target), (None, cache.path("features", key + "-target")))


@torch.no_grad()
def query_features(
    method: CIRMethod,
    images: SplitImages,
    encoded: Encoded,
    device: torch.device,
    batch_size: int,
) -> np.ndarray:
    """L2-normalised query vectors for every query of the split, in query order."""
    split = images.split
    rows = images.rows([q.reference for q in split.queries])
    fmt = get_format(split.dataset)
    texts = [fmt.eval_text(q.captions) for q in split.queries]
    out = []
    for start in range(0, len(texts), batch_size):
        ref = encoded.reference_rows(rows[start : start + batch_size], device)
        tokens = method.tokenize(texts[start : start + batch_size]).to(device)
        with autocast(device):
            out.append(method.encode_query(ref, tokens).float().cpu())
    return torch.cat(out).numpy()
