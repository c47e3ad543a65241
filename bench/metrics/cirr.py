"""CIRR: R@1/5/10/50, Rsubset@1/2/3 and Rmean, in percent.

Official semantics of the CLIP4Cir evaluation (``compute_cirr_val_metrics``) and the CIRR
test server, on the shared kernels of :mod:`bench.metrics.kernels` (gallery-order
tie-break, see :mod:`bench.metrics`).

CIRR: the gallery is every image of the split and each query's reference is removed from
its ranking; R@1/5/10/50. Rsubset@1/2/3 rank only the query's ``img_set`` members with the
reference excluded (same tie policy); Rmean = (R@5 + Rsubset@1) / 2.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from bench.metrics.kernels import (
    TargetSpec,
    best_ranks,
    best_ranks_from_topk,
    check_len,
    check_scores,
    faiss_topk,
    gallery_index,
    group_matrix,
    member_scores,
    name_matrix,
    name_vector,
    prepare_features,
    recalls,
    subset_ranks,
)

CIRR_KS: tuple[int, ...] = (1, 5, 10, 50)
CIRR_SUBSET_KS: tuple[int, ...] = (1, 2, 3)


def cirr_metrics(
    scores: Any,
    gallery_names: Sequence[str],
    reference_names: Sequence[str],
    target_names: Sequence[TargetSpec],
    group_members: Sequence[Sequence[str]],
) -> dict[str, float]:
    """CIRR R@1/5/10/50, Rsubset@1/2/3 and Rmean (percent) from a score matrix.

    The reference is removed from each query's ranking; subsets rank the query's group
    members (reference included in ``group_members`` as in CIRR ``img_set``, excluded from
    the ranking). Ties: gallery-order tie-break (see :mod:`bench.metrics`).
    """
    arr = check_scores(scores)
    q, g = arr.shape
    check_len("gallery_names", gallery_names, g, "the number of score columns")
    for what, seq in (
        ("reference_names", reference_names),
        ("target_names", target_names),
        ("group_members", group_members),
    ):
        check_len(what, seq, q, "the number of score rows (queries)")
    index = gallery_index(gallery_names)
    refs = name_vector(reference_names, index, "reference")
    targets = name_matrix(target_names, index, "target")
    members, valid = group_matrix(group_members, index, refs)
    out = recalls(best_ranks(arr, targets, refs), CIRR_KS, "R")
    sub_scores = arr[np.arange(q)[:, None], np.maximum(members, 0)]
    out.update(
        recalls(subset_ranks(sub_scores, members, valid, targets), CIRR_SUBSET_KS, "Rsubset")
    )
    out["Rmean"] = (out["R@5"] + out["Rsubset@1"]) / 2
    return out


def cirr_metrics_from_features(
    query_features: Any,
    gallery_features: Any,
    gallery_names: Sequence[str],
    reference_names: Sequence[str],
    target_names: Sequence[TargetSpec],
    group_members: Sequence[Sequence[str]],
    normalize: bool = True,
) -> dict[str, float]:
    """CIRR metrics from features: faiss top-51 for R@K, member dot products for Rsubset@K.

    Same semantics as ``cirr_metrics`` on ``query @ gallery.T`` (L2-normalised first when
    ``normalize``).
    """
    qf, gf = prepare_features(query_features, gallery_features, gallery_names, normalize)
    q = qf.shape[0]
    for what, seq in (
        ("reference_names", reference_names),
        ("target_names", target_names),
        ("group_members", group_members),
    ):
        check_len(what, seq, q, "the number of queries")
    index = gallery_index(gallery_names)
    refs = name_vector(reference_names, index, "reference")
    targets = name_matrix(target_names, index, "target")
    members, valid = group_matrix(group_members, index, refs)
    top = faiss_topk(qf, gf, max(CIRR_KS) + 1)
    out = recalls(best_ranks_from_topk(top, targets, refs), CIRR_KS, "R")
    sub = subset_ranks(member_scores(qf, gf, members), members, valid, targets)
    out.update(recalls(sub, CIRR_SUBSET_KS, "Rsubset"))
    out["Rmean"] = (out["R@5"] + out["Rsubset@1"]) / 2
    return out
