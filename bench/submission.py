"""CIRR test1 server submissions: build, write atomically, validate.

Format (one file per metric)::

    {"version": "rc2", "metric": "recall", "<pairid>": [50 image names], ...}
    {"version": "rc2", "metric": "recall_subset", "<pairid>": [3 image names], ...}

Predictions are ranked best first; the reference image is left out of both lists (the
metrics remove it from the ranking) and the subset list holds members of the query's
``img_set``.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.core.errors import DataFormatError, MetricInputError
from bench.metrics import subset_topk_from_scores, subset_topk_names, topk_from_scores, topk_names

CIRR_VERSION = "rc2"
CIRR_LIST_LENGTHS: dict[str, int] = {"recall": 50, "recall_subset": 3}
_PAIRID = re.compile(r"(0|[1-9][0-9]*)")
_NAME = re.compile(r"[A-Za-z0-9._-]+")
_SHOW = 5

PairId = int | str


@dataclass(frozen=True)
class Finding:
    """One problem of a submission file; ``str()`` reads like a ``DataFormatError``."""

    file: str
    message: str
    record: str | None = None
    field: str | None = None

    def __str__(self) -> str:
        return str(DataFormatError(self.file, self.message, record=self.record, field=self.field))


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


# --------------------------------------------------------------------------- writing


def _payload(metric: str, pair_ids: Sequence[PairId], lists: Sequence[Sequence[str]]) -> dict:
    out: dict[str, Any] = {"version": CIRR_VERSION, "metric": metric}
    for pid, names in zip(pair_ids, lists, strict=True):
        out[str(pid)] = list(names)
    return out


def _write_json_atomic(path: Path, payload: Mapping[str, Any]) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(payload, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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
        bad = [p for p in ids if not _PAIRID.fullmatch(p)]
        if bad:
            raise DataFormatError(path, "pair id is not a non-negative integer", record=bad[0])
        dups = [p for p, c in Counter(ids).items() if c > 1]
        if dups:
            raise DataFormatError(
                path, f"{len(dups)} pair id(s) occur more than once", record=dups[0]
            )
        payload = _payload(metric, ids, lists)
        problems = _check_payload(path, payload)
        if problems:
            _raise_first(problems)
        payloads.append(payload)
    out.mkdir(parents=True, exist_ok=True)
    for path, payload in zip(paths, payloads, strict=True):
        _write_json_atomic(path, payload)
    return paths


# --------------------------------------------------------------------------- validation


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key!r}")
        out[key] = value
    return out


def _check_payload(
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
    if not isinstance(payload, dict):
        return [Finding(file, f"top level must be a JSON object, got {type(payload).__name__}")]
    found: list[Finding] = []
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
    group_sets = {str(k): set(v) for k, v in groups.items()} if groups is not None else None
    refs = {str(k): v for k, v in references.items()} if references is not None else None
    keys = [k for k in payload if k not in ("version", "metric")]
    for key in keys:
        value = payload[key]
        if not _PAIRID.fullmatch(key):
            found.append(Finding(file, "key is not a pair id (a non-negative integer)", key))
            continue
        if not isinstance(value, list):
            found.append(
                Finding(file, f"must be a list, got {type(value).__name__}", key, "prediction")
            )
            continue
        if length is not None and len(value) != length:
            found.append(
                Finding(
                    file,
                    f"must hold exactly {length} names for {metric!r}, got {len(value)}",
                    key,
                    "prediction",
                )
            )
        not_str = [v for v in value if not isinstance(v, str)]
        if not_str:
            found.append(
                Finding(file, f"names must be strings, got {not_str[:_SHOW]!r}", key, "prediction")
            )
            continue
        if len(set(value)) != len(value):
            dups = sorted({v for v in value if value.count(v) > 1})
            found.append(Finding(file, f"repeated names {dups[:_SHOW]}", key, "prediction"))
        if gallery is not None:
            outside = [v for v in value if v not in gallery]
            if outside:
                found.append(
                    Finding(
                        file,
                        f"{len(outside)} name(s) not in the gallery: {outside[:_SHOW]}",
                        key,
                        "prediction",
                    )
                )
        if metric == "recall_subset" and group_sets is not None:
            members = group_sets.get(key)
            if members is not None:
                outside = [v for v in value if v not in members]
                if outside:
                    found.append(
                        Finding(
                            file,
                            f"{len(outside)} name(s) not in the query's img_set: {outside[:_SHOW]}",
                            key,
                            "prediction",
                        )
                    )
        if refs is not None and refs.get(key) in value:
            found.append(
                Finding(file, f"holds the reference image {refs[key]!r}", key, "prediction")
            )
    if expected_pair_ids is not None:
        expected = [str(p) for p in expected_pair_ids]
        present = set(keys)
        missing = [p for p in expected if p not in present]
        if missing:
            found.append(
                Finding(
                    file,
                    f"{len(missing)} of {len(expected)} expected pair ids are missing; "
                    f"first: {missing[:_SHOW]}",
                    field="pairid",
                )
            )
        expected_set = set(expected)
        extra = [k for k in keys if k not in expected_set and _PAIRID.fullmatch(k)]
        if extra:
            found.append(
                Finding(
                    file,
                    f"{len(extra)} pair id(s) are not expected; first: {extra[:_SHOW]}",
                    field="pairid",
                )
            )
    return found


def _load(path: str | Path) -> tuple[Any, list[Finding]]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        return None, [Finding(str(path), f"cannot be read: {exc}")]
    try:
        return json.loads(text, object_pairs_hook=_no_duplicate_keys), []
    except ValueError as exc:
        return None, [Finding(str(path), f"is not valid JSON: {exc}")]


def _findings(
    path: str | Path, check: Callable[..., list[Finding]], **kwargs: Any
) -> tuple[Any, list[Finding]]:
    """Load a submission file and run ``check`` on its payload (file problems come first)."""
    payload, found = _load(path)
    if found:
        return payload, found
    return payload, check(path, payload, **kwargs)


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
    _, found = _findings(
        path,
        _check_payload,
        expected_pair_ids=expected_pair_ids,
        gallery_names=gallery_names,
        groups=groups,
        references=references,
    )
    return [str(f) for f in found]


def _raise_first(found: list[Finding]) -> None:
    first = found[0]
    more = f" (and {len(found) - 1} more problem(s))" if len(found) > 1 else ""
    raise DataFormatError(first.file, first.message + more, record=first.record, field=first.field)


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
    payload, found = _findings(
        path,
        _check_payload,
        expected_pair_ids=expected_pair_ids,
        gallery_names=gallery_names,
        groups=groups,
        references=references,
    )
    if found:
        _raise_first(found)
    return payload


# --------------------------------------------------------------------------- CIRCO
#
# The CIRCO evaluation server (miccunifi/CIRCO, README "Submission Format" and
# src/evaluation.py) takes one JSON object: query id (a string, "0".."799" for test) ->
# the top 50 retrieved COCO image ids, best first, all distinct. Every query id of the
# split must be present and no other (the evaluation asserts the keys are 0..n-1). The
# official example files list ints; SEARLE writes the same ids as decimal strings, which
# the evaluation's ``np.array(predictions, dtype=int)`` also accepts, so both validate.
# The reference image may appear (the official ranking does not remove it).

CIRCO_LIST_LENGTH = 50
_IMAGE_ID = re.compile(r"(0|[1-9][0-9]*)")


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
    if isinstance(value, str) and _IMAGE_ID.fullmatch(value):
        return int(value)
    return None


def _check_circo_payload(
    path: str | Path,
    payload: Any,
    *,
    expected_query_ids: Iterable[PairId] | None = None,
    gallery_names: Iterable[str] | None = None,
) -> list[Finding]:
    """Every problem of a parsed CIRCO submission, as findings (file, query id, field)."""
    file = str(path)
    if not isinstance(payload, dict):
        return [Finding(file, f"top level must be a JSON object, got {type(payload).__name__}")]
    found: list[Finding] = []
    gallery = (
        {int(n) for n in gallery_names if _IMAGE_ID.fullmatch(n)}
        if gallery_names is not None
        else None
    )
    for key, value in payload.items():
        if not _PAIRID.fullmatch(key):
            found.append(Finding(file, "key is not a query id (a non-negative integer)", key))
            continue
        if not isinstance(value, list):
            found.append(
                Finding(file, f"must be a list, got {type(value).__name__}", key, "prediction")
            )
            continue
        if len(value) != CIRCO_LIST_LENGTH:
            found.append(
                Finding(
                    file,
                    f"must hold exactly {CIRCO_LIST_LENGTH} image ids, got {len(value)}",
                    key,
                    "prediction",
                )
            )
        ids = [_circo_image_id(v) for v in value]
        bad = [v for v, i in zip(value, ids, strict=True) if i is None]
        if bad:
            found.append(
                Finding(
                    file,
                    f"image ids must be non-negative integers, got {bad[:_SHOW]!r}",
                    key,
                    "prediction",
                )
            )
            continue
        if len(set(ids)) != len(ids):
            dups = sorted({i for i in ids if ids.count(i) > 1})
            found.append(Finding(file, f"repeated image ids {dups[:_SHOW]}", key, "prediction"))
        if gallery is not None:
            outside = [i for i in ids if i not in gallery]
            if outside:
                found.append(
                    Finding(
                        file,
                        f"{len(outside)} image id(s) not in the gallery: {outside[:_SHOW]}",
                        key,
                        "prediction",
                    )
                )
    keys = [k for k in payload if _PAIRID.fullmatch(k)]
    if expected_query_ids is not None:
        expected = [str(p) for p in expected_query_ids]
    else:  # the official evaluation asserts the keys are exactly 0..n-1
        expected = [str(i) for i in range(len(payload))]
    present, expected_set = set(keys), set(expected)
    missing = [p for p in expected if p not in present]
    if missing:
        found.append(
            Finding(
                file,
                f"{len(missing)} of {len(expected)} expected query ids are missing; "
                f"first: {missing[:_SHOW]}",
                field="query_id",
            )
        )
    extra = [k for k in keys if k not in expected_set]
    if extra:
        found.append(
            Finding(
                file,
                f"{len(extra)} query id(s) are not expected; first: {extra[:_SHOW]}",
                field="query_id",
            )
        )
    return found


def circo_submission(
    query_ids: Sequence[PairId], top50: Sequence[Sequence[str | int]]
) -> dict[str, list[int]]:
    """The CIRCO server payload ``{"<query id>": [50 int image ids], ...}``, checked.

    ``top50`` holds gallery names (decimal id strings, as the reader names images) or
    ints, best first. Raises ``DataFormatError`` naming the query id and field.
    """
    ids = [str(q) for q in query_ids]
    if len(top50) != len(ids):
        raise DataFormatError(
            "<circo submission>", f"{len(ids)} query ids but {len(top50)} prediction lists"
        )
    dups = [q for q, c in Counter(ids).items() if c > 1]
    if dups:
        raise DataFormatError(
            "<circo submission>", f"{len(dups)} query id(s) occur more than once", record=dups[0]
        )
    payload: dict[str, Any] = {}
    for qid, names in zip(ids, top50, strict=True):
        converted = [_circo_image_id(n) for n in names]
        payload[qid] = [c if c is not None else n for c, n in zip(converted, names, strict=True)]
    problems = _check_circo_payload("<circo submission>", payload, expected_query_ids=ids)
    if problems:
        _raise_first(problems)
    return payload


def write_circo_submission(
    path: str | Path, query_ids: Sequence[PairId], top50: Sequence[Sequence[str | int]]
) -> Path:
    """Write a CIRCO submission file (checked first, then written atomically); its path."""
    path = Path(path)
    payload = circo_submission(query_ids, top50)
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_json_atomic(path, payload)
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
    _, found = _findings(
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
    payload, found = _findings(
        path,
        _check_circo_payload,
        expected_query_ids=expected_query_ids,
        gallery_names=gallery_names,
    )
    if found:
        _raise_first(found)
    return {key: [str(_circo_image_id(v)) for v in value] for key, value in payload.items()}
