"""Attribute-level baselines of the synthetic benchmark, all three formats: how hard is
its compositional task?

Three rankers score every gallery image from the ground-truth metadata only (no pixels,
no text parsing; the structured edits come from ``metadata/modifications.*.json``):

* ``image_only``: number of attributes the image shares with the reference;
* ``text_only``: number of the text's requirements the image satisfies (what the text
  alone asks for: "is larger" asks for any size above the smallest, "add a red circle"
  for a red circle anywhere, "remove the star" for no star);
* ``oracle``: number of composed attributes (reference attributes with the text's
  changes applied) the image matches; it ranks the target first by construction.

A seeded jitter below 0.01 breaks ties at random. Recall comes from the official metric
code (:mod:`bench.metrics`): FashionIQ keeps the reference in the gallery, CIRR removes it.
CIRCO's rankers (:func:`circo_attribute_baselines`) score mAP@k the same way, with the
free attributes of a query ignored by the oracle.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bench.core.errors import DataFormatError
from bench.formats.circo import load_circo_split
from bench.formats.cirr import load_cirr_split
from bench.formats.fashioniq import CATEGORIES, load_fashioniq_split
from bench.metrics import QueryValues, circo_metrics
from bench.metrics.cirr import cirr_query_values
from bench.metrics.fashioniq import (
    fashioniq_query_values_for_protocol,
    get_fashioniq_protocol,
)
from bench.stats.queries import RunQueryValues, queries_digest
from bench.synthetic.world import AttributeIndex

RANKERS = ("image_only", "text_only", "oracle")
JITTER = 0.005


def _read(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def score_split(
    gallery: Sequence[str],
    references: Sequence[str],
    modifications: Sequence[Mapping[str, Any]],
    metadata: Mapping[str, Any],
    *,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """(queries x gallery) scores of each ranker for one split."""
    table = AttributeIndex([metadata[name]["attributes"] for name in gallery])
    shape = (len(references), len(gallery))
    scores = {name: np.zeros(shape, dtype=np.float64) for name in RANKERS}
    for q, (ref, mod) in enumerate(zip(references, modifications, strict=True)):
        ref_attrs = metadata[ref]["attributes"]
        composed = {**ref_attrs, **mod["changes"]}
        scores["image_only"][q] = table.matches(ref_attrs)
        scores["oracle"][q] = table.matches(composed)
        scores["text_only"][q] = sum(
            table.satisfied(r).astype(np.float64) for r in mod["requirements"]
        )
    rng = np.random.default_rng(seed)
    for name in RANKERS:
        scores[name] += rng.uniform(0.0, JITTER, size=shape)
    return scores


def attribute_baselines(
    root: str | Path,
    dataset: str,
    split: str = "val",
    *,
    seed: int = 0,
    categories: Sequence[str] = CATEGORIES,
    protocol: str = "full_gallery",
) -> dict[str, dict[str, float]]:
    """The official metrics (percent) of the three attribute rankers on one split of a
    synthetic benchmark, per ranker: FashionIQ recall (per category and averaged), CIRR
    recall and Rsubset, CIRCO mAP@k.

    ``root`` is the folder ``generate`` wrote (holding ``fashioniq/``, ``cirr/``, ``circo/``).
    Test splits are scored with the targets kept in the modification sidecars. FashionIQ
    only: ``categories`` (averaged over these) and ``protocol`` (a FashionIQ evaluation
    protocol, :mod:`bench.metrics.fashioniq`; default the official full gallery), so the
    rankers score exactly the queries and gallery a method is evaluated on.
    """
    if dataset not in ("fashioniq", "cirr", "circo"):
        raise ValueError(f"unknown dataset {dataset!r}; expected one of fashioniq, cirr, circo")
    if dataset == "circo":
        return circo_attribute_baselines(root, split, seed=seed)
    per_query = attribute_query_values(
        root, dataset, split, seed=seed, categories=categories, protocol=protocol
    )
    return {name: values.metrics() for name, values in per_query.items()}


def _fashioniq_query_values(
    root: Path, split: str, seed: int, categories: tuple[str, ...], protocol: str
) -> tuple[dict[str, dict[str | None, QueryValues]], dict[str | None, str]]:
    """Per ranker, per category: the rankers' hits (query order) under ``protocol``; and
    each category's :func:`queries_digest`."""
    base = root / "fashioniq"
    metadata = _read(base / "metadata" / "images.json")
    per_query: dict[str, dict[str | None, QueryValues]] = {name: {} for name in RANKERS}
    digests: dict[str | None, str] = {}
    for category in categories:
        data = load_fashioniq_split(base, category, split, images=False)
        mods_path = base / "metadata" / f"modifications.{category}.{split}.json"
        mods = _read(mods_path)
        _check_aligned(data.queries, mods, mods_path)
        refs = [q.reference for q in data.queries]
        targets = [mods[q.index]["target"] for q in data.queries]
        aligned = [mods[q.index] for q in data.queries]
        ids = [q.query_id for q in data.queries]
        scores = score_split(data.gallery, refs, aligned, metadata, seed=seed)
        digests[category] = queries_digest(data.queries)
        for name in RANKERS:
            per_query[name][category] = QueryValues.of(
                ids,
                fashioniq_query_values_for_protocol(
                    protocol, scores[name], data.gallery, refs, targets
                ),
            )
    return per_query, digests


def _cirr_query_values(root: Path, split: str, seed: int) -> tuple[dict[str, QueryValues], str]:
    """Per ranker: its hits at R@K and Rsubset@K against the hard target (query order);
    and the split's :func:`queries_digest`."""
    base = root / "cirr"
    metadata = _read(base / "metadata" / "images.json")
    data = load_cirr_split(base, split, images=False)
    mods_path = base / "metadata" / f"modifications.rc2.{split}.json"
    mods = _read(mods_path)
    _check_aligned(data.queries, mods, mods_path)
    refs = [q.reference for q in data.queries]
    targets = [mods[q.index]["target"] for q in data.queries]
    groups = [list(q.group) for q in data.queries]
    aligned = [mods[q.index] for q in data.queries]
    ids = [q.query_id for q in data.queries]
    scores = score_split(data.gallery, refs, aligned, metadata, seed=seed)
    per_query = {
        name: QueryValues.of(
            ids, cirr_query_values(scores[name], data.gallery, refs, targets, groups)
        )
        for name in RANKERS
    }
    return per_query, queries_digest(data.queries)


def attribute_query_values(
    root: str | Path,
    dataset: str,
    split: str = "val",
    *,
    protocol: str = "full_gallery",
    categories: Sequence[str] = CATEGORIES,
    seed: int = 0,
) -> dict[str, RunQueryValues]:
    """The rankers of :func:`attribute_baselines` as runs' per-query values (FashionIQ per
    category, CIRR against the hard target), so a method's run can be compared with a
    ranker query by query (:func:`bench.stats.paired_bootstrap`); their ``metrics()`` are
    :func:`attribute_baselines`'s numbers (the format's own aggregation, as for a run's
    metrics). The protocol they are keyed by is the one a
    run's evaluation names (FashionIQ: ``protocol``'s name; CIRR: ``hard_targets``)."""
    root = Path(root)
    if dataset == "fashioniq":
        per_query, digests = _fashioniq_query_values(root, split, seed, tuple(categories), protocol)
        name = get_fashioniq_protocol(protocol).name
        return {
            ranker: RunQueryValues(dataset, name, {name: groups}, digests)
            for ranker, groups in per_query.items()
        }
    if dataset == "cirr":
        flat, digest = _cirr_query_values(root, split, seed)
        return {
            ranker: RunQueryValues(
                dataset, "hard_targets", {"hard_targets": {None: v}}, {None: digest}
            )
            for ranker, v in flat.items()
        }
    raise ValueError(
        f"unknown dataset {dataset!r}; expected one of fashioniq, cirr"
        + (" (CIRCO's rankers: circo_attribute_baselines)" if dataset == "circo" else "")
    )


def _check_aligned(queries: Sequence[Any], mods: Sequence[Mapping[str, Any]], path: Path) -> None:
    """The sidecar must hold one record per caption record, in the same order."""
    for q in queries:
        mod = mods[q.index] if q.index < len(mods) else None
        if mod is None:
            raise DataFormatError(
                path, "no modification record for this caption record", record=q.index
            )
        if mod["reference"] != q.reference or (q.target and mod["target"] != q.target):
            raise DataFormatError(
                path, "reference/target differ from the caption file's record", record=q.index
            )


#: The columns ``format_baselines`` shows per dataset (default: every metric).
_SHOWN = {
    "fashioniq": ("avg_R@10", "avg_R@50", "Rmean"),
    "cirr": ("R@1", "R@5", "R@10", "R@50", "Rsubset@1", "Rmean"),
}


def format_baselines(results: Mapping[str, Mapping[str, Mapping[str, float]]]) -> str:
    """A plain-text table of ``{dataset: attribute_baselines(...)}`` (recall / mAP in %)."""
    lines = ["attribute-level baselines on val (recall %; CIRCO: mAP %):"]
    for dataset, per_ranker in results.items():
        columns = _SHOWN.get(dataset, tuple(next(iter(per_ranker.values()))))
        lines.append(f"  {dataset:10s} " + " ".join(f"{c:>9s}" for c in columns))
        for ranker, metrics in per_ranker.items():
            lines.append(f"  {ranker:>10s} " + " ".join(f"{metrics[c]:9.1f}" for c in columns))
    return "\n".join(lines)


# --------------------------------------------------------------------------- CIRCO


def circo_attribute_baselines(
    root: str | Path, split: str = "val", *, seed: int = 0
) -> dict[str, dict[str, float]]:
    """mAP@k (percent) of three attribute rankers on one split of the synthetic CIRCO set.

    ``root`` is the folder holding ``circo/``. Scores come from the metadata only:
    ``image_only`` counts attributes shared with the reference, ``text_only`` the
    text's requirements met, ``oracle`` the constrained composed attributes (reference
    with the changes, free attributes ignored) matched. A seeded jitter below 0.01 breaks
    ties; the official metric keeps the reference in the ranking. The test split is
    scored with the ground truths kept in ``metadata/queries.test.json``.
    """
    base = Path(root) / "circo"
    data = load_circo_split(base, split, images=False)
    metadata = _read(base / "metadata" / "images.json")
    side_path = base / "metadata" / f"queries.{split}.json"
    sidecar = _read(side_path)
    table = AttributeIndex([metadata[n]["attributes"] for n in data.gallery])
    shape = (len(data.queries), len(data.gallery))
    scores = {name: np.zeros(shape, dtype=np.float64) for name in RANKERS}
    gts: list[list[str]] = []
    for q, query in enumerate(data.queries):
        side = sidecar[query.index] if query.index < len(sidecar) else None
        if side is None or side["reference"] != query.reference:
            raise DataFormatError(side_path, "does not match the annotation", record=query.index)
        ref = metadata[query.reference]["attributes"]
        composed = {**ref, **side["changes"]}
        constrained = {a: v for a, v in composed.items() if a not in side["free"]}
        scores["image_only"][q] = table.matches(ref)
        scores["oracle"][q] = table.matches_subset(constrained)
        scores["text_only"][q] = sum(
            table.satisfied(r).astype(np.float64) for r in side["requirements"]
        )
        gts.append(side["gts"])
    rng = np.random.default_rng(seed)
    refs = [query.reference for query in data.queries]
    out = {}
    for name in RANKERS:
        scores[name] += rng.uniform(0.0, JITTER, size=shape)
        out[name] = circo_metrics(scores[name], data.gallery, refs, gts)
    return out
