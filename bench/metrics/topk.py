"""Ranked name lists: per-query top-K gallery names and top-K group members.

These build the prediction lists of the test-server submission files (CIRR ``recall``
top-50 and ``recall_subset`` top-3, CIRCO top-50) and own the exclusion of names from a
list (e.g. the CIRR reference). Order: the gallery-order tie-break of :mod:`bench.metrics`,
the same ranking the metrics score, without a full sort of the gallery.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from bench.core.errors import MetricInputError
from bench.metrics.kernels import (
    TargetSpec,
    check_len,
    check_scores,
    faiss_topk,
    gallery_index,
    group_matrix,
    member_scores,
    missing_error,
    name_vector,
    prepare_features,
    target_list,
    topk_stable,
)


def topk_from_scores(
    scores: Any,
    gallery_names: Sequence[str],
    k: int,
    exclude_names: Sequence[TargetSpec | None] | None = None,
) -> list[list[str]]:
    """Per-query top-k gallery names from scores, ``exclude_names`` (per query) left out.

    Uses ``np.argpartition`` and a sort of the candidates only; exact gallery-order
    tie-break (rows with a tie at the cut-off are re-ranked with a stable sort).
    """
    arr = check_scores(scores)
    q, g = arr.shape
    check_len("gallery_names", gallery_names, g, "the number of score columns")
    index = gallery_index(gallery_names)
    excl = _exclusion_matrix(exclude_names, index, q)
    _check_k(k, g, excl)
    cand = topk_stable(arr, min(g, k + excl.shape[1]))
    top = _drop_excluded(cand, excl, k)
    return np.asarray(gallery_names, dtype=object)[top].tolist()


def subset_topk_from_scores(
    scores: Any,
    gallery_names: Sequence[str],
    reference_names: Sequence[str],
    group_members: Sequence[Sequence[str]],
    k: int = 3,
) -> list[list[str]]:
    """Per-query top-k group members (reference excluded) from scores; gallery-order ties."""
    arr = check_scores(scores)
    q, g = arr.shape
    check_len("gallery_names", gallery_names, g, "the number of score columns")
    check_len("reference_names", reference_names, q, "the number of score rows (queries)")
    check_len("group_members", group_members, q, "the number of score rows (queries)")
    index = gallery_index(gallery_names)
    refs = name_vector(reference_names, index, "reference")
    members, valid = group_matrix(group_members, index, refs)
    sub_scores = arr[np.arange(q)[:, None], np.maximum(members, 0)]
    return _subset_topk(sub_scores, members, valid, k, gallery_names)


def topk_names(
    query_features: Any,
    gallery_features: Any,
    gallery_names: Sequence[str],
    k: int,
    exclude_names: Sequence[TargetSpec | None] | None = None,
    *,
    normalize: bool = True,
) -> list[list[str]]:
    """Per-query top-k gallery names by inner product (faiss), ``exclude_names`` left out.

    ``exclude_names`` holds, per query, a name, a sequence of names or None (e.g. the
    reference for a CIRR submission).
    """
    qf, gf = prepare_features(query_features, gallery_features, gallery_names, normalize)
    index = gallery_index(gallery_names)
    excl = _exclusion_matrix(exclude_names, index, qf.shape[0])
    _check_k(k, gf.shape[0], excl)
    cand = faiss_topk(qf, gf, k + excl.shape[1])
    return np.asarray(gallery_names, dtype=object)[_drop_excluded(cand, excl, k)].tolist()


def subset_topk_names(
    query_features: Any,
    gallery_features: Any,
    gallery_names: Sequence[str],
    reference_names: Sequence[str],
    group_members: Sequence[Sequence[str]],
    k: int = 3,
    *,
    normalize: bool = True,
) -> list[list[str]]:
    """Per-query top-k group members (reference excluded) by inner product of features."""
    qf, gf = prepare_features(query_features, gallery_features, gallery_names, normalize)
    q = qf.shape[0]
    check_len("reference_names", reference_names, q, "the number of queries")
    check_len("group_members", group_members, q, "the number of queries")
    index = gallery_index(gallery_names)
    refs = name_vector(reference_names, index, "reference")
    members, valid = group_matrix(group_members, index, refs)
    return _subset_topk(member_scores(qf, gf, members), members, valid, k, gallery_names)


def _subset_topk(
    sub_scores: np.ndarray,
    members: np.ndarray,
    valid: np.ndarray,
    k: int,
    gallery_names: Sequence[str],
) -> list[list[str]]:
    """The k best valid members of each row as names; fewer than k valid members is an error."""
    short = np.flatnonzero(valid.sum(axis=1) < k)
    if short.size:
        raise MetricInputError(
            f"{short.size} quer{'y has' if short.size == 1 else 'ies have'} fewer than {k} "
            f"group members besides the reference; first: query {int(short[0])}"
        )
    order = _subset_order(sub_scores, members, valid)[:, :k]
    top = np.take_along_axis(members, order, axis=1)
    return np.asarray(gallery_names, dtype=object)[top].tolist()


def _subset_order(sub_scores: np.ndarray, members: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Column order of each row: valid members by descending score, ties by gallery order."""
    return np.lexsort((members, -sub_scores, ~valid), axis=-1)


def _exclusion_matrix(
    exclude_names: Sequence[TargetSpec | None] | None, index: Mapping[str, int], q: int
) -> np.ndarray:
    """(queries x max excluded) gallery indices of the names to leave out, padded with -1."""
    if exclude_names is None:
        return np.full((q, 0), -1, dtype=np.int64)
    check_len("exclude_names", exclude_names, q, "the number of queries")
    lists = [[] if e is None else target_list(e) for e in exclude_names]
    width = max((len(x) for x in lists), default=0)
    out = np.full((q, width), -1, dtype=np.int64)
    missing: list[tuple[int, str]] = []
    for i, names in enumerate(lists):
        for j, name in enumerate(names):
            idx = index.get(name)
            if idx is None:
                missing.append((i, name))
            else:
                out[i, j] = idx
    if missing:
        raise missing_error("name to exclude", missing, q, len(index))
    return out


def _check_k(k: int, g: int, excl: np.ndarray) -> None:
    """Raise unless 1 <= k <= the gallery size minus the most names any query excludes."""
    if k < 1:
        raise MetricInputError(f"k must be at least 1, got {k}")
    n_excl = 0
    if excl.size:
        s = np.sort(excl, axis=1)
        first = np.ones_like(s, dtype=bool)
        first[:, 1:] = s[:, 1:] != s[:, :-1]
        n_excl = int(np.count_nonzero(first & (s >= 0), axis=1).max())
    if k > g - n_excl:
        raise MetricInputError(f"k={k} exceeds the {g} gallery images minus {n_excl} excluded")


def _drop_excluded(cand: np.ndarray, excl: np.ndarray, k: int) -> np.ndarray:
    """First k candidates of each row that are not excluded (candidates in rank order)."""
    if excl.shape[1] == 0:
        return cand[:, :k]
    drop = (cand[:, :, None] == excl[:, None, :]).any(axis=2)
    order = np.argsort(drop, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(cand, order, axis=1)
