"""Evaluating a CIR method on a split with its format's official metrics."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from bench.core.arrays import ArrayCache
from bench.core.errors import CirbenchError
from bench.evaluation.encode import SplitImages, encode_cached, query_features
from bench.formats import EvalOptions, get_format
from bench.metrics import QueryValues
from bench.stats import RunQueryValues, queries_digest
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
    [values] = split_values_under(
        method, images, device, [options or EvalOptions()], batch_size=batch_size, cache=cache
    )
    return get_format(images.split.dataset).group_metrics(values.metrics())


def split_values_under(
    method: CIRMethod,
    images: SplitImages,
    device: torch.device,
    options: Sequence[EvalOptions],
    *,
    batch_size: int = 256,
    cache: ArrayCache | None = None,
) -> list[QueryValues]:
    """One split's per-query metric values under each of several scoring options, encoded
    once."""
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
    fmt, targets = get_format(split.dataset), encoded.target_matrix()
    return [fmt.split_query_values(split, queries, targets, o, images.rows) for o in options]


def evaluate_run(
    method: CIRMethod,
    splits: Sequence[SplitImages],
    device: torch.device,
    *,
    batch_size: int = 256,
    options: EvalOptions | None = None,
    cache: ArrayCache | None = None,
    also: Sequence[EvalOptions] = (),
) -> RunQueryValues:
    """Per-query values of every evaluation split (group) under the scoring options and
    ``also`` (other protocols); their :meth:`~RunQueryValues.metrics` are the run's."""
    every = [options or EvalOptions(), *also]
    per_split = {
        s.split.category: split_values_under(
            method, s, device, every, batch_size=batch_size, cache=cache
        )
        for s in splits
    }
    fmt = get_format(splits[0].split.dataset)
    names = [fmt.protocol_name(o) for o in every]
    if len(set(names)) != len(names):
        raise CirbenchError(f"{fmt.title}: scoring options name a protocol twice: {names}")
    protocols = {
        name: {group: values[index] for group, values in per_split.items()}
        for index, name in enumerate(names)
    }
    digests = {s.split.category: queries_digest(s.split.queries) for s in splits}
    return RunQueryValues(fmt.name, names[0], protocols, digests)


def evaluate_splits(
    method: CIRMethod,
    splits: Sequence[SplitImages],
    device: torch.device,
    *,
    batch_size: int = 256,
    options: EvalOptions | None = None,
    cache: ArrayCache | None = None,
    also: Sequence[EvalOptions] = (),
) -> dict[str, float]:
    """Metrics over all evaluation splits, combined as their format says (FashionIQ: per
    category and averages). ``also``: other scoring options whose metrics are added with
    their protocol's name as prefix (``full_gallery.Rmean``)."""
    return evaluate_run(
        method,
        splits,
        device,
        batch_size=batch_size,
        options=options,
        cache=cache,
        also=also,
    ).metrics()
