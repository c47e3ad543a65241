"""The provenance record of a generated set: what produced it, and what each group gave.

:class:`~bench.spn.positives.pipeline.PositivesBuild` writes it next to the generated files
(:mod:`bench.formats.generated`); ``build_key`` there decides whether a build is redone.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bench.config import PositivesSpec
from bench.formats import DatasetFormat
from bench.formats.records import GeneratedTriplet
from bench.spn.positives.dedup import DedupResult
from bench.spn.positives.pool import PoolGroup

GENERATOR = "cirbench.bench.spn.positives"


def _group_counts(
    groups: Sequence[PoolGroup],
    dedup: Mapping[str | None, DedupResult],
    pairs: Mapping[str | None, np.ndarray],
    triplets: Sequence[GeneratedTriplet],
) -> dict[str, dict[str, int]]:
    """Images, duplicates, references, pairs and triplets of each group."""
    counts = {}
    for group in groups:
        result = dedup[group.category]
        group_pairs = pairs[group.category]
        counts[str(group.category)] = {
            "pool_images": len(group.names),
            "kept_images": len(result.kept),
            "duplicates_removed": len(result.removed),
            "references": len(np.unique(group_pairs[:, 0])) if len(group_pairs) else 0,
            "pairs": len(group_pairs),
            "triplets": sum(1 for t in triplets if t.category == group.category),
        }
    return counts


def _pool_record(root: Path, spec: PositivesSpec) -> dict[str, Any]:
    """The pool's kind and folder."""
    pool: dict[str, Any] = {"kind": spec.pool if spec.pool in ("train", "pool") else "folder"}
    if spec.pool == "pool":
        pool["path"] = str(root.resolve().parent / "pool")
    elif spec.pool != "train":
        pool["path"] = str(Path(spec.pool).expanduser().resolve())
    else:
        pool["path"] = str(root.resolve())
    return pool


def provenance_record(
    *,
    build_key: str,
    format: str,
    fmt: DatasetFormat,
    root: Path,
    spec: PositivesSpec,
    groups: Sequence[PoolGroup],
    dedup: Mapping[str | None, DedupResult],
    pairs: Mapping[str | None, np.ndarray],
    triplets: Sequence[GeneratedTriplet],
    total_pairs: int,
    captioner: dict[str, Any],
    backbone: Any,
    backbone_given: bool,
) -> dict[str, Any]:
    """The provenance record of one build of ``spec`` on the dataset at ``root``.

    ``pairs``: the (P, 2) index pairs of each group; ``captioner``: the captioner's
    description; ``backbone``: the matching backbone, ``None`` when the build used no
    embeddings; ``backbone_given``: it was passed in rather than built from the spec.
    """
    backbone_record = None
    if backbone is not None:
        backbone_record = {
            "arch": backbone.arch,
            "pretrained": None if backbone_given else spec.backbone.pretrained,
            "weights": backbone.weights,
            "preprocessing": backbone.transform.describe(),
        }
    layout = (
        f"CIRR caption records next to the {fmt.title} annotations: training data "
        f"for a zero-shot run evaluated on {fmt.title} (it has no training split)"
        if fmt.train_split is None
        else f"the official {format} caption format"
    )
    return {
        "generator": GENERATOR,
        "build_key": build_key,
        "layout": layout,
        "spec": spec.model_dump(mode="json"),
        "captioner": captioner,
        "backbone": backbone_record,
        "matching": {
            "mode": spec.mode,
            "rank_lo": spec.rank_lo if spec.mode == "window" else None,
            "rank_hi": spec.rank_hi if spec.mode == "window" else None,
            "k": spec.k,
            "K": spec.K,
            "only_train_references": spec.only_train_references,
        },
        "dedup_threshold": spec.dedup_threshold,
        "templates": list(spec.templates),
        "seed": spec.seed,
        "pool": _pool_record(root, spec),
        "counts": {
            "groups": _group_counts(groups, dedup, pairs, triplets),
            "pairs_before_cap": total_pairs,
            "triplets": len(triplets),
        },
    }
