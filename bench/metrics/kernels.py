"""Shared metric kernels: input checks, gallery matrices, rank and top-K kernels.

Every format module (``fashioniq``, ``cirr``, ``circo``, ``topk``) is built on these. They
implement the gallery-order tie-break described in :mod:`bench.metrics` (exactly a stable
sort of descending scores) without sorting the gallery: ranks are counted directly, top-K
uses ``np.argpartition`` or a faiss ``IndexFlatIP`` search with the cut-off ties re-scored.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence, Sized
from typing import Any

import numpy as np

from bench.core.errors import MetricInputError

#: A target entry: one gallery name or a sequence of names (CIRR soft targets; any counts).
TargetSpec = str | Sequence[str]

#: Rank of a target that is not retrievable (removed from the ranking, or beyond the top-K).
MISS = np.iinfo(np.int64).max
#: Examples quoted in an error message.
SHOW = 5
_CHUNK_ELEMS = 1 << 18  # score elements per block in the rank kernel (cache-sized temporaries)


# --------------------------------------------------------------------------- input checks


def _to_numpy(x: Any) -> np.ndarray:
    """A numpy view of a numpy array or torch tensor (torch not imported)."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):
        t = x.detach().cpu()
        try:
            return t.numpy()
        except TypeError:  # bfloat16 and other dtypes numpy lacks
            return t.float().numpy()
    return np.asarray(x)


def check_scores(scores: Any) -> np.ndarray:
    """Scores as a 2-D real numpy array with at least one query and no NaN."""
    arr = _to_numpy(scores)
    if arr.ndim != 2:
        raise MetricInputError(
            f"scores must be 2-D (queries x gallery), got shape {tuple(arr.shape)}"
        )
    if arr.dtype == np.bool_ or not (
        np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)
    ):
        raise MetricInputError(f"scores must be real numbers, got dtype {arr.dtype}")
    if np.issubdtype(arr.dtype, np.unsignedinteger):
        arr = arr.astype(np.int64)
    if arr.shape[0] == 0:
        raise MetricInputError("scores has no queries (0 rows)")
    if np.issubdtype(arr.dtype, np.floating):
        nan = np.isnan(arr)
        if nan.any():
            rows = np.flatnonzero(nan.any(axis=1))
            raise MetricInputError(
                f"scores contain {int(nan.sum())} NaN value(s) in {rows.size} "
                f"quer{'y' if rows.size == 1 else 'ies'}; first: query {int(rows[0])}"
            )
    return arr


def check_len(what: str, seq: Sized, n: int, against: str) -> None:
    """Raise unless ``seq`` has ``n`` entries (the message names both sides)."""
    if len(seq) != n:
        raise MetricInputError(f"{what} has {len(seq)} entries but {against} is {n}")


def gallery_index(gallery_names: Sequence[str]) -> dict[str, int]:
    """Name -> position; duplicate names are an error."""
    index = {name: i for i, name in enumerate(gallery_names)}
    if len(index) != len(gallery_names):
        dups = [n for n, c in Counter(gallery_names).items() if c > 1]
        raise MetricInputError(
            f"gallery_names has {len(dups)} duplicate name(s) "
            f"({len(gallery_names)} names, {len(index)} distinct); first: {dups[:SHOW]}"
        )
    return index


def target_list(t: TargetSpec) -> list[str]:
    """A target entry as a list of names."""
    return [t] if isinstance(t, str) else list(t)


def missing_error(
    what: str, missing: list[tuple[int, str]], n_queries: int, n_gallery: int
) -> MetricInputError:
    """The error for names not in the gallery: how many queries, the first few names."""
    n_q = len({q for q, _ in missing})
    first = "; ".join(f"query {q}: {name!r}" for q, name in missing[:SHOW])
    return MetricInputError(
        f"{n_q} of {n_queries} quer{'y' if n_queries == 1 else 'ies'} have a {what} that is "
        f"not in the gallery ({n_gallery} images); first: {first}"
    )


def name_matrix(entries: Sequence[TargetSpec], index: Mapping[str, int], what: str) -> np.ndarray:
    """(queries x max entries) gallery indices, padded with -1; unknown names are an error."""
    lists = [target_list(e) for e in entries]
    empty = [q for q, names in enumerate(lists) if not names]
    if empty:
        raise MetricInputError(
            f"{len(empty)} quer{'y has' if len(empty) == 1 else 'ies have'} an empty {what} "
            f"list; first: query {empty[0]}"
        )
    width = max(len(names) for names in lists)
    out = np.full((len(lists), width), -1, dtype=np.int64)
    missing: list[tuple[int, str]] = []
    for q, names in enumerate(lists):
        for j, name in enumerate(names):
            i = index.get(name)
            if i is None:
                missing.append((q, name))
            else:
                out[q, j] = i
    if missing:
        raise missing_error(what, missing, len(lists), len(index))
    return out


def name_vector(names: Sequence[str], index: Mapping[str, int], what: str) -> np.ndarray:
    """Gallery index of each name; unknown names are an error naming the queries."""
    out = np.empty(len(names), dtype=np.int64)
    missing: list[tuple[int, str]] = []
    for q, name in enumerate(names):
        i = index.get(name)
        if i is None:
            missing.append((q, name))
            out[q] = -1
        else:
            out[q] = i
    if missing:
        raise missing_error(what, missing, len(names), len(index))
    return out


def group_matrix(
    group_members: Sequence[Sequence[str]], index: Mapping[str, int], refs: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Padded member indices and a validity mask: pads, the reference and repeats excluded."""
    if any(isinstance(g, str) for g in group_members):
        raise MetricInputError("group_members must hold one list of names per query, not str")
    width = max((len(g) for g in group_members), default=0)
    idx = np.full((len(group_members), max(width, 1)), -1, dtype=np.int64)
    missing: list[tuple[int, str]] = []
    for q, members in enumerate(group_members):
        for j, name in enumerate(members):
            i = index.get(name)
            if i is None:
                missing.append((q, name))
            else:
                idx[q, j] = i
    if missing:
        raise missing_error("group member", missing, len(group_members), len(index))
    valid = (idx >= 0) & (idx != refs[:, None])
    s = idx.shape[1]
    earlier = np.tril(np.ones((s, s), dtype=bool), k=-1)  # [j, i]: i comes before j
    repeat = ((idx[:, :, None] == idx[:, None, :]) & earlier[None]).any(axis=2)
    return idx, valid & ~repeat


def _features(x: Any, what: str) -> np.ndarray:
    """Features as a contiguous finite 2-D float32 array."""
    arr = _to_numpy(x)
    if arr.ndim != 2:
        raise MetricInputError(f"{what} must be 2-D (items x dim), got shape {tuple(arr.shape)}")
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    if not np.isfinite(arr).all():
        raise MetricInputError(f"{what} contain NaN or infinite values")
    return arr


def prepare_features(
    query_features: Any, gallery_features: Any, gallery_names: Sequence[str], normalize: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Checked float32 query / gallery features (L2-normalised when ``normalize``), contiguous."""
    qf = _features(query_features, "query_features")
    gf = _features(gallery_features, "gallery_features")
    if qf.shape[1] != gf.shape[1]:
        raise MetricInputError(
            f"query_features have dim {qf.shape[1]} but gallery_features have dim {gf.shape[1]}"
        )
    if qf.shape[0] == 0:
        raise MetricInputError("query_features has no queries (0 rows)")
    check_len("gallery_names", gallery_names, gf.shape[0], "the number of gallery feature rows")
    if normalize:
        qf = qf / np.maximum(np.linalg.norm(qf, axis=1, keepdims=True), 1e-12)
        gf = gf / np.maximum(np.linalg.norm(gf, axis=1, keepdims=True), 1e-12)
    return np.ascontiguousarray(qf), np.ascontiguousarray(gf)


# --------------------------------------------------------------------------- rank kernels


def max_similarity(queries: Any, gallery: Any, *, chunk_elems: int = 1 << 24) -> np.ndarray:
    """Exact scores of multi-vector targets: ``scores[q, g] = max_t queries[q] . gallery[g, t]``
    for L2-normalised queries ``(Q, D)`` and a gallery of token sets ``(G, T, D)`` (SPRC's
    query tokens), computed over blocks of gallery images so that no ``Q x G x T`` array is
    ever whole in memory. The result feeds the score-based metric functions (same tie
    policy as every other path)."""
    qf = _features(queries, "query_features")
    gf = np.asarray(gallery, dtype=np.float32)
    if gf.ndim != 3 or gf.shape[2] != qf.shape[1]:
        raise MetricInputError(
            f"gallery of token sets must have shape (G, T, {qf.shape[1]}), got {gf.shape}"
        )
    g, t, d = gf.shape
    block = max(1, chunk_elems // max(1, len(qf) * t))
    out = np.empty((len(qf), g), dtype=np.float32)
    for start in range(0, g, block):
        part = gf[start : start + block]
        scores = qf @ part.reshape(-1, d).T  # (Q, n * T)
        out[:, start : start + len(part)] = scores.reshape(len(qf), len(part), t).max(axis=2)
    return out


def _rank_of(scores: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """0-based rank of gallery item ``cols[q]`` in row ``q`` under the gallery-order tie-break."""
    n, g = scores.shape
    out = np.empty(n, dtype=np.int64)
    step = max(1, _CHUNK_ELEMS // max(g, 1))
    positions = np.arange(g)
    for a in range(0, n, step):
        blk = scores[a : a + step]
        c = cols[a : a + step]
        st = blk[np.arange(blk.shape[0]), c][:, None]
        gt = np.count_nonzero(blk > st, axis=1)
        ge = np.count_nonzero(blk >= st, axis=1)
        tied = np.flatnonzero(ge - gt > 1)  # another item has exactly the target's score
        if tied.size:
            before = (blk[tied] == st[tied]) & (positions[None, :] < c[tied, None])
            gt[tied] += np.count_nonzero(before, axis=1)
        out[a : a + step] = gt
    return out


def best_ranks(scores: np.ndarray, targets: np.ndarray, refs: np.ndarray | None) -> np.ndarray:
    """Best rank over each query's targets; the reference (when given) removed from the ranking."""
    q = scores.shape[0]
    rows = np.arange(q)
    best = np.full(q, MISS, dtype=np.int64)
    for m in range(targets.shape[1]):
        t = targets[:, m]
        ok = t >= 0
        if refs is not None:
            ok &= t != refs
        sel = rows[ok]
        if sel.size == 0:
            continue
        sub = scores if sel.size == q else scores[sel]
        r = _rank_of(sub, t[sel])
        if refs is not None:
            rr = refs[sel]
            s_t = scores[sel, t[sel]]
            s_r = scores[sel, rr]
            r -= (s_r > s_t) | ((s_r == s_t) & (rr < t[sel]))
        best[sel] = np.minimum(best[sel], r)
    return best


def subset_ranks(
    sub_scores: np.ndarray, members: np.ndarray, valid: np.ndarray, targets: np.ndarray
) -> np.ndarray:
    """Best rank of each query's targets among its valid group members (gallery-order ties)."""
    q = sub_scores.shape[0]
    rows = np.arange(q)
    best = np.full(q, MISS, dtype=np.int64)
    for m in range(targets.shape[1]):
        t = targets[:, m]
        pos = (members == t[:, None]) & valid & (t[:, None] >= 0)
        has = pos.any(axis=1)
        s_t = sub_scores[rows, pos.argmax(axis=1)][:, None]
        ahead = (sub_scores > s_t) | ((sub_scores == s_t) & (members < t[:, None]))
        r = np.count_nonzero(ahead & valid, axis=1)
        best = np.where(has, np.minimum(best, r), best)
    return best


def hits(ranks: np.ndarray, ks: Iterable[int], prefix: str) -> dict[str, np.ndarray]:
    """``{prefix}@k`` per query: whether its 0-based rank is below k (bool, query order)."""
    return {f"{prefix}@{k}": ranks < k for k in ks}


def percent(values: np.ndarray) -> float:
    """A metric from its per-query values, in percent: the share of hits (bool values) or
    the mean of per-query scores in [0, 1] (CIRCO's AP@k). Every metric of
    :mod:`bench.metrics` is this of its per-query values, so a run's per-query values
    reproduce its metrics exactly."""
    n = values.shape[0]
    if values.dtype == np.bool_:
        return float(100.0 * np.count_nonzero(values) / n)
    return float(100.0 * values.mean())


def percents(values: Mapping[str, np.ndarray]) -> dict[str, float]:
    """:func:`percent` of every metric's per-query values (same keys, same order)."""
    return {name: percent(v) for name, v in values.items()}


def recalls(ranks: np.ndarray, ks: Iterable[int], prefix: str) -> dict[str, float]:
    """``{prefix}@k`` in percent: the share of queries whose 0-based rank is below k."""
    return percents(hits(ranks, ks, prefix))


# --------------------------------------------------------------------------- top-K kernels


def topk_stable(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of each row's k best scores, in stable descending order (no full sort)."""
    g = scores.shape[1]
    if k >= g:
        return np.argsort(-scores, axis=1, kind="stable")
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    cand = np.take_along_axis(scores, part, axis=1)
    top = np.take_along_axis(part, np.lexsort((part, -cand), axis=-1), axis=1)
    kth = np.take_along_axis(scores, top[:, -1:], axis=1)
    boundary_tie = np.flatnonzero(np.count_nonzero(scores >= kth, axis=1) > k)
    if boundary_tie.size:
        top[boundary_tie] = np.argsort(-scores[boundary_tie], axis=1, kind="stable")[:, :k]
    return top


def faiss_topk(qf: np.ndarray, gf: np.ndarray, k: int) -> np.ndarray:
    """Top-k gallery indices per query by inner product, in gallery-order tie-break order."""
    import faiss

    g = gf.shape[0]
    if k >= g:
        return topk_stable(qf @ gf.T, g)
    index = faiss.IndexFlatIP(gf.shape[1])
    index.add(gf)
    dist, idx = index.search(qf, k + 1)  # one extra to detect ties at the cut-off
    order = np.lexsort((idx, -dist), axis=-1)
    top = np.take_along_axis(idx, order, axis=1)[:, :k].astype(np.int64)
    boundary_tie = np.flatnonzero(dist[:, k - 1] == dist[:, k])
    if boundary_tie.size:
        top[boundary_tie] = topk_stable(qf[boundary_tie] @ gf.T, k)
    return top


def best_ranks_from_topk(
    top: np.ndarray, targets: np.ndarray, refs: np.ndarray | None
) -> np.ndarray:
    """Best target rank within ordered candidates (reference removed); absent -> miss."""
    best = np.full(top.shape[0], MISS, dtype=np.int64)
    if refs is not None:
        ref_hit = top == refs[:, None]
        ref_pos = np.where(ref_hit.any(axis=1), ref_hit.argmax(axis=1), top.shape[1])
    for m in range(targets.shape[1]):
        t = targets[:, m]
        hit = (top == t[:, None]) & (t[:, None] >= 0)
        found = hit.any(axis=1)
        pos = hit.argmax(axis=1)
        if refs is not None:
            found &= t != refs
            pos = pos - (ref_pos < pos)
        best = np.where(found, np.minimum(best, pos), best)
    return best


def member_scores(qf: np.ndarray, gf: np.ndarray, members: np.ndarray) -> np.ndarray:
    """(queries x members) dot products of each query with its group members' features."""
    return np.einsum("qd,qsd->qs", qf, gf[np.maximum(members, 0)], optimize=True)
