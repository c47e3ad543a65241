"""A synthetic CIRCO-format set: one-object images and queries with MULTIPLE ground truths.

``generate_circo(out, seed=0, size="default")`` writes, in the official CIRCO layout::

    out/circo/annotations/{val,test}.json          official records (test: no target_img_id,
                                                   gt_img_ids, semantic_aspects)
    out/circo/COCO2017_unlabeled/annotations/image_info_unlabeled2017.json   the gallery index
    out/circo/COCO2017_unlabeled/unlabeled2017/<id:012d>.jpg                 the gallery
    out/circo/metadata/images.json                 image id -> attributes, description, size
    out/circo/metadata/queries.{val,test}.json     one record per annotation record: the
                                                   structured query and its ground truths
    out/circo/metadata/synthetic_circo.json        summary; written last (completeness marker)

The world is the FashionIQ-style one of :mod:`bench.data.synthetic`: one object on a
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

JPEGs are written with fixed settings (quality 90, no EXIF, no timestamps): the same seed
and size give byte-identical files.
"""

from __future__ import annotations

import json
import random
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from bench.core.errors import DataFormatError
from bench.data.circo import (
    COCO_FOLDER,
    IMAGE_FOLDER,
    IMAGE_INFO,
    image_file_name,
    load_circo_split,
)
from bench.data.synthetic import (
    FIQ_ATTRIBUTES,
    FIQ_COLORS,
    FIQ_LENGTHS,
    FIQ_PATTERNS,
    FIQ_SIZES,
    PATTERN_ADJ,
    AttributeIndex,
    _article,
    _cap,
    _fiq_edit,
    _fiq_phrase,
    _join_phrases,
    _rng,
    _weighted,
    describe,
    render,
)
from bench.metrics import circo_metrics

GENERATOR_ID = "cirbench.bench.data.synthetic_circo"
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
JPEG_QUALITY = 90
_KIND = "fiq-circo"  # render() draws a single FashionIQ-style object
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
        return asdict(self)


CIRCO_SIZES: dict[str, CircoSize] = {
    "tiny": CircoSize(
        images=360,
        queries={"val": 40, "test": 40},
        vocab={"shape": 4, "color": 5, "pattern": 3, "size": 3, "length": 3},
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
class _Img:
    img_id: int
    attributes: dict[str, str]
    width: int
    height: int


def _plan_images(seed: int, spec: CircoSize, values: Mapping[str, Sequence[str]]) -> list[_Img]:
    rng = _rng(seed, "circo", "images")
    ids = rng.sample(range(1, _MAX_ID), spec.images)
    images = []
    for img_id in ids:
        attrs = {a: rng.choice(values[a]) for a in FIQ_ATTRIBUTES}
        r = rng.random()
        width, height = (80, 64) if r < 0.35 else (64, 80) if r < 0.5 else (64, 64)
        images.append(_Img(img_id, attrs, width, height))
    return images


def _concept(ref: Mapping[str, str], extra: str | None) -> str:
    """The shared concept: "a star", "a red star", "a striped star"."""
    words = [ref["shape"]]
    if extra == "color":
        words.insert(0, ref["color"])
    elif extra == "pattern":
        words.insert(0, PATTERN_ADJ[ref["pattern"]])
    return f"{_article(words[0])} {' '.join(words)}"


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


def _try_query(
    rng: random.Random,
    images: Sequence[_Img],
    table: AttributeIndex,
    ref_row: int,
    values: Mapping[str, Sequence[str]],
) -> dict[str, Any] | None:
    """One random query on reference ``ref_row``, or None when it misses the constraints."""
    ref = images[ref_row].attributes
    n_changes = _weighted(rng, CHANGE_COUNTS)
    picked = set(rng.sample(CHANGEABLE, n_changes))
    changed = [a for a in CHANGEABLE if a in picked]
    rest = [a for a in CHANGEABLE if a not in changed]
    n_free = min(_weighted(rng, FREE_COUNTS), len(rest))
    picked = set(rng.sample(rest, n_free))
    free = [a for a in rest if a in picked]
    kept_extra = [a for a in ("color", "pattern") if a in rest and a not in free]
    extra = rng.choice(kept_extra) if kept_extra and rng.random() < CONCEPT_EXTRA_P else None

    edits = [_fiq_edit(a, values[a], ref[a], rng) for a in changed]
    composed = {**ref, **{e["attribute"]: e["to"] for e in edits}}
    constrained = {a: v for a, v in composed.items() if a not in free}
    matches = _matches_subset(table, constrained) == len(constrained)
    gt_rows = np.flatnonzero(matches)
    if not MIN_GTS <= gt_rows.size <= MAX_GTS:
        return None
    requirements = [
        {"attributes": [e["attribute"]], "values": e.pop("requires"), "quantifier": "any"}
        for e in edits
    ]
    text = np.ones(len(images), dtype=bool)
    for requirement in requirements:
        text &= table.satisfied(requirement)
    shared = (table.matrix == table.matrix[ref_row][None, :]).sum(axis=1)
    image = shared >= shared[gt_rows].max()
    text[gt_rows] = image[gt_rows] = False
    text[ref_row] = image[ref_row] = False
    if text.sum() < MIN_TEXT_CONFUSERS or image.sum() < MIN_IMAGE_CONFUSERS:
        return None

    change_phrase = _join_phrases([_fiq_phrase(e, rng) for e in edits])
    phrase = change_phrase + (", " + _free_phrase(free, rng) if free else "")
    caption = _cap(phrase, rng)
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


def _plan_queries(
    seed: int, spec: CircoSize, images: Sequence[_Img], values: Mapping[str, Sequence[str]]
) -> dict[str, list[dict[str, Any]]]:
    """The queries of every split; each reference serves one query at most."""
    rng = _rng(seed, "circo", "queries")
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


# --------------------------------------------------------------------------- writing


def _dump(path: Path, data: Any, *, indent: int | None = None, sort_keys: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(data, indent=indent, sort_keys=sort_keys, ensure_ascii=False)
    path.write_text(text + "\n", encoding="utf-8")


def _annotation(query: Mapping[str, Any], qid: int, split: str) -> dict[str, Any]:
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


def _sidecar(query: Mapping[str, Any], qid: int) -> dict[str, Any]:
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


_MARKER = "synthetic_circo.json"
_IN_PROGRESS = ".synthetic-circo-in-progress"


def _prepare(folder: Path) -> None:
    """Clear an earlier output of ``generate_circo``; refuse any other non-empty folder."""
    if not folder.exists():
        return
    if not any(folder.iterdir()):
        return
    ours = (folder / _IN_PROGRESS).exists() or (folder / "metadata" / _MARKER).is_file()
    if not ours:
        raise FileExistsError(
            f"{folder}: not empty and not a synthetic CIRCO folder; choose another output"
        )
    shutil.rmtree(folder)


def generate_circo(
    out: str | Path, *, seed: int = 0, size: str = "default", progress: bool = True
) -> dict[str, Any]:
    """Write the synthetic CIRCO set to ``out/circo/`` and return its summary.

    ``out/circo`` must be absent, empty, or an earlier output of this function (replaced).
    ``metadata/synthetic_circo.json`` is written last and marks a complete set.
    """
    if size not in CIRCO_SIZES:
        raise ValueError(f"unknown size {size!r}; expected one of {sorted(CIRCO_SIZES)}")
    spec = CIRCO_SIZES[size]
    folder = Path(out) / "circo"
    _prepare(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / _IN_PROGRESS).write_text(f"seed={seed} size={size}\n", encoding="utf-8")

    values = circo_values(size)
    images = _plan_images(seed, spec, values)
    queries = _plan_queries(seed, spec, images, values)

    for split in CIRCO_SPLITS:
        records = [_annotation(q, i, split) for i, q in enumerate(queries[split])]
        _dump(folder / "annotations" / f"{split}.json", records, indent=4)
        sidecar = [_sidecar(q, i) for i, q in enumerate(queries[split])]
        _dump(folder / "metadata" / f"queries.{split}.json", sidecar, indent=2)
    info = {
        "info": {
            "description": "cirbench synthetic CIRCO gallery (COCO 2017 unlabeled layout)",
            "generator": GENERATOR_ID,
            "seed": seed,
            "size": size,
        },
        "licenses": [],
        "images": [
            {
                "file_name": image_file_name(im.img_id),
                "height": im.height,
                "width": im.width,
                "id": im.img_id,
            }
            for im in images
        ],
        "categories": [],
    }
    coco = folder / COCO_FOLDER
    _dump(coco / "annotations" / IMAGE_INFO, info)
    _dump(
        folder / "metadata" / "images.json",
        {
            str(im.img_id): {
                "attributes": im.attributes,
                "description": describe(im.attributes),
                "width": im.width,
                "height": im.height,
            }
            for im in images
        },
        sort_keys=True,
    )
    image_dir = coco / IMAGE_FOLDER
    image_dir.mkdir(parents=True, exist_ok=True)
    for im in tqdm(images, desc=f"synthetic circo {size}: images", disable=not progress):
        picture = render(
            _KIND, im.attributes, im.width, im.height, _rng(seed, "circo", "render", im.img_id)
        )
        picture.save(
            image_dir / image_file_name(im.img_id),
            format="JPEG",
            quality=JPEG_QUALITY,
            optimize=False,
            progressive=False,
            subsampling=0,
        )

    gts = [len(q["gts"]) for split in CIRCO_SPLITS for q in queries[split]]
    summary = {
        "generator": GENERATOR_ID,
        "seed": seed,
        "size": size,
        "spec": spec.as_dict(),
        "values": {a: list(v) for a, v in values.items()},
        "counts": {
            "images": len(images),
            **{
                split: {
                    "queries": len(queries[split]),
                    "gts": sum(len(q["gts"]) for q in queries[split]),
                }
                for split in CIRCO_SPLITS
            },
            "min_gts": min(gts),
            "max_gts": max(gts),
        },
    }
    _dump(folder / "metadata" / _MARKER, summary, indent=2, sort_keys=True)
    (folder / _IN_PROGRESS).unlink()
    return summary


# --------------------------------------------------------------------------- baselines

RANKERS = ("image_only", "text_only", "oracle")
JITTER = 0.005


def _read(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


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
        scores["oracle"][q] = _matches_subset(table, constrained)
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


def _matches_subset(table: AttributeIndex, attributes: Mapping[str, str]) -> np.ndarray:
    """Per image, how many of ``attributes`` (a subset of the table's attributes) it has."""
    hits = np.zeros(table.matrix.shape[0], dtype=np.float64)
    for attribute, value in attributes.items():
        code = table.codes[attribute].get(value, -1)
        hits += table.matrix[:, table.attributes.index(attribute)] == code
    return hits


def format_circo_baselines(results: Mapping[str, Mapping[str, float]]) -> str:
    """A plain-text table of :func:`circo_attribute_baselines` (mAP in %)."""
    columns = tuple(next(iter(results.values())))
    lines = ["  circo      " + " ".join(f"{c:>9s}" for c in columns)]
    for ranker, metrics in results.items():
        lines.append(f"  {ranker:>10s} " + " ".join(f"{metrics[c]:9.1f}" for c in columns))
    return "\n".join(lines)
