"""CIRR: R@1/5/10/50, Rsubset@1/2/3 and Rmean in percent, and the test1 server's files.

Official semantics of the CLIP4Cir evaluation (``compute_cirr_val_metrics``) and the CIRR
test server, on the shared kernels of :mod:`bench.metrics.kernels` (gallery-order
tie-break, see :mod:`bench.metrics`).

CIRR: the gallery is every image of the split and each query's reference is removed from
its ranking; R@1/5/10/50. Rsubset@1/2/3 rank only the query's ``img_set`` members with the
reference excluded (same tie policy); Rmean = (R@5 + Rsubset@1) / 2.

CIRR test1 server submissions: build, write atomically, validate (on the shared checker
of :mod:`bench.metrics.submission`). Format (one file per metric)::

    {"version": "rc2", "metric": "recall", "<pairid>": [50 image names], ...}
    {"version": "rc2", "metric": "recall_subset", "<pairid>": [3 image names], ...}

Predictions are ranked best first; the reference image is left out of both lists (the
metrics remove it from the ranking) and the subset list holds members of the query's
``img_set``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bench.core.atomic import write_json_atomic
from bench.core.errors import DataFormatError, MetricInputError
from bench.metrics.kernels import (
    SHOW,
    TargetSpec,
    best_ranks,
    best_ranks_from_topk,
    check_len,
    check_scores,
    faiss_topk,
    gallery_index,
    group_matrix,
    hits,
    member_scores,
    name_matrix,
    name_vector,
    percents,
    prepare_features,
    subset_ranks,
)
from bench.metrics.submission import (
    ID_PATTERN,
    EntryCheck,
    Finding,
    PairId,
    RankedListFormat,
    check_expected_ids,
    check_ranked_lists,
    load_and_check,
    not_an_object,
    raise_first,
    raise_if_repeated_ids,
)
from bench.metrics.topk import (
    subset_topk_from_scores,
    subset_topk_names,
    topk_from_scores,
    topk_names,
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
    values = cirr_query_values(scores, gallery_names, reference_names, target_names, group_members)
    return with_cirr_rmean(percents(values))


def with_cirr_rmean(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """The metrics with CIRR's Rmean = (R@5 + Rsubset@1) / 2 added (numbers, or numpy
    arrays element-wise)."""
    return {**metrics, "Rmean": (metrics["R@5"] + metrics["Rsubset@1"]) / 2}


def _check_query_lists(q: int, against: str, **lists: Sequence[Any]) -> None:
    for what, seq in lists.items():
        check_len(what, seq, q, against)


def cirr_query_values(
    scores: Any,
    gallery_names: Sequence[str],
    reference_names: Sequence[str],
    target_names: Sequence[TargetSpec],
    group_members: Sequence[Sequence[str]],
) -> dict[str, np.ndarray]:
    """Per query (query order): its hits at R@1/5/10/50 and Rsubset@1/2/3 (bool arrays),
    as :func:`cirr_metrics` counts them."""
    arr = check_scores(scores)
    q, g = arr.shape
    check_len("gallery_names", gallery_names, g, "the number of score columns")
    _check_query_lists(
        q,
        "the number of score rows (queries)",
        reference_names=reference_names,
        target_names=target_names,
        group_members=group_members,
    )
    index = gallery_index(gallery_names)
    refs = name_vector(reference_names, index, "reference")
    targets = name_matrix(target_names, index, "target")
    members, valid = group_matrix(group_members, index, refs)
    out = hits(best_ranks(arr, targets, refs), CIRR_KS, "R")
    sub_scores = arr[np.arange(q)[:, None], np.maximum(members, 0)]
    out.update(hits(subset_ranks(sub_scores, members, valid, targets), CIRR_SUBSET_KS, "Rsubset"))
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
    values = cirr_query_values_from_features(
        query_features,
        gallery_features,
        gallery_names,
        reference_names,
        target_names,
        group_members,
        normalize,
    )
    return with_cirr_rmean(percents(values))


def cirr_query_values_from_features(
    query_features: Any,
    gallery_features: Any,
    gallery_names: Sequence[str],
    reference_names: Sequence[str],
    target_names: Sequence[TargetSpec],
    group_members: Sequence[Sequence[str]],
    normalize: bool = True,
) -> dict[str, np.ndarray]:
    """Per-query hits (:func:`cirr_query_values`) from features."""
    qf, gf = prepare_features(query_features, gallery_features, gallery_names, normalize)
    _check_query_lists(
        qf.shape[0],
        "the number of queries",
        reference_names=reference_names,
        target_names=target_names,
        group_members=group_members,
    )
    index = gallery_index(gallery_names)
    refs = name_vector(reference_names, index, "reference")
    targets = name_matrix(target_names, index, "target")
    members, valid = group_matrix(group_members, index, refs)
    top = faiss_topk(qf, gf, max(CIRR_KS) + 1)
    out = hits(best_ranks_from_topk(top, targets, refs), CIRR_KS, "R")
    sub = subset_ranks(member_scores(qf, gf, members), members, valid, targets)
    out.update(hits(sub, CIRR_SUBSET_KS, "Rsubset"))
    return out


# --------------------------------------------------------------------------- submission files

CIRR_VERSION = "rc2"
CIRR_LIST_LENGTHS: dict[str, int] = {"recall": 50, "recall_subset": 3}
_NAME = re.compile(r"[A-Za-z0-9._-]+")


def cirr_submission_from_scores(
    scores: Any,
    gallery_names: Sequence[str],
    pair_ids: Sequence[PairId],
    reference_names: Sequence[str],
    group_members: Sequence[Sequence[str]],
) -> tuple[list[list[str]], list[list[str]]]:
    """(top-50, top-3 subset) names per query from scores, reference excluded.

    Top-k via ``np.argpartition`` plus a sort of the 51 candidates (no full sort); ties
    follow the gallery-order tie-break of ``bench.metrics``.
    """
    if len(pair_ids) != len(reference_names):
        raise MetricInputError(
            f"pair_ids has {len(pair_ids)} entries but reference_names has {len(reference_names)}"
        )
    top50 = topk_from_scores(
        scores, gallery_names, CIRR_LIST_LENGTHS["recall"], exclude_names=reference_names
    )
    top3 = subset_topk_from_scores(
        scores, gallery_names, reference_names, group_members, CIRR_LIST_LENGTHS["recall_subset"]
    )
    return top50, top3


def cirr_submission_from_features(
    query_features: Any,
    gallery_features: Any,
    gallery_names: Sequence[str],
    pair_ids: Sequence[PairId],
    reference_names: Sequence[str],
    group_members: Sequence[Sequence[str]],
    *,
    normalize: bool = True,
) -> tuple[list[list[str]], list[list[str]]]:
    """(top-50, top-3 subset) names per query from features (faiss), reference excluded."""
    if len(pair_ids) != len(reference_names):
        raise MetricInputError(
            f"pair_ids has {len(pair_ids)} entries but reference_names has {len(reference_names)}"
        )
    top50 = topk_names(
        query_features,
        gallery_features,
        gallery_names,
        CIRR_LIST_LENGTHS["recall"],
        exclude_names=reference_names,
        normalize=normalize,
    )
    top3 = subset_topk_names(
        query_features,
        gallery_features,
        gallery_names,
        reference_names,
        group_members,
        CIRR_LIST_LENGTHS["recall_subset"],
        normalize=normalize,
    )
    return top50, top3


def _payload(metric: str, pair_ids: Sequence[PairId], lists: Sequence[Sequence[str]]) -> dict:
    out: dict[str, Any] = {"version": CIRR_VERSION, "metric": metric}
    for pid, names in zip(pair_ids, lists, strict=True):
        out[str(pid)] = list(names)
    return out


def write_cirr_submission(
    out_dir: str | Path,
    pair_ids: Sequence[PairId],
    recall_top50: list[list[str]],
    subset_top3: list[list[str]],
    *,
    name: str = "cirbench",
) -> tuple[Path, Path]:
    """Write ``recall_submission_<name>.json`` and ``recall_subset_submission_<name>.json``.

    Both payloads are checked (list lengths, distinct string names, pair ids) before
    anything is written; each file is written to a temp file and moved into place.
    """
    if not _NAME.fullmatch(name):
        raise ValueError(f"submission name {name!r} must match {_NAME.pattern}")
    out = Path(out_dir)
    paths = (
        out / f"recall_submission_{name}.json",
        out / f"recall_subset_submission_{name}.json",
    )
    ids = [str(p) for p in pair_ids]
    payloads = []
    for path, metric, lists in zip(
        paths, ("recall", "recall_subset"), (recall_top50, subset_top3), strict=True
    ):
        if len(lists) != len(ids):
            raise DataFormatError(
                path, f"{len(ids)} pair ids but {len(lists)} prediction lists for {metric!r}"
            )
        bad = [p for p in ids if not ID_PATTERN.fullmatch(p)]
        if bad:
            raise DataFormatError(path, "pair id is not a non-negative integer", record=bad[0])
        raise_if_repeated_ids(path, ids, "pair id")
        payload = _payload(metric, ids, lists)
        problems = _check_cirr_payload(path, payload)
        if problems:
            raise_first(problems)
        payloads.append(payload)
    out.mkdir(parents=True, exist_ok=True)
    for path, payload in zip(paths, payloads, strict=True):
        write_json_atomic(path, payload, indent=None)
    return paths


def _cirr_name(value: Any) -> str | None:
    """A prediction of a CIRR list (a string); None if it is not one."""
    return value if isinstance(value, str) else None


def _check_cirr_payload(
    path: str | Path,
    payload: Any,
    *,
    expected_pair_ids: Iterable[PairId] | None = None,
    gallery_names: Iterable[str] | None = None,
    groups: Mapping[PairId, Sequence[str]] | None = None,
    references: Mapping[PairId, str] | None = None,
) -> list[Finding]:
    """Every problem of a parsed submission, as findings (file, pairid, field)."""
    file = str(path)
    found = not_an_object(file, payload)
    if found:
        return found
    version = payload.get("version")
    if version != CIRR_VERSION:
        found.append(Finding(file, f"must be {CIRR_VERSION!r}, got {version!r}", field="version"))
    metric = payload.get("metric")
    length = CIRR_LIST_LENGTHS.get(metric) if isinstance(metric, str) else None
    if length is None:
        found.append(
            Finding(
                file, f"must be one of {sorted(CIRR_LIST_LENGTHS)}, got {metric!r}", field="metric"
            )
        )
    gallery = set(gallery_names) if gallery_names is not None else None
    entry_check = _img_set_and_reference_check(metric, groups, references)
    fmt = RankedListFormat(
        id_label="pair id",
        id_field="pairid",
        item="name",
        item_kind="strings",
        parse=_cirr_name,
        length=length,
        length_note=f" for {metric!r}",
    )
    entries = {k: v for k, v in payload.items() if k not in ("version", "metric")}
    found += check_ranked_lists(file, entries, fmt, gallery=gallery, entry_check=entry_check)
    if expected_pair_ids is not None:
        found += check_expected_ids(file, list(entries), expected_pair_ids, fmt)
    return found


def _img_set_and_reference_check(
    metric: Any,
    groups: Mapping[PairId, Sequence[str]] | None,
    references: Mapping[PairId, str] | None,
) -> EntryCheck:
    """CIRR's own list checks: subset names in the query's img_set, no reference image."""
    group_sets = {str(k): set(v) for k, v in groups.items()} if groups is not None else None
    refs = {str(k): v for k, v in references.items()} if references is not None else None

    def check(key: str, names: list[Any]) -> list[str]:
        messages = []
        if metric == "recall_subset" and group_sets is not None:
            members = group_sets.get(key)
            if members is not None:
                outside = [v for v in names if v not in members]
                if outside:
                    messages.append(
                        f"{len(outside)} name(s) not in the query's img_set: {outside[:SHOW]}"
                    )
        if refs is not None and refs.get(key) in names:
            messages.append(f"holds the reference image {refs[key]!r}")
        return messages

    return check


def validate_cirr_submission(
    path: str | Path,
    *,
    expected_pair_ids: Iterable[PairId] | None = None,
    gallery_names: Iterable[str] | None = None,
    groups: Mapping[PairId, Sequence[str]] | None = None,
    references: Mapping[PairId, str] | None = None,
) -> list[str]:
    """Problems of a CIRR submission file, one line each (file, pairid, field); [] = valid.

    ``groups`` maps pair id -> img_set members (checked for ``recall_subset`` files);
    ``references`` maps pair id -> reference image (a prediction holding it is reported).
    """
    _, found = load_and_check(
        path,
        _check_cirr_payload,
        expected_pair_ids=expected_pair_ids,
        gallery_names=gallery_names,
        groups=groups,
        references=references,
    )
    return [str(f) for f in found]


def check_cirr_submission(
    path: str | Path,
    *,
    expected_pair_ids: Iterable[PairId] | None = None,
    gallery_names: Iterable[str] | None = None,
    groups: Mapping[PairId, Sequence[str]] | None = None,
    references: Mapping[PairId, str] | None = None,
) -> dict[str, Any]:
    """Strict ``validate_cirr_submission``: the parsed payload, or ``DataFormatError``.

    The error names the file, pair id and field of the first problem and counts the rest.
    """
    payload, found = load_and_check(
        path,
        _check_cirr_payload,
        expected_pair_ids=expected_pair_ids,
        gallery_names=gallery_names,
        groups=groups,
        references=references,
    )
    if found:
        raise_first(found)
    return payload
