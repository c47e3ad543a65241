"""CIRCO: mAP@5/10/25/50 over multiple ground truths, in percent.

Official semantics (miccunifi/CIRCO src/evaluation.py, the evaluation server's code, and
SEARLE's src/validate.py circo_compute_val_metrics): the gallery is the whole COCO 2017
unlabeled set and the ranking is the top 50 of ALL of it -- the reference image is NOT
removed (it is never a ground truth). For each query with ground truths G,

    AP@k = sum_{i <= k, item i in G} precision@i / min(|G|, k),   mAP@k = mean over queries,

precision@i = (ground truths among the first i) / i. Predictions must be distinct. Ties:
the gallery-order tie-break of :mod:`bench.metrics`, on the shared kernels of
:mod:`bench.metrics.kernels`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from bench.errors import MetricInputError
from bench.metrics.kernels import (
    MISS,
    SHOW,
    best_ranks,
    best_ranks_from_topk,
    check_len,
    check_scores,
    faiss_topk,
    gallery_index,
    name_matrix,
    name_vector,
    prepare_features,
)

CIRCO_KS: tuple[int, ...] = (5, 10, 25, 50)


def _gt_matrix(gt_names: Sequence[Sequence[str]], index: Mapping[str, int]) -> np.ndarray:
    """(queries x max #gt) gallery indices padded with -1; unknown or repeated gts are errors."""
    if any(isinstance(g, str) for g in gt_names):
        raise MetricInputError("gt_names must hold one list of names per query, not str")
    repeated = [q for q, g in enumerate(gt_names) if len(set(g)) != len(g)]
    if repeated:
        q = repeated[0]
        dups = sorted({n for n in gt_names[q] if list(gt_names[q]).count(n) > 1})
        raise MetricInputError(
            f"{len(repeated)} quer{'y has' if len(repeated) == 1 else 'ies have'} repeated "
            f"ground truths; first: query {q}: {dups[:SHOW]}"
        )
    return name_matrix(gt_names, index, "ground truth")


def _circo_map(ranks: np.ndarray, n_gt: np.ndarray, ks: Iterable[int]) -> dict[str, float]:
    """mAP@k (percent) from each query's 0-based ground-truth ranks (distinct; MISS = absent).

    With the ranks sorted, the j-th retrieved ground truth (1-based) at rank r contributes
    precision j / (r + 1) -- the official cumulative-sum formula, without building lists.
    """
    r = np.sort(ranks, axis=1)
    hit = r < MISS
    pos = np.where(hit, r, 0).astype(np.float64) + 1.0
    prec = np.arange(1, r.shape[1] + 1, dtype=np.float64)[None, :] / pos
    out: dict[str, float] = {}
    for k in ks:
        ap = np.where(hit & (r < k), prec, 0.0).sum(axis=1) / np.minimum(n_gt, k)
        out[f"mAP@{k}"] = float(100.0 * ap.mean())
    return out


def _circo_refs(
    reference_names: Sequence[str] | None,
    index: Mapping[str, int],
    q: int,
    drop_reference: bool,
) -> np.ndarray | None:
    """Reference indices when ``drop_reference`` (else None); a given list must match ``q``."""
    if reference_names is not None:
        check_len("reference_names", reference_names, q, "the number of queries")
    if not drop_reference:
        return None
    if reference_names is None:
        raise MetricInputError("drop_reference=True needs reference_names")
    return name_vector(reference_names, index, "reference")


def circo_metrics(
    scores: Any,
    gallery_names: Sequence[str],
    reference_names: Sequence[str] | None,
    gt_names: Sequence[Sequence[str]],
    *,
    drop_reference: bool = False,
) -> dict[str, float]:
    """CIRCO mAP@5/10/25/50 (percent) from a (queries x gallery) score matrix.

    ``gt_names`` holds each query's ground truths (``gt_img_ids``). Official semantics: the
    reference stays in the ranking (``drop_reference=True`` removes it, an unofficial
    variant); AP@k is normalised by min(#gt, k). Ties: gallery-order tie-break.
    """
    arr = check_scores(scores)
    q, g = arr.shape
    check_len("gallery_names", gallery_names, g, "the number of score columns")
    check_len("gt_names", gt_names, q, "the number of score rows (queries)")
    index = gallery_index(gallery_names)
    gts = _gt_matrix(gt_names, index)
    refs = _circo_refs(reference_names, index, q, drop_reference)
    ranks = np.column_stack([best_ranks(arr, gts[:, m : m + 1], refs) for m in range(gts.shape[1])])
    return _circo_map(ranks, (gts >= 0).sum(axis=1), CIRCO_KS)


def circo_metrics_from_features(
    query_features: Any,
    gallery_features: Any,
    gallery_names: Sequence[str],
    reference_names: Sequence[str] | None,
    gt_names: Sequence[Sequence[str]],
    *,
    drop_reference: bool = False,
    normalize: bool = True,
) -> dict[str, float]:
    """CIRCO mAP@k from features via a faiss top-50 search (top-51 when dropping the reference).

    Same semantics as ``circo_metrics`` on ``query @ gallery.T`` (L2-normalised first when
    ``normalize``).
    """
    qf, gf = prepare_features(query_features, gallery_features, gallery_names, normalize)
    q = qf.shape[0]
    check_len("gt_names", gt_names, q, "the number of queries")
    index = gallery_index(gallery_names)
    gts = _gt_matrix(gt_names, index)
    refs = _circo_refs(reference_names, index, q, drop_reference)
    top = faiss_topk(qf, gf, max(CIRCO_KS) + int(drop_reference))
    ranks = np.column_stack(
        [best_ranks_from_topk(top, gts[:, m : m + 1], refs) for m in range(gts.shape[1])]
    )
    return _circo_map(ranks, (gts >= 0).sum(axis=1), CIRCO_KS)


def circo_metrics_from_rankings(
    rankings: Sequence[Sequence[str]], gt_names: Sequence[Sequence[str]]
) -> dict[str, float]:
    """CIRCO mAP@k of ranked prediction lists (e.g. a submission's top 50), as the server does.

    A ground truth ranked beyond a list's end counts as not retrieved; repeated
    predictions in a list are an error (as in the official evaluation).
    """
    check_len("rankings", rankings, len(gt_names), "the number of gt_names entries")
    if not rankings:
        raise MetricInputError("rankings has no queries")
    for what, lists in (("rankings", rankings), ("gt_names", gt_names)):
        if any(isinstance(x, str) for x in lists):
            raise MetricInputError(f"{what} must hold one list of names per query, not str")
    width = max(1, max(len(g) for g in gt_names))
    ranks = np.full((len(rankings), width), MISS, dtype=np.int64)
    n_gt = np.empty(len(rankings), dtype=np.int64)
    for q, (ranking, gts) in enumerate(zip(rankings, gt_names, strict=True)):
        if len(set(ranking)) != len(ranking):
            raise MetricInputError(f"query {q}: the ranking repeats predictions")
        if not gts or len(set(gts)) != len(gts):
            raise MetricInputError(f"query {q}: ground truths must be a non-empty distinct list")
        position = {name: i for i, name in enumerate(ranking)}
        for j, name in enumerate(gts):
            ranks[q, j] = position.get(name, MISS)
        n_gt[q] = len(gts)
    return _circo_map(ranks, n_gt, CIRCO_KS)
