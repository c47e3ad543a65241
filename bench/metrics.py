"""Official CIR metric semantics for FashionIQ and CIRR, vectorised; results in percent (0-100).

Scores are (queries x gallery) similarities, higher is better, as a numpy array or a torch
tensor (converted with ``.detach().cpu().numpy()``; torch is never imported here).

Tie policy ("gallery-order tie-break"): the ranking is exactly the one a stable sort of
descending scores gives (``np.argsort(-scores, kind="stable")``): among equal scores the
image listed first in the gallery ranks first. The rank of a target is computed directly,
without sorting: ``rank = #(score > s_t) + #(score == s_t and index < idx_t)`` over the
images still in the ranking, which costs O(queries x gallery) and no sort. A query hits at K
when that 0-based rank is below K.

Targets: an entry of ``target_names`` is one name or a sequence of names (CIRR soft
targets); any of them counts and the best-ranked one decides. A target equal to a reference
that is removed from the ranking can never be retrieved (counts as a miss, as in the
literal CLIP4Cir code).

FashionIQ protocols (``FASHIONIQ_PROTOCOLS``), per category on the val split:

* ``"full_gallery"`` (DEFAULT): gallery = every image of the category's val split (dress
  3817, shirt 6346, toptee 5373), reference image KEPT in the ranking. Protocol of
  CLIP4Cir, SPRC, Bi-BLIP4CIR, the dataset's starter kit and the SPN tables.
* ``"drop_reference"``: the same gallery, each query's reference removed from its ranking
  (SPN's CLIP4CIR and zero-shot evaluation).
* ``"triplet_gallery"``: TG-CIR's own code: gallery = only the images that occur in val
  triplets as candidate or target (2628 / 3089 / 2902), reference removed.

The three protocols give different numbers and are NOT comparable with each other; only
``full_gallery`` is comparable with the published SPN tables.

CIRR: the gallery is every image of the split and each query's reference is removed from
its ranking; R@1/5/10/50. Rsubset@1/2/3 rank only the query's ``img_set`` members with the
reference excluded (same tie policy); Rmean = (R@5 + Rsubset@1) / 2.

The ``*_from_features`` entries search the top (max K + 1) images with ``faiss.IndexFlatIP``
and never sort the whole gallery. The candidates are re-ordered by the same tie policy
(faiss lists equal scores in no useful order), and the few queries with a tie at the
cut-off (the (k+1)-th score equals the k-th) are re-scored exactly against the whole
gallery. They agree with the score-based entries up to floating-point rounding of the
dot products (faiss and numpy may round the same dot product differently).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence, Sized
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Literal

import numpy as np

from bench.core.errors import MetricInputError

FASHIONIQ_KS: tuple[int, ...] = (10, 50)
CIRR_KS: tuple[int, ...] = (1, 5, 10, 50)
CIRR_SUBSET_KS: tuple[int, ...] = (1, 2, 3)

TargetSpec = str | Sequence[str]

_MISS = np.iinfo(np.int64).max  # rank of a target that is not retrievable
_CHUNK_ELEMS = 1 << 18  # score elements per block in the rank kernel (cache-sized temporaries)
_SHOW = 5  # examples quoted in an error message


# --------------------------------------------------------------------------- protocols


@dataclass(frozen=True)
class FashionIQProtocol:
    """One FashionIQ evaluation protocol: which gallery and whether the reference is dropped."""

    name: str
    gallery: Literal["split", "triplets"]
    drop_reference: bool
    used_by: str
    description: str


FASHIONIQ_PROTOCOLS: Mapping[str, FashionIQProtocol] = MappingProxyType(
    {
        "full_gallery": FashionIQProtocol(
            name="full_gallery",
            gallery="split",
            drop_reference=False,
            used_by="CLIP4Cir, SPRC, Bi-BLIP4CIR, FashionIQ starter kit, SPN tables",
            description="all images of the category's val split, reference kept (default)",
        ),
        "drop_reference": FashionIQProtocol(
            name="drop_reference",
            gallery="split",
            drop_reference=True,
            used_by="SPN's CLIP4CIR and zero-shot evaluation",
            description="all images of the category's val split, reference removed",
        ),
        "triplet_gallery": FashionIQProtocol(
            name="triplet_gallery",
            gallery="triplets",
            drop_reference=True,
            used_by="TG-CIR's own code",
            description="only images in val triplets (candidate or target), reference removed",
        ),
    }
)
DEFAULT_FASHIONIQ_PROTOCOL = "full_gallery"


def get_fashioniq_protocol(protocol: str | FashionIQProtocol) -> FashionIQProtocol:
    """The protocol object for a name (or the object itself)."""
    if isinstance(protocol, FashionIQProtocol):
        return protocol
    try:
        return FASHIONIQ_PROTOCOLS[protocol]
    except KeyError:
        known = ", ".join(sorted(FASHIONIQ_PROTOCOLS))
        raise MetricInputError(f"unknown FashionIQ protocol {protocol!r}; known: {known}") from None


def fashioniq_protocol_gallery(
    protocol: str | FashionIQProtocol,
    split_gallery: Sequence[str],
    references: Iterable[str],
    targets: Iterable[TargetSpec],
) -> list[str]:
    """The gallery a FashionIQ protocol ranks, in ``split_gallery`` order.

    ``references`` / ``targets`` are the val triplets' candidates and targets; they matter
    only for ``"triplet_gallery"``, whose images must all be in ``split_gallery``.
    """
    proto = get_fashioniq_protocol(protocol)
    if proto.gallery == "split":
        return list(split_gallery)
    used: set[str] = set(references)
    for t in targets:
        used.update(_target_list(t))
    in_split = set(split_gallery)
    missing = sorted(used - in_split)
    if missing:
        raise MetricInputError(
            f"{len(missing)} triplet image(s) are not in the split gallery "
            f"({len(in_split)} images); first: {missing[:_SHOW]}"
        )
    return [n for n in split_gallery if n in used]


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


def _check_scores(scores: Any) -> np.ndarray:
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


def _check_len(what: str, seq: Sized, n: int, against: str) -> None:
    if len(seq) != n:
        raise MetricInputError(f"{what} has {len(seq)} entries but {against} is {n}")


def _gallery_index(gallery_names: Sequence[str]) -> dict[str, int]:
    """Name -> position; duplicate names are an error."""
    index = {name: i for i, name in enumerate(gallery_names)}
    if len(index) != len(gallery_names):
        dups = [n for n, c in Counter(gallery_names).items() if c > 1]
        raise MetricInputError(
            f"gallery_names has {len(dups)} duplicate name(s) "
            f"({len(gallery_names)} names, {len(index)} distinct); first: {dups[:_SHOW]}"
        )
    return index


def _target_list(t: TargetSpec) -> list[str]:
    return [t] if isinstance(t, str) else list(t)


def _missing_error(
    what: str, missing: list[tuple[int, str]], n_queries: int, n_gallery: int
) -> MetricInputError:
    n_q = len({q for q, _ in missing})
    first = "; ".join(f"query {q}: {name!r}" for q, name in missing[:_SHOW])
    return MetricInputError(
        f"{n_q} of {n_queries} quer{'y' if n_queries == 1 else 'ies'} have a {what} that is "
        f"not in the gallery ({n_gallery} images); first: {first}"
    )


def _name_matrix(entries: Sequence[TargetSpec], index: Mapping[str, int], what: str) -> np.ndarray:
    """(queries x max entries) gallery indices, padded with -1; unknown names are an error."""
    lists = [_target_list(e) for e in entries]
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
        raise _missing_error(what, missing, len(lists), len(index))
    return out


def _name_vector(names: Sequence[str], index: Mapping[str, int], what: str) -> np.ndarray:
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
        raise _missing_error(what, missing, len(names), len(index))
    return out


def _group_matrix(
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
        raise _missing_error("group member", missing, len(group_members), len(index))
    valid = (idx >= 0) & (idx != refs[:, None])
    s = idx.shape[1]
    earlier = np.tril(np.ones((s, s), dtype=bool), k=-1)  # [j, i]: i comes before j
    repeat = ((idx[:, :, None] == idx[:, None, :]) & earlier[None]).any(axis=2)
    return idx, valid & ~repeat


# --------------------------------------------------------------------------- rank kernels


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


def _ranks(scores: np.ndarray, targets: np.ndarray, refs: np.ndarray | None) -> np.ndarray:
    """Best rank over each query's targets; the reference (when given) removed from the ranking."""
    q = scores.shape[0]
    rows = np.arange(q)
    best = np.full(q, _MISS, dtype=np.int64)
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


def _subset_ranks(
    sub_scores: np.ndarray, members: np.ndarray, valid: np.ndarray, targets: np.ndarray
) -> np.ndarray:
    """Best rank of each query's targets among its valid group members (gallery-order ties)."""
    q = sub_scores.shape[0]
    rows = np.arange(q)
    best = np.full(q, _MISS, dtype=np.int64)
    for m in range(targets.shape[1]):
        t = targets[:, m]
        pos = (members == t[:, None]) & valid & (t[:, None] >= 0)
        has = pos.any(axis=1)
        s_t = sub_scores[rows, pos.argmax(axis=1)][:, None]
        ahead = (sub_scores > s_t) | ((sub_scores == s_t) & (members < t[:, None]))
        r = np.count_nonzero(ahead & valid, axis=1)
        best = np.where(has, np.minimum(best, r), best)
    return best


def _recalls(ranks: np.ndarray, ks: Iterable[int], prefix: str) -> dict[str, float]:
    n = ranks.shape[0]
    return {f"{prefix}@{k}": float(100.0 * np.count_nonzero(ranks < k) / n) for k in ks}


def _subset_order(sub_scores: np.ndarray, members: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Column order of each row: valid members by descending score, ties by gallery order."""
    return np.lexsort((members, -sub_scores, ~valid), axis=-1)


# --------------------------------------------------------------------------- score-based


def fashioniq_metrics(
    scores: Any,
    gallery_names: Sequence[str],
    target_names: Sequence[TargetSpec],
    *,
    reference_names: Sequence[str] | None = None,
    drop_reference: bool = False,
) -> dict[str, float]:
    """FashionIQ R@10 / R@50 (percent) of one category from a (queries x gallery) score matrix.

    Default: reference kept in the ranking (protocol ``"full_gallery"``). ``drop_reference``
    removes each query's reference (needs ``reference_names``). Ties: gallery-order
    tie-break (see module docstring).
    """
    arr = _check_scores(scores)
    q, g = arr.shape
    _check_len("gallery_names", gallery_names, g, "the number of score columns")
    _check_len("target_names", target_names, q, "the number of score rows (queries)")
    index = _gallery_index(gallery_names)
    targets = _name_matrix(target_names, index, "target")
    refs = None
    if reference_names is not None:
        _check_len("reference_names", reference_names, q, "the number of score rows (queries)")
    if drop_reference:
        if reference_names is None:
            raise MetricInputError("drop_reference=True needs reference_names")
        refs = _name_vector(reference_names, index, "reference")
    return _recalls(_ranks(arr, targets, refs), FASHIONIQ_KS, "R")


def fashioniq_metrics_for_protocol(
    protocol: str | FashionIQProtocol,
    scores: Any,
    split_gallery: Sequence[str],
    reference_names: Sequence[str],
    target_names: Sequence[TargetSpec],
) -> dict[str, float]:
    """FashionIQ metrics under a named protocol from scores against the whole split gallery."""
    proto = get_fashioniq_protocol(protocol)
    arr = _check_scores(scores)
    _check_len("split_gallery", split_gallery, arr.shape[1], "the number of score columns")
    gallery = fashioniq_protocol_gallery(proto, split_gallery, reference_names, target_names)
    if len(gallery) != len(split_gallery):
        index = _gallery_index(split_gallery)
        arr = arr[:, [index[n] for n in gallery]]
    return fashioniq_metrics(
        arr,
        gallery,
        target_names,
        reference_names=reference_names,
        drop_reference=proto.drop_reference,
    )


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
    the ranking). Ties: gallery-order tie-break (see module docstring).
    """
    arr = _check_scores(scores)
    q, g = arr.shape
    _check_len("gallery_names", gallery_names, g, "the number of score columns")
    for what, seq in (
        ("reference_names", reference_names),
        ("target_names", target_names),
        ("group_members", group_members),
    ):
        _check_len(what, seq, q, "the number of score rows (queries)")
    index = _gallery_index(gallery_names)
    refs = _name_vector(reference_names, index, "reference")
    targets = _name_matrix(target_names, index, "target")
    members, valid = _group_matrix(group_members, index, refs)
    out = _recalls(_ranks(arr, targets, refs), CIRR_KS, "R")
    sub_scores = arr[np.arange(q)[:, None], np.maximum(members, 0)]
    out.update(
        _recalls(_subset_ranks(sub_scores, members, valid, targets), CIRR_SUBSET_KS, "Rsubset")
    )
    out["Rmean"] = (out["R@5"] + out["Rsubset@1"]) / 2
    return out


def fashioniq_average(per_category: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """Per-category and averaged FashionIQ metrics with the key names of ``spn_tables.csv``.

    Averages are over the categories given (normally dress, shirt, toptee);
    Rmean = (avg R@10 + avg R@50) / 2.
    """
    if not per_category:
        raise MetricInputError("fashioniq_average needs at least one category")
    out: dict[str, float] = {}
    for cat, metrics in per_category.items():
        for k in FASHIONIQ_KS:
            key = f"R@{k}"
            if key not in metrics:
                raise MetricInputError(f"category {cat!r} has no {key!r} (has {sorted(metrics)})")
            out[f"{cat}_{key}"] = float(metrics[key])
    n = len(per_category)
    for k in FASHIONIQ_KS:
        out[f"avg_R@{k}"] = sum(float(m[f"R@{k}"]) for m in per_category.values()) / n
    out["Rmean"] = (out["avg_R@10"] + out["avg_R@50"]) / 2
    return out


# --------------------------------------------------------------------------- top-k helpers


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
    arr = _check_scores(scores)
    q, g = arr.shape
    _check_len("gallery_names", gallery_names, g, "the number of score columns")
    index = _gallery_index(gallery_names)
    excl = _exclusion_matrix(exclude_names, index, q)
    _check_k(k, g, excl)
    cand = _topk_stable(arr, min(g, k + excl.shape[1]))
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
    arr = _check_scores(scores)
    q, g = arr.shape
    _check_len("gallery_names", gallery_names, g, "the number of score columns")
    _check_len("reference_names", reference_names, q, "the number of score rows (queries)")
    _check_len("group_members", group_members, q, "the number of score rows (queries)")
    index = _gallery_index(gallery_names)
    refs = _name_vector(reference_names, index, "reference")
    members, valid = _group_matrix(group_members, index, refs)
    sub_scores = arr[np.arange(q)[:, None], np.maximum(members, 0)]
    return _subset_topk(sub_scores, members, valid, k, gallery_names)


def _subset_topk(
    sub_scores: np.ndarray,
    members: np.ndarray,
    valid: np.ndarray,
    k: int,
    gallery_names: Sequence[str],
) -> list[list[str]]:
    short = np.flatnonzero(valid.sum(axis=1) < k)
    if short.size:
        raise MetricInputError(
            f"{short.size} quer{'y has' if short.size == 1 else 'ies have'} fewer than {k} "
            f"group members besides the reference; first: query {int(short[0])}"
        )
    order = _subset_order(sub_scores, members, valid)[:, :k]
    top = np.take_along_axis(members, order, axis=1)
    return np.asarray(gallery_names, dtype=object)[top].tolist()


def _exclusion_matrix(
    exclude_names: Sequence[TargetSpec | None] | None, index: Mapping[str, int], q: int
) -> np.ndarray:
    if exclude_names is None:
        return np.full((q, 0), -1, dtype=np.int64)
    _check_len("exclude_names", exclude_names, q, "the number of queries")
    lists = [[] if e is None else _target_list(e) for e in exclude_names]
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
        raise _missing_error("name to exclude", missing, q, len(index))
    return out


def _check_k(k: int, g: int, excl: np.ndarray) -> None:
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


def _topk_stable(scores: np.ndarray, k: int) -> np.ndarray:
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


def _drop_excluded(cand: np.ndarray, excl: np.ndarray, k: int) -> np.ndarray:
    """First k candidates of each row that are not excluded (candidates in rank order)."""
    if excl.shape[1] == 0:
        return cand[:, :k]
    drop = (cand[:, :, None] == excl[:, None, :]).any(axis=2)
    order = np.argsort(drop, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(cand, order, axis=1)


# --------------------------------------------------------------------------- feature-based


def _features(x: Any, what: str) -> np.ndarray:
    arr = _to_numpy(x)
    if arr.ndim != 2:
        raise MetricInputError(f"{what} must be 2-D (items x dim), got shape {tuple(arr.shape)}")
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    if not np.isfinite(arr).all():
        raise MetricInputError(f"{what} contain NaN or infinite values")
    return arr


def _prepare(
    query_features: Any, gallery_features: Any, gallery_names: Sequence[str], normalize: bool
) -> tuple[np.ndarray, np.ndarray]:
    qf = _features(query_features, "query_features")
    gf = _features(gallery_features, "gallery_features")
    if qf.shape[1] != gf.shape[1]:
        raise MetricInputError(
            f"query_features have dim {qf.shape[1]} but gallery_features have dim {gf.shape[1]}"
        )
    if qf.shape[0] == 0:
        raise MetricInputError("query_features has no queries (0 rows)")
    _check_len("gallery_names", gallery_names, gf.shape[0], "the number of gallery feature rows")
    if normalize:
        qf = qf / np.maximum(np.linalg.norm(qf, axis=1, keepdims=True), 1e-12)
        gf = gf / np.maximum(np.linalg.norm(gf, axis=1, keepdims=True), 1e-12)
    return np.ascontiguousarray(qf), np.ascontiguousarray(gf)


def _faiss_topk(qf: np.ndarray, gf: np.ndarray, k: int) -> np.ndarray:
    """Top-k gallery indices per query by inner product, in gallery-order tie-break order."""
    import faiss

    g = gf.shape[0]
    if k >= g:
        return _topk_stable(qf @ gf.T, g)
    index = faiss.IndexFlatIP(gf.shape[1])
    index.add(gf)
    dist, idx = index.search(qf, k + 1)  # one extra to detect ties at the cut-off
    order = np.lexsort((idx, -dist), axis=-1)
    top = np.take_along_axis(idx, order, axis=1)[:, :k].astype(np.int64)
    boundary_tie = np.flatnonzero(dist[:, k - 1] == dist[:, k])
    if boundary_tie.size:
        top[boundary_tie] = _topk_stable(qf[boundary_tie] @ gf.T, k)
    return top


def _ranks_from_topk(top: np.ndarray, targets: np.ndarray, refs: np.ndarray | None) -> np.ndarray:
    """Best target rank within ordered candidates (reference removed); absent -> miss."""
    best = np.full(top.shape[0], _MISS, dtype=np.int64)
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


def _member_scores(qf: np.ndarray, gf: np.ndarray, members: np.ndarray) -> np.ndarray:
    """(queries x members) dot products of each query with its group members' features."""
    return np.einsum("qd,qsd->qs", qf, gf[np.maximum(members, 0)], optimize=True)


def fashioniq_metrics_from_features(
    query_features: Any,
    gallery_features: Any,
    gallery_names: Sequence[str],
    target_names: Sequence[TargetSpec],
    *,
    reference_names: Sequence[str] | None = None,
    drop_reference: bool = False,
    normalize: bool = True,
) -> dict[str, float]:
    """FashionIQ R@10 / R@50 from features via a faiss top-51 search (no full sort).

    Same semantics as ``fashioniq_metrics`` on ``query @ gallery.T`` (L2-normalised first
    when ``normalize``).
    """
    qf, gf = _prepare(query_features, gallery_features, gallery_names, normalize)
    q = qf.shape[0]
    _check_len("target_names", target_names, q, "the number of queries")
    index = _gallery_index(gallery_names)
    targets = _name_matrix(target_names, index, "target")
    refs = None
    if reference_names is not None:
        _check_len("reference_names", reference_names, q, "the number of queries")
    if drop_reference:
        if reference_names is None:
            raise MetricInputError("drop_reference=True needs reference_names")
        refs = _name_vector(reference_names, index, "reference")
    top = _faiss_topk(qf, gf, max(FASHIONIQ_KS) + 1)
    return _recalls(_ranks_from_topk(top, targets, refs), FASHIONIQ_KS, "R")


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
    qf, gf = _prepare(query_features, gallery_features, gallery_names, normalize)
    q = qf.shape[0]
    for what, seq in (
        ("reference_names", reference_names),
        ("target_names", target_names),
        ("group_members", group_members),
    ):
        _check_len(what, seq, q, "the number of queries")
    index = _gallery_index(gallery_names)
    refs = _name_vector(reference_names, index, "reference")
    targets = _name_matrix(target_names, index, "target")
    members, valid = _group_matrix(group_members, index, refs)
    top = _faiss_topk(qf, gf, max(CIRR_KS) + 1)
    out = _recalls(_ranks_from_topk(top, targets, refs), CIRR_KS, "R")
    sub = _subset_ranks(_member_scores(qf, gf, members), members, valid, targets)
    out.update(_recalls(sub, CIRR_SUBSET_KS, "Rsubset"))
    out["Rmean"] = (out["R@5"] + out["Rsubset@1"]) / 2
    return out


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
    qf, gf = _prepare(query_features, gallery_features, gallery_names, normalize)
    index = _gallery_index(gallery_names)
    excl = _exclusion_matrix(exclude_names, index, qf.shape[0])
    _check_k(k, gf.shape[0], excl)
    cand = _faiss_topk(qf, gf, k + excl.shape[1])
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
    qf, gf = _prepare(query_features, gallery_features, gallery_names, normalize)
    q = qf.shape[0]
    _check_len("reference_names", reference_names, q, "the number of queries")
    _check_len("group_members", group_members, q, "the number of queries")
    index = _gallery_index(gallery_names)
    refs = _name_vector(reference_names, index, "reference")
    members, valid = _group_matrix(group_members, index, refs)
    return _subset_topk(_member_scores(qf, gf, members), members, valid, k, gallery_names)


# --------------------------------------------------------------------------- CIRCO
#
# Official semantics (miccunifi/CIRCO src/evaluation.py, the evaluation server's code, and
# SEARLE's src/validate.py circo_compute_val_metrics): the gallery is the whole COCO 2017
# unlabeled set and the ranking is the top 50 of ALL of it -- the reference image is NOT
# removed (it is never a ground truth). For each query with ground truths G,
#
#     AP@k = sum_{i <= k, item i in G} precision@i / min(|G|, k),   mAP@k = mean over queries,
#
# precision@i = (ground truths among the first i) / i. Predictions must be distinct.

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
            f"ground truths; first: query {q}: {dups[:_SHOW]}"
        )
    return _name_matrix(gt_names, index, "ground truth")


def _circo_map(ranks: np.ndarray, n_gt: np.ndarray, ks: Iterable[int]) -> dict[str, float]:
    """mAP@k (percent) from each query's 0-based ground-truth ranks (distinct; _MISS = absent).

    With the ranks sorted, the j-th retrieved ground truth (1-based) at rank r contributes
    precision j / (r + 1) -- the official cumulative-sum formula, without building lists.
    """
    r = np.sort(ranks, axis=1)
    hit = r < _MISS
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
    if reference_names is not None:
        _check_len("reference_names", reference_names, q, "the number of queries")
    if not drop_reference:
        return None
    if reference_names is None:
        raise MetricInputError("drop_reference=True needs reference_names")
    return _name_vector(reference_names, index, "reference")


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
    arr = _check_scores(scores)
    q, g = arr.shape
    _check_len("gallery_names", gallery_names, g, "the number of score columns")
    _check_len("gt_names", gt_names, q, "the number of score rows (queries)")
    index = _gallery_index(gallery_names)
    gts = _gt_matrix(gt_names, index)
    refs = _circo_refs(reference_names, index, q, drop_reference)
    ranks = np.column_stack([_ranks(arr, gts[:, m : m + 1], refs) for m in range(gts.shape[1])])
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
    qf, gf = _prepare(query_features, gallery_features, gallery_names, normalize)
    q = qf.shape[0]
    _check_len("gt_names", gt_names, q, "the number of queries")
    index = _gallery_index(gallery_names)
    gts = _gt_matrix(gt_names, index)
    refs = _circo_refs(reference_names, index, q, drop_reference)
    top = _faiss_topk(qf, gf, max(CIRCO_KS) + int(drop_reference))
    ranks = np.column_stack(
        [_ranks_from_topk(top, gts[:, m : m + 1], refs) for m in range(gts.shape[1])]
    )
    return _circo_map(ranks, (gts >= 0).sum(axis=1), CIRCO_KS)


def circo_metrics_from_rankings(
    rankings: Sequence[Sequence[str]], gt_names: Sequence[Sequence[str]]
) -> dict[str, float]:
    """CIRCO mAP@k of ranked prediction lists (e.g. a submission's top 50), as the server does.

    A ground truth ranked beyond a list's end counts as not retrieved; repeated
    predictions in a list are an error (as in the official evaluation).
    """
    _check_len("rankings", rankings, len(gt_names), "the number of gt_names entries")
    if not rankings:
        raise MetricInputError("rankings has no queries")
    for what, lists in (("rankings", rankings), ("gt_names", gt_names)):
        if any(isinstance(x, str) for x in lists):
            raise MetricInputError(f"{what} must hold one list of names per query, not str")
    width = max(1, max(len(g) for g in gt_names))
    ranks = np.full((len(rankings), width), _MISS, dtype=np.int64)
    n_gt = np.empty(len(rankings), dtype=np.int64)
    for q, (ranking, gts) in enumerate(zip(rankings, gt_names, strict=True)):
        if len(set(ranking)) != len(ranking):
            raise MetricInputError(f"query {q}: the ranking repeats predictions")
        if not gts or len(set(gts)) != len(gts):
            raise MetricInputError(f"query {q}: ground truths must be a non-empty distinct list")
        position = {name: i for i, name in enumerate(ranking)}
        for j, name in enumerate(gts):
            ranks[q, j] = position.get(name, _MISS)
        n_gt[q] = len(gts)
    return _circo_map(ranks, n_gt, CIRCO_KS)
