"""FashionIQ: the evaluation protocols and R@10 / R@50 of one category, in percent.

Official semantics of the CLIP4Cir evaluation (``compute_fiq_val_metrics``), on the shared
kernels of :mod:`bench.metrics.kernels` (gallery-order tie-break, see :mod:`bench.metrics`).

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
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Literal

import numpy as np

from bench.core.errors import MetricInputError
from bench.metrics.kernels import (
    SHOW,
    TargetSpec,
    best_ranks,
    best_ranks_from_topk,
    check_len,
    check_scores,
    faiss_topk,
    gallery_index,
    hits,
    name_matrix,
    name_vector,
    percents,
    prepare_features,
    target_list,
)

FASHIONIQ_KS: tuple[int, ...] = (10, 50)


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
        used.update(target_list(t))
    in_split = set(split_gallery)
    missing = sorted(used - in_split)
    if missing:
        raise MetricInputError(
            f"{len(missing)} triplet image(s) are not in the split gallery "
            f"({len(in_split)} images); first: {missing[:SHOW]}"
        )
    return [n for n in split_gallery if n in used]


# --------------------------------------------------------------------------- metrics


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
    tie-break (see :mod:`bench.metrics`).
    """
    return percents(
        fashioniq_query_values(
            scores,
            gallery_names,
            target_names,
            reference_names=reference_names,
            drop_reference=drop_reference,
        )
    )


def fashioniq_query_values(
    scores: Any,
    gallery_names: Sequence[str],
    target_names: Sequence[TargetSpec],
    *,
    reference_names: Sequence[str] | None = None,
    drop_reference: bool = False,
) -> dict[str, np.ndarray]:
    """Per query (query order): whether it hits at 10 and at 50 (``R@10``, ``R@50``: bool
    arrays), as :func:`fashioniq_metrics` counts them."""
    arr = check_scores(scores)
    q, g = arr.shape
    check_len("gallery_names", gallery_names, g, "the number of score columns")
    check_len("target_names", target_names, q, "the number of score rows (queries)")
    index = gallery_index(gallery_names)
    targets = name_matrix(target_names, index, "target")
    refs = _reference_vector(reference_names, index, q, drop_reference, "score rows (queries)")
    return hits(best_ranks(arr, targets, refs), FASHIONIQ_KS, "R")


def _reference_vector(
    reference_names: Sequence[str] | None,
    index: Mapping[str, int],
    q: int,
    drop_reference: bool,
    rows: str,
) -> np.ndarray | None:
    """The references' gallery indices when ``drop_reference`` (else None); a given list
    must have one entry per query."""
    if reference_names is not None:
        check_len("reference_names", reference_names, q, f"the number of {rows}")
    if not drop_reference:
        return None
    if reference_names is None:
        raise MetricInputError("drop_reference=True needs reference_names")
    return name_vector(reference_names, index, "reference")


def fashioniq_metrics_for_protocol(
    protocol: str | FashionIQProtocol,
    scores: Any,
    split_gallery: Sequence[str],
    reference_names: Sequence[str],
    target_names: Sequence[TargetSpec],
) -> dict[str, float]:
    """FashionIQ metrics under a named protocol from scores against the whole split gallery."""
    return percents(
        fashioniq_query_values_for_protocol(
            protocol, scores, split_gallery, reference_names, target_names
        )
    )


def fashioniq_query_values_for_protocol(
    protocol: str | FashionIQProtocol,
    scores: Any,
    split_gallery: Sequence[str],
    reference_names: Sequence[str],
    target_names: Sequence[TargetSpec],
) -> dict[str, np.ndarray]:
    """Per-query hits (:func:`fashioniq_query_values`) under a named protocol."""
    proto = get_fashioniq_protocol(protocol)
    arr = check_scores(scores)
    check_len("split_gallery", split_gallery, arr.shape[1], "the number of score columns")
    gallery = fashioniq_protocol_gallery(proto, split_gallery, reference_names, target_names)
    if len(gallery) != len(split_gallery):
        index = gallery_index(split_gallery)
        arr = arr[:, [index[n] for n in gallery]]
    return fashioniq_query_values(
        arr,
        gallery,
        target_names,
        reference_names=reference_names,
        drop_reference=proto.drop_reference,
    )


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
    return percents(
        fashioniq_query_values_from_features(
            query_features,
            gallery_features,
            gallery_names,
            target_names,
            reference_names=reference_names,
            drop_reference=drop_reference,
            normalize=normalize,
        )
    )


def fashioniq_query_values_from_features(
    query_features: Any,
    gallery_features: Any,
    gallery_names: Sequence[str],
    target_names: Sequence[TargetSpec],
    *,
    reference_names: Sequence[str] | None = None,
    drop_reference: bool = False,
    normalize: bool = True,
) -> dict[str, np.ndarray]:
    """Per-query hits (:func:`fashioniq_query_values`) from features (faiss top-51)."""
    qf, gf = prepare_features(query_features, gallery_features, gallery_names, normalize)
    q = qf.shape[0]
    check_len("target_names", target_names, q, "the number of queries")
    index = gallery_index(gallery_names)
    targets = name_matrix(target_names, index, "target")
    refs = _reference_vector(reference_names, index, q, drop_reference, "queries")
    top = faiss_topk(qf, gf, max(FASHIONIQ_KS) + 1)
    return hits(best_ranks_from_topk(top, targets, refs), FASHIONIQ_KS, "R")


def fashioniq_average(per_category: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """Per-category and averaged FashionIQ metrics with the key names of ``spn_tables.csv``.

    Averages are over the categories given (normally dress, shirt, toptee);
    Rmean = (avg R@10 + avg R@50) / 2. The values are numbers (floats out) or equally
    shaped numpy arrays (arrays out, element-wise: a bootstrap's resamples at once).
    """
    if not per_category:
        raise MetricInputError("fashioniq_average needs at least one category")
    out: dict[str, Any] = {}
    for cat, metrics in per_category.items():
        for k in FASHIONIQ_KS:
            key = f"R@{k}"
            if key not in metrics:
                raise MetricInputError(f"category {cat!r} has no {key!r} (has {sorted(metrics)})")
            out[f"{cat}_{key}"] = _number(metrics[key])
    n = len(per_category)
    for k in FASHIONIQ_KS:
        out[f"avg_R@{k}"] = sum(_number(m[f"R@{k}"]) for m in per_category.values()) / n
    out["Rmean"] = (out["avg_R@10"] + out["avg_R@50"]) / 2
    return out


def _number(value: Any) -> Any:
    """A float, or a numpy array of floats as it is."""
    return value.astype(np.float64) if isinstance(value, np.ndarray) else float(value)
