"""The CIRCO planner: a synthetic CIRCO-format set of one-object images and queries with
MULTIPLE ground truths, and its official annotation and sidecar records (written by
:func:`bench.synthetic.write.generate_circo`).

The files, in the official CIRCO layout::

    out/circo/annotations/{val,test}.json          official records (test: no target_img_id,
                                                   gt_img_ids, semantic_aspects)
    out/circo/COCO2017_unlabeled/annotations/image_info_unlabeled2017.json   the gallery index
    out/circo/COCO2017_unlabeled/unlabeled2017/<id:012d>.jpg                 the gallery
    out/circo/metadata/images.json                 image id -> attributes, description, size
    out/circo/metadata/queries.{val,test}.json     one record per annotation record: the
                                                   structured query and its ground truths
    out/circo/metadata/synthetic_circo.json        summary; written last (completeness marker)

The world is the FashionIQ-style one of :mod:`bench.synthetic.world`: one object on a
white background with shape, color, pattern, size and length. As in CIRCO, one gallery
(random COCO-like ids) serves both splits, and the references are gallery images.

A query keeps the reference's shape (the ``shared_concept``, "a star"; sometimes with its
color or pattern, "a red star"), changes 1-2 other attributes ("is striped and larger")
and may declare 1-2 attributes free ("of any size"). Every attribute neither changed nor
free must equal the reference's. The ground truths are ALL gallery images satisfying
that (2 to ``MAX_GTS`` per query); ``target_img_id`` is one of them and comes first in
``gt_img_ids``. Images are drawn with repetition from the attribute space, so several
images share the constrained attributes; others share many attributes with the
reference (image-only confusers) or satisfy the text alone (text-only confusers).
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from bench.synthetic.text import caption_noise, fiq_edit, fiq_phrase, join_phrases
from bench.synthetic.world import (
    FIQ_ATTRIBUTES,
    FIQ_COLORS,
    FIQ_LENGTHS,
    FIQ_PATTERNS,
    FIQ_SIZES,
    PATTERN_ADJ,
    AttributeIndex,
    article,
    seeded_rng,
    weighted_choice,
)

CIRCO_SPLITS = ("val", "test")
#: Object classes of the synthetic CIRCO world (silhouettes of all three FashionIQ families).
CIRCO_SHAPES = (
    "circle",
    "star",
    "heart",
    "square",
    "triangle",
    "cross",
    "diamond",
    "hexagon",
)
CHANGEABLE = ("color", "pattern", "size", "length")
CHANGE_COUNTS = {1: 0.45, 2: 0.55}
FREE_COUNTS = {0: 0.15, 1: 0.5, 2: 0.35}
CONCEPT_EXTRA_P = 0.35  # the shared concept also names the kept color or pattern
MIN_GTS = 2
MAX_GTS = 16
MIN_TEXT_CONFUSERS = 3
MIN_IMAGE_CONFUSERS = 3
CIRCO_IMAGE_KIND = "fiq-circo"  # render() draws a single FashionIQ-style object
_MAX_ID = 600_000  # COCO 2017 unlabeled ids are below this

_FREE_PREPOSITION = {
    "color": "in any color",
    "pattern": "with any pattern",
    "size": "of any size",
    "length": "of any length",
}


@dataclass(frozen=True)
class CircoSize:
    """How much one size generates: gallery images, queries per split, vocabulary sizes."""

    images: int
    queries: dict[str, int]
    vocab: dict[str, int]

    def as_dict(self) -> dict[str, Any]:
        """The spec as a plain dict (as written to ``synthetic_circo.json``)."""
        return asdict(self)


CIRCO_SIZES: dict[str, CircoSize] = {
    "tiny": CircoSize(
        images=360,
        queries={"val": 40, "test": 40},
        vocab={"shape": 4, "color": 5, "pattern": 3, "size": 3, "length": 3},
    ),
    "compact": CircoSize(  # as small (zero-shot evaluation only: no training data)
        images=1200,
        queries={"val": 120, "test": 240},
        vocab={"shape": 6, "color": 7, "pattern": 4, "size": 3, "length": 3},
    ),
    "small": CircoSize(
        images=1200,
        queries={"val": 120, "test": 240},
        vocab={"shape": 6, "color": 7, "pattern": 4, "size": 3, "length": 3},
    ),
    "default": CircoSize(  # the query counts of the real CIRCO
        images=3000,
        queries={"val": 220, "test": 800},
        vocab={"shape": 8, "color": 8, "pattern": 5, "size": 3, "length": 3},
    ),
}


def circo_values(size: str) -> dict[str, tuple[str, ...]]:
    """The attribute values one size draws from."""
    vocab = CIRCO_SIZES[size].vocab
    full = {
        "shape": CIRCO_SHAPES,
        "color": FIQ_COLORS,
        "pattern": FIQ_PATTERNS,
        "size": FIQ_SIZES,
        "length": FIQ_LENGTHS,
    }
    return {a: full[a][: vocab[a]] for a in FIQ_ATTRIBUTES}


# --------------------------------------------------------------------------- planning


@dataclass
class CircoImage:
    """One gallery image of the synthetic CIRCO set."""

    img_id: int
    attributes: dict[str, str]
    width: int
    height: int


def plan_circo_images(
    seed: int, spec: CircoSize, values: Mapping[str, Sequence[str]]
) -> list[CircoImage]:
    """The gallery: random COCO-like ids, attributes drawn with repetition, sizes."""
    rng = seeded_rng(seed, "circo", "images")
    ids = rng.sample(range(1, _MAX_ID), spec.images)
    images = []
    for img_id in ids:
        attrs = {a: rng.choice(values[a]) for a in FIQ_ATTRIBUTES}
        r = rng.random()
        width, height = (80, 64) if r < 0.35 else (64, 80) if r < 0.5 else (64, 64)
        images.append(CircoImage(img_id, attrs, width, height))
    return images


def _concept(ref: Mapping[str, str], extra: str | None) -> str:
    """The shared concept: "a star", "a red star", "a striped star"."""
    words = [ref["shape"]]
    if extra == "color":
        words.insert(0, ref["color"])
    elif extra == "pattern":
        words.insert(0, PATTERN_ADJ[ref["pattern"]])
    return f"{article(words[0])} {' '.join(words)}"


def _free_phrase(free: Sequence[str], rng: random.Random) -> str:
    """What the caption says about the free attributes ("of any size", "the color does
    not matter", "the size and the length do not matter")."""
    if len(free) == 1:
        (a,) = free
        return rng.choice((_FREE_PREPOSITION[a], f"the {a} does not matter", f"any {a} is fine"))
    if rng.random() < 0.5:
        return " and ".join(_FREE_PREPOSITION[a] for a in free)
    return " and ".join(f"the {a}" for a in free) + " do not matter"


def _aspects(edits: Sequence[Mapping[str, Any]], caption: str) -> list[str]:
    """Semantic aspects (the official vocabulary) the change part of a caption exercises."""
    out = []
    if any(e["op"] == "set" for e in edits):
        out.append("direct_addressing")
    if any(e["op"] != "set" for e in edits):
        out.append("comparative_statement")
    if " instead of " in caption or " rather than " in caption or " not " in caption:
        out.append("compare_change")
    if " and " in caption:
        out.append("statement_with_conjunction")
    return out


def _enough_confusers(
    table: AttributeIndex,
    ref_row: int,
    gt_rows: np.ndarray,
    requirements: Sequence[Mapping[str, Any]],
) -> bool:
    """Whether enough images besides the reference and the ground truths satisfy the text
    alone, and enough share at least as many attributes with the reference as a GT does."""
    text = np.ones(table.matrix.shape[0], dtype=bool)
    for requirement in requirements:
        text &= table.satisfied(requirement)
    shared = (table.matrix == table.matrix[ref_row][None, :]).sum(axis=1)
    image = shared >= shared[gt_rows].max()
    text[gt_rows] = image[gt_rows] = False
    text[ref_row] = image[ref_row] = False
    return text.sum() >= MIN_TEXT_CONFUSERS and image.sum() >= MIN_IMAGE_CONFUSERS


def _try_query(
    rng: random.Random,
    images: Sequence[CircoImage],
    table: AttributeIndex,
    ref_row: int,
    values: Mapping[str, Sequence[str]],
) -> dict[str, Any] | None:
    """One random query on reference ``ref_row``, or None when it misses the constraints."""
    ref = images[ref_row].attributes
    n_changes = weighted_choice(rng, CHANGE_COUNTS)
    picked = set(rng.sample(CHANGEABLE, n_changes))
    changed = [a for a in CHANGEABLE if a in picked]
    rest = [a for a in CHANGEABLE if a not in changed]
    n_free = min(weighted_choice(rng, FREE_COUNTS), len(rest))
    picked = set(rng.sample(rest, n_free))
    free = [a for a in rest if a in picked]
    kept_extra = [a for a in ("color", "pattern") if a in rest and a not in free]
    extra = rng.choice(kept_extra) if kept_extra and rng.random() < CONCEPT_EXTRA_P else None

    edits = [fiq_edit(a, values[a], ref[a], rng) for a in changed]
    composed = {**ref, **{e["attribute"]: e["to"] for e in edits}}
    constrained = {a: v for a, v in composed.items() if a not in free}
    matches = table.matches_subset(constrained) == len(constrained)
    gt_rows = np.flatnonzero(matches)
    if not MIN_GTS <= gt_rows.size <= MAX_GTS:
        return None
    requirements = [
        {"attributes": [e["attribute"]], "values": e.pop("requires"), "quantifier": "any"}
        for e in edits
    ]
    if not _enough_confusers(table, ref_row, gt_rows, requirements):
        return None

    change_phrase = join_phrases([fiq_phrase(e, rng) for e in edits])
    phrase = change_phrase + (", " + _free_phrase(free, rng) if free else "")
    caption = caption_noise(phrase, rng)
    gts = [images[i].img_id for i in gt_rows]
    target = rng.choice(gts)
    others = [g for g in gts if g != target]
    rng.shuffle(others)
    return {
        "reference": images[ref_row].img_id,
        "target": target,
        "gts": [target, *others],
        "caption": caption,
        "concept": _concept(ref, extra),
        "changes": {e["attribute"]: e["to"] for e in edits},
        "free": free,
        "kept": [a for a in FIQ_ATTRIBUTES if a not in changed and a not in free],
        "edits": edits,
        "requirements": requirements,
        "aspects": _aspects(edits, change_phrase),
    }


def plan_circo_queries(
    seed: int,
    spec: CircoSize,
    images: Sequence[CircoImage],
    values: Mapping[str, Sequence[str]],
) -> dict[str, list[dict[str, Any]]]:
    """The queries of every split; each reference serves one query at most."""
    rng = seeded_rng(seed, "circo", "queries")
    table = AttributeIndex([im.attributes for im in images])
    order = rng.sample(range(len(images)), len(images))
    cursor = 0
    out: dict[str, list[dict[str, Any]]] = {}
    for split in CIRCO_SPLITS:
        queries: list[dict[str, Any]] = []
        while len(queries) < spec.queries[split]:
            if cursor >= len(order):
                raise RuntimeError("could not place the CIRCO queries; the gallery is too small")
            ref_row = order[cursor]
            cursor += 1
            for _attempt in range(8):
                query = _try_query(rng, images, table, ref_row, values)
                if query is not None:
                    queries.append(query)
                    break
        out[split] = queries
    return out


# --------------------------------------------------------------------------- records


def circo_annotation(query: Mapping[str, Any], qid: int, split: str) -> dict[str, Any]:
    """One record with the official field order (val) or the official test fields."""
    if split == "test":
        return {
            "reference_img_id": query["reference"],
            "relative_caption": query["caption"],
            "shared_concept": query["concept"],
            "id": qid,
        }
    return {
        "reference_img_id": query["reference"],
        "target_img_id": query["target"],
        "relative_caption": query["caption"],
        "shared_concept": query["concept"],
        "gt_img_ids": query["gts"],
        "id": qid,
        "semantic_aspects": query["aspects"],
    }


def circo_sidecar(query: Mapping[str, Any], qid: int) -> dict[str, Any]:
    """The ``metadata/queries.{split}.json`` record of one query (ids as strings)."""
    return {
        "id": qid,
        "reference": str(query["reference"]),
        "target": str(query["target"]),
        "gts": [str(g) for g in query["gts"]],
        "changes": query["changes"],
        "free": query["free"],
        "kept": query["kept"],
        "edits": query["edits"],
        "requirements": query["requirements"],
    }
