"""Evaluating a CIR method on a split with its format's official metrics."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from bench.core.arrays import ArrayCache
from bench.evaluation.encode import SplitImages, encode_cached, query_features
from bench.formats import EvalOptions, get_format
from methods.base import CIRMethod


def evaluate_split(
    method: CIRMethod,
    images: SplitImages,
    device: torch.device,
    *,
    batch_size: int = 256,
    options: EvalOptions | None = None,
    cache: ArrayCache | None = None,
) -> dict[str, float]:
    """Official metrics of one split (one FashionIQ category or one CIRR / CIRCO split)."""
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
    fmt = get_format(split.dataset)
    return fmt.split_metrics(
        split, queries, encoded.target_matrix(), options or EvalOptions(), images.rows
    )


def evaluate_splits(
    method: CIRMethod,
    splits: Sequence[SplitImages],
    device: torch.device,
    *,
    batch_size: int = 256,
    options: EvalOptions | None = None,
    cache: ArrayCache | None = None,
) -> dict[str, float]:
    """Metrics over all evaluation splits, combined as their format says (FashionIQ: per
    category and averages)."""
    per_group = {
        s.split.category: evaluate_split(
            method, s, device, batch_size=batch_size, options=options, cache=cache
        )
        for s in splits
    }
    return get_format(splits[0].split.dataset).aggregate(per_group)
