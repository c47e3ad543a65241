"""Evaluation of a CIR method on FashionIQ / CIRR splits with the official metrics.

Image representations of a split are computed in one pass over its gallery (references
are gallery images in both datasets); when the image side is frozen they come from the
feature cache, keyed by the encoder weights, so repeated evaluations never re-encode.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from bench.data.experiment import eval_text
from bench.data.records import CIRSplit
from bench.data.transforms import TargetPadTransform
from bench.features import ArrayCache, digest
from bench.metrics import (
    circo_metrics_from_features,
    cirr_metrics_from_features,
    fashioniq_average,
    fashioniq_metrics_from_features,
    fashioniq_protocol_gallery,
    get_fashioniq_protocol,
    subset_topk_names,
    topk_names,
)
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


@dataclass
class Encoded:
    """Image representations of a split's gallery: reference reps and target vectors."""

    reference: torch.Tensor
    target: torch.Tensor


def to_model_input(
    pixels: np.ndarray, transform: TargetPadTransform, device: torch.device
) -> torch.Tensor:
    """uint8 (B, 3, S, S) -> float tensor on ``device``, normalised as ``transform`` says."""
    batch = torch.from_numpy(np.require(pixels, requirements=["C", "W"])).to(device)
    mean = torch.tensor(transform.mean, device=device).view(1, 3, 1, 1)
    std = torch.tensor(transform.std, device=device).view(1, 3, 1, 1)
    return (batch.float() / 255.0 - mean) / std


@torch.no_grad()
def encode_pixels(
    method: CIRMethod, pixels: np.ndarray, device: torch.device, batch_size: int
) -> Encoded:
    """Encode uint8 pixels in batches into reference reps and target vectors (on CPU)."""
    refs, tgts = [], []
    for start in range(0, len(pixels), batch_size):
        images = to_model_input(pixels[start : start + batch_size], method.transform, device)
        with autocast(device):
            ref, tgt = method.encode_images(images)
        refs.append(ref.float().cpu())
        tgts.append(tgt.float().cpu())
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
) -> Encoded:
    """:func:`encode_pixels`, through the feature cache when one is given.

    Only pass a cache when the image side is frozen: the key includes a fingerprint of the
    image-side weights, so a cache used while they train just fills up with dead entries.
    """
    if cache is None:
        return encode_pixels(method, pixels, device, batch_size)
    key = digest("features", method.name, method.image_fingerprint(), pixels_key)
    encoded: dict[str, Encoded] = {}

    def compute(part: str) -> np.ndarray:
        if "enc" not in encoded:
            encoded["enc"] = encode_pixels(method, pixels, device, batch_size)
        return getattr(encoded["enc"], part).numpy()

    meta = {"method": method.name, "images": len(pixels)}
    ref = cache.get_or_compute("features", key + "-reference", lambda: compute("reference"), meta)
    tgt = cache.get_or_compute("features", key + "-target", lambda: compute("target"), meta)
    return Encoded(torch.from_numpy(np.array(ref)), torch.from_numpy(np.array(tgt)))


def autocast(device: torch.device) -> torch.autocast:
    """Mixed precision on CUDA (bfloat16 when supported, else float16); off on CPU."""
    if device.type == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast("cuda", dtype=dtype)
    return torch.autocast("cpu", enabled=False)


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
    rows = torch.from_numpy(images.rows([q.reference for q in split.queries]))
    texts = [eval_text(split.dataset, q.captions) for q in split.queries]
    out = []
    for start in range(0, len(texts), batch_size):
        ref = encoded.reference[rows[start : start + batch_size]].to(device)
        tokens = method.tokenize(texts[start : start + batch_size]).to(device)
        with autocast(device):
            out.append(method.encode_query(ref, tokens).float().cpu())
    return torch.cat(out).numpy()


def evaluate_split(
    method: CIRMethod,
    images: SplitImages,
    device: torch.device,
    *,
    batch_size: int = 256,
    protocol: str = "full_gallery",
    cirr_targets: str = "hard",
    cache: ArrayCache | None = None,
) -> dict[str, float]:
    """Official metrics of one split (one FashionIQ category or one CIRR split)."""
    split = images.split
    if not split.has_targets:
        raise ValueError(f"{split.dataset} {split.name} has no targets; use `cirbench submit`")
    was_training = method.training
    method.eval()
    try:
        encoded = encode_cached(method, images.pixels, images.pixels_key, device, batch_size, cache)
        queries = query_features(method, images, encoded, device, batch_size)
    finally:
        method.train(was_training)
    gallery = encoded.target.numpy()
    refs = [q.reference for q in split.queries]
    if split.dataset == "fashioniq":
        proto = get_fashioniq_protocol(protocol)
        targets = [q.target for q in split.queries]
        names = fashioniq_protocol_gallery(proto, split.gallery, refs, targets)
        if len(names) != len(split.gallery):
            gallery = gallery[images.rows(names)]
        return fashioniq_metrics_from_features(
            queries,
            gallery,
            names,
            targets,
            reference_names=refs,
            drop_reference=proto.drop_reference,
        )
    if split.dataset == "circo":
        return circo_metrics_from_features(
            queries, gallery, split.gallery, refs, [list(q.targets) for q in split.queries]
        )
    targets_spec: list[str | list[str]] = [
        [n for n, w in (q.soft_targets or {}).items() if w == 1.0] or [q.target]
        if cirr_targets == "soft"
        else q.target
        for q in split.queries
    ]
    return cirr_metrics_from_features(
        queries, gallery, split.gallery, refs, targets_spec, [list(q.group) for q in split.queries]
    )


def evaluate_splits(
    method: CIRMethod,
    splits: Sequence[SplitImages],
    device: torch.device,
    **kwargs: object,
) -> dict[str, float]:
    """Metrics over all evaluation splits: FashionIQ per category + averages, or CIRR."""
    per_split = {
        s.split.category or s.split.split: evaluate_split(method, s, device, **kwargs)
        for s in splits
    }  # type: ignore[arg-type]
    if splits and splits[0].split.dataset == "fashioniq":
        return fashioniq_average(per_split)
    (only,) = per_split.values()
    return only


@torch.no_grad()
def cirr_submission_rankings(
    method: CIRMethod, images: SplitImages, device: torch.device, batch_size: int = 256
) -> tuple[list[int], list[list[str]], list[list[str]]]:
    """(pair ids, top-50 names, top-3 subset names) for a CIRR test submission."""
    split = images.split
    method.eval()
    encoded = encode_pixels(method, images.pixels, device, batch_size)
    queries = query_features(method, images, encoded, device, batch_size)
    refs = [q.reference for q in split.queries]
    gallery = encoded.target.numpy()
    top50 = topk_names(queries, gallery, split.gallery, 50, refs)
    top3 = subset_topk_names(
        queries, gallery, split.gallery, refs, [list(q.group) for q in split.queries], 3
    )
    return [int(q.query_id) for q in split.queries], top50, top3
