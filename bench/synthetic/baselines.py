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
from bench.metrics import circo_metrics, cirr_metrics, fashioniq_average
from bench.metrics.fashioniq import fashioniq_metrics_for_protocol
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
    try:
        scorer = _BASELINES[dataset]
    except KeyError:
        raise ValueError(
            f"unknown dataset {dataset!r}; expected one of {', '.join(_BASELINES)}"
        ) from None
    if dataset == "fashioniq":
        return _fashioniq_baselines(Path(root), split, seed, tuple(categories), protocol)
    return scorer(Path(root), split, seed)


def _fashioniq_baselines(
    root: Path,
    split: str,
    seed: int,
    categories: tuple[str, ...] = CATEGORIES,
    protocol: str = "full_gallery",
) -> dict[str, dict[str, float]]:
    base = root / "fashioniq"
    metadata = _read(base / "metadata" / "images.json")
    per_category: dict[str, dict[str, dict[str, float]]] = {name: {} for name in RANKERS}
    for category in categories:
        data = load_fashioniq_split(base, category, split, images=False)
        mods_path = base / "metadata" / f"modifications.{category}.{split}.json"
        mods = _read(mods_path)
        _check_aligned(data.queries, mods, mods_path)
        refs = [q.reference for q in data.queries]
        targets = [mods[q.index]["target"] for q in data.queries]
        aligned = [mods[q.index] for q in data.queries]
        scores = score_split(data.gallery, refs, aligned, metadata, seed=seed)
        for name in RANKERS:
            per_category[name][category] = fashioniq_metrics_for_protocol(
                protocol, scores[name], data.gallery, refs, targets
            )
    return {name: fashioniq_average(per_category[name]) for name in RANKERS}


def _cirr_baselines(root: Path, split: str, seed: int) -> dict[str, dict[str, float]]:
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
    scores = score_split(data.gallery, refs, aligned, metadata, seed=seed)
    return {
        name: cirr_metrics(scores[name], data.gallery, refs, targets, groups) for name in RANKERS
    }


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


_BASELINES = {
    "fashioniq": _fashioniq_baselines,
    "cirr": _cirr_baselines,
    "circo": lambda root, split, seed: circo_attribute_baselines(root, split, seed=seed),
}
