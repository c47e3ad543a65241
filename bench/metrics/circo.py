"""CIRCO: mAP@5/10/25/50 over multiple ground truths in percent, and the server's files.

Official semantics (miccunifi/CIRCO src/evaluation.py, the evaluation server's code, and
SEARLE's src/validate.py circo_compute_val_metrics): the gallery is the whole COCO 2017
unlabeled set and the ranking is the top 50 of ALL of it -- the reference image is NOT
removed (it is never a ground truth). For each query with ground truths G,

    AP@k = sum_{i <= k, item i in G} precision@i / min(|G|, k),   mAP@k = mean over queries,

precision@i = (ground truths among the first i) / i. Predictions must be distinct. Ties:
the gallery-order tie-break of :mod:`bench.metrics`, on the shared kernels of
:mod:`bench.metrics.kernels`.

Submission files (checked by the shared checker of :mod:`bench.metrics.submission`): the
CIRCO evaluation server (miccunifi/CIRCO, README "Submission Format" and
src/evaluation.py) takes one JSON object: query id (a string, "0".."799" for test) -> the
top 50 retrieved COCO image ids, best first, all distinct. Every query id of the split
must be present and no other (the evaluation asserts the keys are 0..n-1). The official
example files list ints; SEARLE writes the same ids as decimal strings, which the
evaluation's ``np.array(predictions, dtype=int)`` also accepts, so both validate. The
reference image may appear (the official ranking does not remove it).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bench.core.atomic import write_json_atomic
from bench.core.errors import DataFormatError, MetricInputError
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
    percents,
    prepare_features,
)
from bench.metrics.submission import (
    ID_PATTERN,
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
from bench.metrics.topk import topk_from_scores, topk_names

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
    """mAP@k (percent) from each query's 0-based ground-truth ranks (distinct; MISS = absent)."""
    return percents(_circo_ap(ranks, n_gt, ks))


def _circo_ap(ranks: np.ndarray, n_gt: np.ndarray, ks: Iterable[int]) -> dict[str, np.ndarray]:
    """Per query AP@k in [0, 1] (``mAP@k`` keys; mAP@k = 100 x their mean).

    With the ranks sorted, the j-th retrieved ground truth (1-based) at rank r contributes
    precision j / (r + 1) -- the official cumulative-sum formula, without building lists.
    """
    r = np.sort(ranks, axis=1)
    hit = r < MISS
    pos = np.where(hit, r, 0).astype(np.float64) + 1.0
    prec = np.arange(1, r.shape[1] + 1, dtype=np.float64)[None, :] / pos
    return {
        f"mAP@{k}": np.where(hit & (r < k), prec, 0.0).sum(axis=1) / np.minimum(n_gt, k) for k in ks
    }


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
    return percents(
        circo_query_values(
            scores, gallery_names, reference_names, gt_names, drop_reference=drop_reference
        )
    )


def circo_query_values(
    scores: Any,
    gallery_names: Sequence[str],
    reference_names: Sequence[str] | None,
    gt_names: Sequence[Sequence[str]],
    *,
    drop_reference: bool = False,
) -> dict[str, np.ndarray]:
    """Per query (query order) its AP@5/10/25/50 in [0, 1] (``mAP@k`` keys), whose means
    x 100 are :func:`circo_metrics`."""
    arr = check_scores(scores)
    q, g = arr.shape
    check_len("gallery_names", gallery_names, g, "the number of score columns")
    check_len("gt_names", gt_names, q, "the number of score rows (queries)")
    index = gallery_index(gallery_names)
    gts = _gt_matrix(gt_names, index)
    refs = _circo_refs(reference_names, index, q, drop_reference)
    ranks = np.column_stack([best_ranks(arr, gts[:, m : m + 1], refs) for m in range(gts.shape[1])])
    return _circo_ap(ranks, (gts >= 0).sum(axis=1), CIRCO_KS)


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
    return percents(
        circo_query_values_from_features(
            query_features,
            gallery_features,
            gallery_names,
            reference_names,
            gt_names,
            drop_reference=drop_reference,
            normalize=normalize,
        )
    )


def circo_query_values_from_features(
    query_features: Any,
    gallery_features: Any,
    gallery_names: Sequence[str],
    reference_names: Sequence[str] | None,
    gt_names: Sequence[Sequence[str]],
    *,
    drop_reference: bool = False,
    normalize: bool = True,
) -> dict[str, np.ndarray]:
    """Per-query AP@k (:func:`circo_query_values`) from features (faiss top-K)."""
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
    return _circo_ap(ranks, (gts >= 0).sum(axis=1), CIRCO_KS)


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


# --------------------------------------------------------------------------- submission files

CIRCO_LIST_LENGTH = 50


def circo_submission_from_scores(
    scores: Any,
    gallery_names: Sequence[str],
    *,
    exclude_names: Sequence[Any] | None = None,
) -> list[list[str]]:
    """Top-50 gallery names per query from scores (gallery-order ties, no full sort).

    The official ranking keeps the reference; ``exclude_names`` (per query) leaves names
    out, e.g. for a drop-reference variant.
    """
    return topk_from_scores(scores, gallery_names, CIRCO_LIST_LENGTH, exclude_names=exclude_names)


def circo_submission_from_features(
    query_features: Any,
    gallery_features: Any,
    gallery_names: Sequence[str],
    *,
    exclude_names: Sequence[Any] | None = None,
    normalize: bool = True,
) -> list[list[str]]:
    """Top-50 gallery names per query from features (faiss inner product)."""
    return topk_names(
        query_features,
        gallery_features,
        gallery_names,
        CIRCO_LIST_LENGTH,
        exclude_names=exclude_names,
        normalize=normalize,
    )


def _circo_image_id(value: Any) -> int | None:
    """An image id of a submission list (int or decimal string); None if it is neither."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value >= 0 else None
    if isinstance(value, str) and ID_PATTERN.fullmatch(value):
        return int(value)
    return None


#: The CIRCO lists: 50 distinct image ids (ints or decimal strings) per query id.
_CIRCO_LISTS = RankedListFormat(
    id_label="query id",
    id_field="query_id",
    item="image id",
    item_kind="non-negative integers",
    parse=_circo_image_id,
    length=CIRCO_LIST_LENGTH,
)
_IN_MEMORY = "<circo submission>"  # the "file" of a payload checked before it is written


def _check_circo_payload(
    path: str | Path,
    payload: Any,
    *,
    expected_query_ids: Iterable[PairId] | None = None,
    gallery_names: Iterable[str] | None = None,
) -> list[Finding]:
    """Every problem of a parsed CIRCO submission, as findings (file, query id, field)."""
    file = str(path)
    found = not_an_object(file, payload)
    if found:
        return found
    gallery = (
        {int(n) for n in gallery_names if ID_PATTERN.fullmatch(n)}
        if gallery_names is not None
        else None
    )
    found = check_ranked_lists(file, payload, _CIRCO_LISTS, gallery=gallery)
    if expected_query_ids is not None:
        expected = [str(p) for p in expected_query_ids]
    else:  # the official evaluation asserts the keys are exactly 0..n-1
        expected = [str(i) for i in range(len(payload))]
    keys = [k for k in payload if ID_PATTERN.fullmatch(k)]  # malformed keys are not present
    return found + check_expected_ids(file, keys, expected, _CIRCO_LISTS)


def circo_submission(
    query_ids: Sequence[PairId], top50: Sequence[Sequence[str | int]]
) -> dict[str, list[int]]:
    """The CIRCO server payload ``{"<query id>": [50 int image ids], ...}``, checked.

    ``top50`` holds gallery names (decimal id strings, as the reader names images) or
    ints, best first. Raises ``DataFormatError`` naming the query id and field.
    """
    ids = [str(q) for q in query_ids]
    if len(top50) != len(ids):
        raise DataFormatError(_IN_MEMORY, f"{len(ids)} query ids but {len(top50)} prediction lists")
    raise_if_repeated_ids(_IN_MEMORY, ids, "query id")
    payload: dict[str, Any] = {}
    for qid, names in zip(ids, top50, strict=True):
        converted = [_circo_image_id(n) for n in names]
        payload[qid] = [c if c is not None else n for c, n in zip(converted, names, strict=True)]
    problems = _check_circo_payload(_IN_MEMORY, payload, expected_query_ids=ids)
    if problems:
        raise_first(problems)
    return payload


def write_circo_submission(
    path: str | Path, query_ids: Sequence[PairId], top50: Sequence[Sequence[str | int]]
) -> Path:
    """Write a CIRCO submission file (checked first, then written atomically); its path."""
    path = Path(path)
    payload = circo_submission(query_ids, top50)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, payload, indent=None)
    return path


def validate_circo_submission(
    path: str | Path,
    *,
    expected_query_ids: Iterable[PairId] | None = None,
    gallery_names: Iterable[str] | None = None,
) -> list[str]:
    """Problems of a CIRCO submission file, one line each (file, query id, field); [] = valid.

    Without ``expected_query_ids`` the keys must be 0..n-1, as the official evaluation
    asserts; ``gallery_names`` (decimal id strings) checks every id is in the gallery.
    """
    _, found = load_and_check(
        path,
        _check_circo_payload,
        expected_query_ids=expected_query_ids,
        gallery_names=gallery_names,
    )
    return [str(f) for f in found]


def check_circo_submission(
    path: str | Path,
    *,
    expected_query_ids: Iterable[PairId] | None = None,
    gallery_names: Iterable[str] | None = None,
) -> dict[str, list[str]]:
    """Strict ``validate_circo_submission``: query id -> the 50 image names (decimal strings).

    The names are the reader's gallery names, ready for
    :func:`bench.metrics.circo_metrics_from_rankings`.
    """
    payload, found = load_and_check(
        path,
        _check_circo_payload,
        expected_query_ids=expected_query_ids,
        gallery_names=gallery_names,
    )
    if found:
        raise_first(found)
    return {key: [str(_circo_image_id(v)) for v in value] for key, value in payload.items()}
