"""Slow, literal reference implementations of the CIR metrics — for tests and benchmarks only.

They follow the official CLIP4Cir evaluation code (``compute_fiq_val_metrics`` /
``compute_cirr_val_metrics``) step by step: a full argsort of every query's scores, the
gallery names gathered in sorted order, the reference removed by masking the sorted
names, labels from string comparisons, and the subset read off the sorted names that are
group members. Two deliberate differences: the sort is ``np.argsort(-scores,
kind="stable")`` (CLIP4Cir sorts ``1 - cosine`` with torch's unstable argsort) so that ties
follow the gallery-order tie-break of ``bench.metrics``; and queries are processed in
blocks of ``chunk`` rows to bound memory. A target entry may be a sequence of names (any
one counts). Use ``bench.metrics`` everywhere else.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from bench.core.errors import MetricInputError


def _scores(scores: Any) -> np.ndarray:
    if hasattr(scores, "detach"):
        scores = scores.detach().cpu().float().numpy()
    return np.asarray(scores)


def _padded(entries: Sequence[str | Sequence[str]], fill: str) -> np.ndarray:
    lists = [[e] if isinstance(e, str) else list(e) for e in entries]
    width = max(len(x) for x in lists)
    return np.array([x + [fill] * (width - len(x)) for x in lists])


def _sentinel(gallery: Sequence[str]) -> str:
    """A padding name absent from the gallery (numpy strips trailing NULs, so no "\\0")."""
    s = "<pad>"
    names = set(gallery)
    while s in names:
        s += "#"
    return s


def _check_present(names: np.ndarray, gallery: Sequence[str], fill: str, what: str) -> None:
    known = set(gallery)
    for q, row in enumerate(names):
        for n in row:
            if n != fill and n not in known:
                raise MetricInputError(f"query {q}: {what} {n!r} is not in the gallery")


def fashioniq_metrics_naive(
    scores: Any,
    gallery_names: Sequence[str],
    target_names: Sequence[str | Sequence[str]],
    *,
    reference_names: Sequence[str] | None = None,
    drop_reference: bool = False,
    chunk: int = 256,
) -> dict[str, float]:
    """Literal CLIP4Cir FashionIQ R@10 / R@50 (percent); slow reference for tests."""
    scores = _scores(scores)
    index_names = np.array(gallery_names)
    fill = _sentinel(gallery_names)
    targets = _padded(target_names, fill)
    _check_present(targets, gallery_names, fill, "target")
    if drop_reference and reference_names is None:
        raise MetricInputError("drop_reference=True needs reference_names")
    n_q, n_g = scores.shape
    hits = {10: 0, 50: 0}
    for start in range(0, n_q, chunk):
        distances = -scores[start : start + chunk]
        n = distances.shape[0]
        sorted_indices = np.argsort(distances, axis=-1, kind="stable")
        sorted_index_names = index_names[sorted_indices]
        if drop_reference:
            refs = np.array(reference_names[start : start + chunk])
            reference_mask = sorted_index_names != np.repeat(refs, n_g).reshape(n, -1)
            sorted_index_names = sorted_index_names[reference_mask].reshape(n, n_g - 1)
        labels = np.zeros(sorted_index_names.shape, dtype=bool)
        for col in targets[start : start + chunk].T:
            labels |= sorted_index_names == np.repeat(col, labels.shape[1]).reshape(n, -1)
        for k in hits:
            hits[k] += int(labels[:, :k].any(axis=1).sum())
    return {f"R@{k}": 100.0 * h / n_q for k, h in hits.items()}


def cirr_metrics_naive(
    scores: Any,
    gallery_names: Sequence[str],
    reference_names: Sequence[str],
    target_names: Sequence[str | Sequence[str]],
    group_members: Sequence[Sequence[str]],
    *,
    chunk: int = 256,
) -> dict[str, float]:
    """Literal CLIP4Cir CIRR R@1/5/10/50, Rsubset@1/2/3, Rmean (percent); slow reference."""
    scores = _scores(scores)
    index_names = np.array(gallery_names)
    fill = _sentinel(gallery_names)
    targets = _padded(target_names, fill)
    groups = _padded(group_members, fill)
    _check_present(targets, gallery_names, fill, "target")
    _check_present(groups, gallery_names, fill, "group member")
    _check_present(np.array(reference_names)[:, None], gallery_names, fill, "reference")
    n_q, n_g = scores.shape
    hits = {1: 0, 5: 0, 10: 0, 50: 0}
    group_hits = {1: 0, 2: 0, 3: 0}
    for start in range(0, n_q, chunk):
        distances = -scores[start : start + chunk]
        n = distances.shape[0]
        sorted_indices = np.argsort(distances, axis=-1, kind="stable")
        sorted_index_names = index_names[sorted_indices]
        # Delete the reference image from the results
        refs = np.array(reference_names[start : start + chunk])
        reference_mask = sorted_index_names != np.repeat(refs, n_g).reshape(n, -1)
        sorted_index_names = sorted_index_names[reference_mask].reshape(n, n_g - 1)
        # Ground-truth labels wrt the predictions
        labels = np.zeros(sorted_index_names.shape, dtype=bool)
        for col in targets[start : start + chunk].T:
            labels |= sorted_index_names == np.repeat(col, n_g - 1).reshape(n, -1)
        # Subset predictions: the sorted names that are members of the query's group
        group = groups[start : start + chunk]
        group_mask = (sorted_index_names[..., None] == group[:, None, :]).sum(-1).astype(bool)
        per_row = group_mask.sum(axis=1)
        for k in hits:
            hits[k] += int(labels[:, :k].any(axis=1).sum())
        if (per_row == per_row[0]).all():
            group_labels = labels[group_mask].reshape(n, -1)
            for k in group_hits:
                group_hits[k] += int(group_labels[:, :k].any(axis=1).sum())
        else:  # groups of different sizes: the same selection, row by row
            for i in range(n):
                row = labels[i][group_mask[i]]
                for k in group_hits:
                    group_hits[k] += bool(row[:k].any())
    out = {f"R@{k}": 100.0 * h / n_q for k, h in hits.items()}
    out.update({f"Rsubset@{k}": 100.0 * h / n_q for k, h in group_hits.items()})
    out["Rmean"] = (out["R@5"] + out["Rsubset@1"]) / 2
    return out
