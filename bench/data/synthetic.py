"""A synthetic, compositional CIR benchmark in the official FashionIQ and CIRR layouts.

``generate(out, seed=0, size="default")`` writes::

    out/synthetic.json                          generator version, seed, size, counts, vocabularies
    out/fashioniq/captions/cap.{cat}.{split}.json        official FashionIQ records
    out/fashioniq/image_splits/split.{cat}.{split}.json  official image lists
    out/fashioniq/images/<name>.png                      fiq-<cat>-000123 (all splits)
    out/fashioniq/metadata/images.json                   name -> attributes, description
    out/fashioniq/metadata/modifications.{cat}.{split}.json
    out/cirr/captions/cap.rc2.{train,val,test1}.json     official CIRR records
    out/cirr/image_splits/split.rc2.{split}.json         name -> "./train/<k>/<name>.png",
                                                         "./dev/<name>.png", "./test1/<name>.png"
    out/cirr/{train/<k>,dev,test1}/<name>.png
    out/cirr/metadata/images.json
    out/cirr/metadata/modifications.rc2.{split}.json
    out/pool/images/<name>.png                  unlabeled pool (in no triplet): pool-fiq-<cat>-*,
                                                pool-cirr-*; for positive scaling
    out/pool/metadata/images.json               name -> dataset, category, attributes, description
    out/circo/                                  CIRCO layout: annotations/{val,test}.json,
                                                COCO2017_unlabeled/unlabeled2017/<id>.jpg,
                                                metadata/; multiple ground truths per query
                                                (:mod:`bench.data.synthetic_circo`)

FashionIQ-style images are one object on a white background (64 px; some 64x88 / 88x64)
with five attributes: shape (each category its own family of silhouettes), color,
pattern, size and length. CIRR-style images are scenes (96 px; some 96x132 / 132x96)
with a background and 2-3 objects (color + shape) in the slots left / middle / right.

The task is compositional by construction: every image's attribute tuple is unique
within its split (and category), so the reference attributes with the text's changes
applied ("composed attributes") identify exactly one image, the target. Edits change
1-3 attributes and many are relative ("is larger", "move the star to the right"), so
neither the reference alone (many near neighbours) nor the text alone (many images with
the attributes it mentions) finds the target. The sidecar ``modifications`` files (one
record per caption record, same order) store each triplet's structured edits:
``changes`` (attribute -> new value; the oracle) and ``requirements`` (what the text
alone asks for: ``{"attributes": [...], "values": [...], "quantifier": "any" | "none"}``).
They also keep the target of test splits, so the synthetic test splits can be scored.

Output is deterministic: the same seed and size give byte-identical files.
"""

from __future__ import annotations

import itertools
import json
import math
import random
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw
from tqdm import tqdm

GENERATOR_VERSION = "1.1"
_GENERATOR_ID = "cirbench.bench.data.synthetic"

# --------------------------------------------------------------------------- vocabularies

FIQ_CATEGORIES = ("dress", "shirt", "toptee")
FIQ_SPLITS = ("train", "val", "test")
CIRR_SPLITS = ("train", "val", "test1")
CIRR_FOLDERS = {"train": "train", "val": "dev", "test1": "test1"}

#: One family of silhouettes per category, so the categories look different.
FIQ_SHAPES: dict[str, tuple[str, ...]] = {
    "dress": ("triangle", "trapezoid", "hourglass", "diamond", "bell", "arch"),
    "shirt": ("square", "t-shape", "cross", "pentagon", "octagon", "l-shape"),
    "toptee": ("circle", "heart", "star", "hexagon", "semicircle", "drop"),
}
FIQ_COLORS = (
    "red",
    "blue",
    "green",
    "yellow",
    "purple",
    "orange",
    "pink",
    "teal",
    "brown",
    "black",
)
FIQ_PATTERNS = ("solid", "stripes", "dots", "checks", "zigzag")
FIQ_SIZES = ("small", "medium", "large")
FIQ_LENGTHS = ("short", "regular", "long")
FIQ_ATTRIBUTES = ("shape", "color", "pattern", "size", "length")
FIQ_ORDINAL = ("size", "length")

CIRR_SHAPES = ("circle", "square", "triangle", "star", "heart", "cross")
CIRR_COLORS = ("red", "blue", "green", "yellow", "purple", "orange")
CIRR_BACKGROUNDS = ("white", "grey", "black", "light blue")
CIRR_SLOTS = ("left", "middle", "right")
CIRR_ATTRIBUTES = ("background", *CIRR_SLOTS)
EMPTY = "none"

RGB: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 40),
    "orange": (245, 130, 20),
    "yellow": (245, 205, 10),
    "green": (40, 160, 60),
    "teal": (0, 150, 150),
    "blue": (30, 70, 210),
    "purple": (130, 50, 180),
    "pink": (240, 110, 180),
    "brown": (120, 70, 30),
    "black": (25, 25, 25),
}
BACKGROUND_RGB: dict[str, tuple[int, int, int]] = {
    "white": (250, 250, 250),
    "grey": (140, 140, 140),
    "black": (20, 20, 20),
    "light blue": (160, 205, 240),
}
FIQ_BACKGROUND = (250, 250, 250)
_DARK_INK = (30, 30, 30)
_LIGHT_INK = (255, 255, 255)
_DARK_INK_COLORS = ("orange", "yellow", "pink")

# --------------------------------------------------------------------------- sizes


@dataclass(frozen=True)
class SizeSpec:
    """How much one size generates.

    FashionIQ counts are per category; ``fiq_vocab`` says how many values of each
    attribute (the first ones of each vocabulary) are used, which keeps small galleries
    as dense in attribute space as large ones. CIRR images come in families of
    ``cirr_family`` near-identical scenes, cut into img_sets of 6.
    """

    fiq_images: dict[str, int]
    fiq_triplets: dict[str, int]
    fiq_vocab: dict[str, int]
    cirr_images: dict[str, int]
    cirr_queries: dict[str, int]
    cirr_family: int
    pool_fiq: int
    pool_cirr: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


SIZES: dict[str, SizeSpec] = {
    "tiny": SizeSpec(
        fiq_images={"train": 200, "val": 200, "test": 200},
        fiq_triplets={"train": 160, "val": 100, "test": 60},
        fiq_vocab={"shape": 3, "color": 4, "pattern": 3, "size": 3, "length": 3},
        cirr_images={"train": 216, "val": 216, "test1": 216},
        cirr_queries={"train": 240, "val": 200, "test1": 120},
        cirr_family=24,
        pool_fiq=40,
        pool_cirr=96,
    ),
    "small": SizeSpec(
        fiq_images={"train": 800, "val": 400, "test": 300},
        fiq_triplets={"train": 800, "val": 300, "test": 200},
        fiq_vocab={"shape": 5, "color": 7, "pattern": 4, "size": 3, "length": 3},
        cirr_images={"train": 960, "val": 480, "test1": 288},
        cirr_queries={"train": 1200, "val": 500, "test1": 300},
        cirr_family=24,
        pool_fiq=200,
        pool_cirr=480,
    ),
    "default": SizeSpec(
        fiq_images={"train": 2400, "val": 1000, "test": 600},
        fiq_triplets={"train": 2000, "val": 600, "test": 400},
        fiq_vocab={"shape": 6, "color": 10, "pattern": 5, "size": 3, "length": 3},
        cirr_images={"train": 4800, "val": 1200, "test1": 600},
        cirr_queries={"train": 7200, "val": 1200, "test1": 600},
        cirr_family=24,
        pool_fiq=400,
        pool_cirr=1200,
    ),
}

# How many edits a FashionIQ triplet has, and how often each attribute is edited.
FIQ_EDIT_COUNTS = {1: 0.15, 2: 0.55, 3: 0.30}
FIQ_EDIT_WEIGHTS = {"shape": 1.0, "color": 1.0, "pattern": 1.0, "size": 1.2, "length": 1.2}
# Triplets with c > 1 categorical edits (shape, color, pattern) are kept with
# probability FIQ_MULTI_CATEGORICAL_P ** (c - 1).
FIQ_MULTI_CATEGORICAL_P = 0.2
FIQ_RELATIVE_P = 0.8  # an ordinal edit is relative ("is larger") with this probability
# CIRR: edit kinds of the random walk that grows a family, and edits per query.
CIRR_WALK_WEIGHTS = {
    "background": 1.0,
    "recolor": 2.0,
    "reshape": 1.5,
    "replace": 1.0,
    "add": 1.0,
    "remove": 1.0,
    "swap": 0.7,
    "move": 0.7,
}
CIRR_EDIT_COUNT_WEIGHTS = {1: 0.35, 2: 1.0, 3: 0.25}
CIRR_MAX_EDITS = 3
CIRR_PALETTE = (3, 3, 2)  # colors, shapes, backgrounds one family draws from
CIRR_FAMILIES_PER_PALETTE = 8  # families sharing a palette share objects: text-only confusers
CIRR_RELATIVE_P = 0.6  # name a new color by another object of the reference when possible
# Every triplet's split holds at least this many other images that satisfy everything the
# text asks for (text-only confusers) and that share at least as many attributes with
# the reference as the target does (image-only confusers, the reference not counted).
MIN_TEXT_CONFUSERS = 5
MIN_IMAGE_CONFUSERS = 3


def vocabularies() -> dict[str, Any]:
    """Every attribute vocabulary, as written to ``synthetic.json``."""
    return {
        "fashioniq": {
            "attributes": list(FIQ_ATTRIBUTES),
            "shape": {c: list(s) for c, s in FIQ_SHAPES.items()},
            "color": list(FIQ_COLORS),
            "pattern": list(FIQ_PATTERNS),
            "size": list(FIQ_SIZES),
            "length": list(FIQ_LENGTHS),
        },
        "cirr": {
            "attributes": list(CIRR_ATTRIBUTES),
            "background": list(CIRR_BACKGROUNDS),
            "shape": list(CIRR_SHAPES),
            "color": list(CIRR_COLORS),
            "slot": [EMPTY, "<color> <shape>"],
        },
    }


def _fiq_values(category: str, spec: SizeSpec) -> dict[str, tuple[str, ...]]:
    full = {
        "shape": FIQ_SHAPES[category],
        "color": FIQ_COLORS,
        "pattern": FIQ_PATTERNS,
        "size": FIQ_SIZES,
        "length": FIQ_LENGTHS,
    }
    return {a: full[a][: spec.fiq_vocab[a]] for a in FIQ_ATTRIBUTES}


class AttributeIndex:
    """Attributes of a list of images as an integer matrix, for vectorised matching.

    Requirements are ``{"attributes": [...], "values": [...], "quantifier": "any"|"none"}``:
    "any" holds when one of the listed attributes takes one of the values, "none" when
    none does.
    """

    def __init__(self, rows: Sequence[Mapping[str, str]]) -> None:
        self.attributes = tuple(rows[0]) if rows else ()
        self.codes: dict[str, dict[str, int]] = {a: {} for a in self.attributes}
        matrix = [[self._code(a, row[a]) for a in self.attributes] for row in rows]
        self.matrix = np.asarray(matrix, dtype=np.int64).reshape(len(rows), len(self.attributes))

    def _code(self, attribute: str, value: str) -> int:
        table = self.codes[attribute]
        return table.setdefault(value, len(table))

    def matches(self, attributes: Mapping[str, str]) -> np.ndarray:
        """Per image, how many of ``attributes`` it has."""
        code = [self.codes[a].get(attributes[a], -1) for a in self.attributes]
        return (self.matrix == np.asarray(code, dtype=np.int64)[None, :]).sum(axis=1)

    def satisfied(self, requirement: Mapping[str, Any]) -> np.ndarray:
        """Per image, whether it meets one requirement."""
        hit = np.zeros(self.matrix.shape[0], dtype=bool)
        for attribute in requirement["attributes"]:
            table = self.codes[attribute]
            codes = [table[v] for v in requirement["values"] if v in table]
            hit |= np.isin(self.matrix[:, self.attributes.index(attribute)], codes)
        if requirement["quantifier"] == "none":
            return ~hit
        if requirement["quantifier"] != "any":
            raise ValueError(f"unknown quantifier {requirement['quantifier']!r}")
        return hit

    def confusers(
        self, reference: int, target: int, requirements: Sequence[Mapping[str, Any]]
    ) -> tuple[int, int]:
        """(text-only, image-only) confusers of a triplet given by row indices."""
        text = np.ones(self.matrix.shape[0], dtype=bool)
        for requirement in requirements:
            text &= self.satisfied(requirement)
        shared = (self.matrix == self.matrix[reference][None, :]).sum(axis=1)
        image = shared >= shared[target]
        text[[reference, target]] = False
        image[[reference, target]] = False
        return int(text.sum()), int(image.sum())


def _enough_confusers(
    index: AttributeIndex, reference: int, target: int, requirements: Sequence[Mapping[str, Any]]
) -> bool:
    text, image = index.confusers(reference, target, requirements)
    return text >= MIN_TEXT_CONFUSERS and image >= MIN_IMAGE_CONFUSERS


# --------------------------------------------------------------------------- descriptions

PATTERN_ADJ = {
    "solid": "solid",
    "stripes": "striped",
    "dots": "dotted",
    "checks": "checkered",
    "zigzag": "zigzag",
}
_POSITION = {"left": "on the left", "middle": "in the middle", "right": "on the right"}


def _article(word: str) -> str:
    return "an" if word[:1] in "aeiou" or word.startswith("hour") else "a"


def describe(attributes: Mapping[str, str]) -> str:
    """The oracle caption of an image from its attributes ("a small red striped circle")."""
    if "shape" in attributes:
        words = [attributes["size"]]
        if attributes["length"] != "regular":
            words.append(attributes["length"])
        if attributes["pattern"] == "solid":
            words += ["solid", attributes["color"]]
        else:
            words += [attributes["color"], PATTERN_ADJ[attributes["pattern"]]]
        words.append(attributes["shape"])
        return f"{_article(words[0])} {' '.join(words)}"
    if "background" in attributes:
        parts = [
            f"{_article(attributes[s])} {attributes[s]} {_POSITION[s]}"
            for s in CIRR_SLOTS
            if attributes[s] != EMPTY
        ]
        objects = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
        return f"{objects}, on a {attributes['background']} background"
    raise ValueError(f"not a synthetic attribute set: {sorted(attributes)}")


# --------------------------------------------------------------------------- random helpers


def _rng(seed: int, *tags: object) -> random.Random:
    """An independent generator for one part of the benchmark (str seeding is stable)."""
    return random.Random("/".join(["cirbench-synthetic", str(seed), *map(str, tags)]))


def _weighted(rng: random.Random, weights: Mapping[Any, float]) -> Any:
    keys = list(weights)
    return rng.choices(keys, weights=[weights[k] for k in keys])[0]


def _weighted_sample(rng: random.Random, weights: Mapping[str, float], k: int) -> list[str]:
    pool = dict(weights)
    out: list[str] = []
    for _ in range(k):
        choice = _weighted(rng, pool)
        out.append(choice)
        del pool[choice]
    return out


def _cap(text: str, rng: random.Random) -> str:
    """Light human-style noise: sometimes capitalised, rarely a final period."""
    if rng.random() < 0.15:
        text = text[:1].upper() + text[1:]
    if rng.random() < 0.08:
        text += "."
    return text


# --------------------------------------------------------------------------- FashionIQ plan

_COLOR_WORDS = {
    "red": ("red", "red", "bright red"),
    "teal": ("teal", "turquoise"),
    "purple": ("purple", "violet"),
    "black": ("black",),
}
_PATTERN_NOUNS = {
    "solid": ("a solid color", "no pattern"),
    "stripes": ("stripes",),
    "dots": ("dots", "polka dots"),
    "checks": ("checks", "a check pattern"),
    "zigzag": ("zigzags", "a zigzag pattern"),
}
_PATTERN_SET = {
    "solid": ("is solid", "is plain", "has no pattern", "is a solid color"),
    "stripes": ("has stripes", "is striped", "has a striped pattern"),
    "dots": ("has polka dots", "is dotted", "has dots"),
    "checks": ("is checkered", "has a checked pattern", "is plaid"),
    "zigzag": ("has a zigzag pattern", "has zigzags", "is zigzag patterned"),
}
_ORDINAL_WORDS = {
    "size": {
        1: ("is larger", "is bigger", "is a bit bigger", "is slightly larger"),
        2: ("is much larger", "is a lot bigger", "is way bigger"),
        -1: ("is smaller", "is a bit smaller", "is slightly smaller"),
        -2: ("is much smaller", "is a lot smaller", "is way smaller"),
    },
    "length": {
        1: ("is longer", "is a bit longer", "is slightly longer"),
        2: ("is much longer", "is a lot longer"),
        -1: ("is shorter", "is a bit shorter", "is slightly shorter"),
        -2: ("is much shorter", "is a lot shorter"),
    },
}
_ORDINAL_SET = {
    "small": ("is small", "is a small one"),
    "medium": ("is medium sized", "is a medium size"),
    "large": ("is large", "is a large one"),
    "short": ("is short",),
    "regular": ("is regular length", "has a regular length"),
    "long": ("is long",),
}


def _color_word(color: str, rng: random.Random) -> str:
    return rng.choice(_COLOR_WORDS.get(color, (color,)))


def _fiq_phrase(edit: Mapping[str, Any], rng: random.Random) -> str:
    """One human-style partial caption for one FashionIQ edit."""
    attr, old, new = edit["attribute"], edit["from"], edit["to"]
    if attr == "color":
        c, o = _color_word(new, rng), _color_word(old, rng)
        return rng.choice(
            (
                f"is {c}",
                f"is {c}",
                f"is {c} instead of {o}",
                f"is {c} colored",
                f"is in {c}",
                f"has a {c} color",
                f"{c} not {o}",
                f"is {c} rather than {o}",
            )
        )
    if attr == "pattern":
        options = list(_PATTERN_SET[new])
        if old != "solid" and new != "solid":
            to_n, from_n = rng.choice(_PATTERN_NOUNS[new]), rng.choice(_PATTERN_NOUNS[old])
            options += [f"has {to_n} instead of {from_n}", f"{to_n} instead of {from_n}"]
        if new == "solid":
            options.append(f"has no {rng.choice(_PATTERN_NOUNS[old])}")
        return rng.choice(options)
    if attr == "shape":
        return rng.choice(
            (
                f"is {_article(new)} {new}",
                f"is {new} shaped",
                f"has {_article(new)} {new} shape",
                f"is {_article(new)} {new} instead of {_article(old)} {old}",
                f"has {_article(new)} {new} silhouette",
            )
        )
    if edit["op"] == "set":
        return rng.choice(_ORDINAL_SET[new])
    return rng.choice(_ORDINAL_WORDS[attr][edit["steps"]])


def _join_phrases(phrases: Sequence[str]) -> str:
    """'is red' + 'is larger' -> 'is red and larger'."""
    out = phrases[0]
    for phrase in phrases[1:]:
        if out.startswith("is ") and phrase.startswith("is "):
            phrase = phrase[3:]
        out += " and " + phrase
    return out


def _fiq_edit(attr: str, values: Sequence[str], current: str, rng: random.Random) -> dict[str, Any]:
    """A random edit of one attribute away from ``current``."""
    i = values.index(current)
    new = rng.choice([v for v in values if v != current])
    edit: dict[str, Any] = {"attribute": attr, "from": current, "to": new, "op": "set"}
    allowed = [new]
    if attr in FIQ_ORDINAL and rng.random() < FIQ_RELATIVE_P:
        steps = values.index(new) - i
        edit["op"] = "increase" if steps > 0 else "decrease"
        edit["steps"] = steps
        # Text alone knows only the direction and the amount, not the reference's value.
        allowed = list(values[steps:]) if steps > 0 else list(values[: len(values) + steps])
    edit["requires"] = allowed
    return edit


def _fiq_captions(edits: list[dict[str, Any]], rng: random.Random) -> list[str]:
    """Two partial captions that together mention every edit."""
    order = list(range(len(edits)))
    rng.shuffle(order)
    if len(edits) == 1:
        groups = [[0], [0]]
    elif len(edits) == 2:
        groups = [[order[0]], [order[1]]] if rng.random() < 0.6 else [order, [order[1]]]
    else:
        r = rng.random()
        if r < 0.45:
            groups = [order[:2], order[2:]]
        elif r < 0.8:
            groups = [order[:1], order[1:]]
        else:
            groups = [order, [order[0]]]
    if rng.random() < 0.5:
        groups.reverse()
    captions: list[str] = []
    for g in groups:
        for _ in range(4):  # two different phrasings when both captions say the same thing
            text = _join_phrases([_fiq_phrase(edits[i], rng) for i in g])
            if text not in captions:
                break
        captions.append(_cap(text, rng))
        for i in g:
            edits[i].setdefault("captions", []).append(len(captions) - 1)
    return captions


@dataclass
class _Image:
    """One image to render."""

    name: str
    kind: str  # "fiq-<category>" or "cirr"
    attributes: dict[str, str]
    width: int
    height: int
    path: str  # relative to the dataset (or pool) folder
    split: str | None = None


def _aspect(rng: random.Random, base: int, long: int) -> tuple[int, int]:
    r = rng.random()
    if r < 0.15:
        return base, long
    if r < 0.30:
        return long, base
    return base, base


def _plan_fashioniq(
    seed: int, spec: SizeSpec
) -> tuple[list[_Image], dict[tuple[str, str], list[dict]], dict[tuple[str, str], list[dict]]]:
    """Images, caption records and modification records of every category and split."""
    images: list[_Image] = []
    captions: dict[tuple[str, str], list[dict]] = {}
    mods: dict[tuple[str, str], list[dict]] = {}
    for category in FIQ_CATEGORIES:
        values = _fiq_values(category, spec)
        space = list(itertools.product(*(values[a] for a in FIQ_ATTRIBUTES)))
        counter = 0
        for split in FIQ_SPLITS:
            rng = _rng(seed, "fashioniq", category, split)
            n = spec.fiq_images[split]
            if n > len(space):
                raise ValueError(f"{n} images do not fit the {len(space)} attribute tuples")
            tuples = [space[i] for i in rng.sample(range(len(space)), n)]
            by_tuple: dict[tuple[str, ...], str] = {}
            for t in tuples:
                name = f"fiq-{category}-{counter:06d}"
                counter += 1
                by_tuple[t] = name
                w, h = _aspect(rng, 64, 88)
                attrs = dict(zip(FIQ_ATTRIBUTES, t, strict=True))
                path = f"images/{name}.png"
                images.append(_Image(name, f"fiq-{category}", attrs, w, h, path, split))
            names = list(by_tuple.values())
            records, sidecar = _fiq_triplets(rng, values, tuples, by_tuple, names, split, spec)
            captions[category, split] = records
            mods[category, split] = sidecar
    return images, captions, mods


def _fiq_triplets(
    rng: random.Random,
    values: Mapping[str, tuple[str, ...]],
    tuples: list[tuple[str, ...]],
    by_tuple: Mapping[tuple[str, ...], str],
    names: list[str],
    split: str,
    spec: SizeSpec,
) -> tuple[list[dict], list[dict]]:
    records: list[dict] = []
    sidecar: list[dict] = []
    used: set[tuple[str, str]] = set()
    index = AttributeIndex([dict(zip(FIQ_ATTRIBUTES, t, strict=True)) for t in tuples])
    row_of = {name: k for k, name in enumerate(names)}
    for _ in range(spec.fiq_triplets[split]):
        for _attempt in range(10_000):
            i = rng.randrange(len(tuples))
            ref = dict(zip(FIQ_ATTRIBUTES, tuples[i], strict=True))
            m = _weighted(rng, FIQ_EDIT_COUNTS)
            attrs = _weighted_sample(rng, FIQ_EDIT_WEIGHTS, m)
            categorical = sum(a not in FIQ_ORDINAL for a in attrs)
            if categorical > 1 and rng.random() >= FIQ_MULTI_CATEGORICAL_P ** (categorical - 1):
                continue  # several categorical edits would let the text alone find the target
            attrs = [a for a in FIQ_ATTRIBUTES if a in attrs]
            edits = [_fiq_edit(a, values[a], ref[a], rng) for a in attrs]
            composed = dict(ref)
            composed.update({e["attribute"]: e["to"] for e in edits})
            target = by_tuple.get(tuple(composed[a] for a in FIQ_ATTRIBUTES))
            if target is None or (names[i], target) in used:
                continue
            requirements = [
                {"attributes": [e["attribute"]], "values": e.pop("requires"), "quantifier": "any"}
                for e in edits
            ]
            if _enough_confusers(index, i, row_of[target], requirements):
                break
        else:
            raise RuntimeError("could not place a FashionIQ triplet; the split is too sparse")
        used.add((names[i], target))
        caps = _fiq_captions(edits, rng)
        record = {"target": target, "candidate": names[i], "captions": caps}
        if split == "test":
            del record["target"]
        records.append(record)
        sidecar.append(
            {
                "reference": names[i],
                "target": target,
                "edits": edits,
                "changes": {e["attribute"]: e["to"] for e in edits},
                "requirements": requirements,
            }
        )
    return records, sidecar


# --------------------------------------------------------------------------- CIRR plan

Scene = tuple[str, str, str, str]  # background, left, middle, right


def _objects(scene: Scene) -> list[str]:
    return [o for o in scene[1:] if o != EMPTY]


def _valid_scene(scene: Scene) -> bool:
    objs = _objects(scene)
    return 2 <= len(objs) <= 3 and len(set(objs)) == len(objs)


@dataclass(frozen=True)
class _Palette:
    """The colors, shapes and backgrounds one family of scenes draws from."""

    colors: tuple[str, ...]
    shapes: tuple[str, ...]
    backgrounds: tuple[str, ...]

    @classmethod
    def random(cls, rng: random.Random) -> _Palette:
        return cls(
            tuple(rng.sample(CIRR_COLORS, CIRR_PALETTE[0])),
            tuple(rng.sample(CIRR_SHAPES, CIRR_PALETTE[1])),
            tuple(rng.sample(CIRR_BACKGROUNDS, CIRR_PALETTE[2])),
        )

    def obj(self, rng: random.Random) -> str:
        return f"{rng.choice(self.colors)} {rng.choice(self.shapes)}"


def _random_scene(rng: random.Random, palette: _Palette) -> Scene:
    while True:
        n = rng.choice((2, 3))
        slots = [EMPTY] * 3
        for s in rng.sample(range(3), n):
            slots[s] = palette.obj(rng)
        scene = (rng.choice(palette.backgrounds), slots[0], slots[1], slots[2])
        if _valid_scene(scene):
            return scene


def _other(rng: random.Random, values: Sequence[str], current: str) -> str | None:
    options = [v for v in values if v != current]
    return rng.choice(options) if options else None


def _walk_edit(scene: Scene, rng: random.Random, palette: _Palette) -> Scene | None:
    """Apply one random edit of the family random walk; None when it does not apply."""
    kind = _weighted(rng, CIRR_WALK_WEIGHTS)
    s = list(scene)
    full = [i for i in (1, 2, 3) if s[i] != EMPTY]
    empty = [i for i in (1, 2, 3) if s[i] == EMPTY]
    i = rng.choice(full)
    color, shape = s[i].split(" ")
    if kind == "background":
        s[0] = _other(rng, palette.backgrounds, s[0]) or s[0]
    elif kind == "recolor":
        s[i] = f"{_other(rng, palette.colors, color) or color} {shape}"
    elif kind == "reshape":
        s[i] = f"{color} {_other(rng, palette.shapes, shape) or shape}"
    elif kind == "replace":
        c = _other(rng, palette.colors, color) or color
        s[i] = f"{c} {_other(rng, palette.shapes, shape) or shape}"
    elif kind == "add":
        if not empty:
            return None
        s[empty[0]] = palette.obj(rng)
    elif kind == "remove":
        if len(full) < 3:
            return None
        s[i] = EMPTY
    elif kind == "swap":
        a, b = rng.sample(full, 2)
        s[a], s[b] = s[b], s[a]
    elif kind == "move":
        if not empty:
            return None
        s[empty[0]], s[i] = s[i], EMPTY
    new: Scene = (s[0], s[1], s[2], s[3])
    return new if _valid_scene(new) and new != scene else None


def _mention(
    obj: str, slot: str, ref: Scene, tgt: Scene, rng: random.Random, *, colorless: bool = False
) -> tuple[str, list[str], bool]:
    """How a caption refers to an object of the reference ('the star', 'the red star').

    A bare shape is used only when no other object of either image has that shape, so
    the words stay unambiguous whatever order a reader applies the edits in.
    ``colorless`` mentions never name the color. Returns the words, the objects they
    fit, and whether they name the slot.
    """
    shape = obj.split(" ")[1]
    shapes = [o.split(" ")[1] for o in sorted(set(_objects(ref)) | set(_objects(tgt)))]
    any_color = [f"{c} {shape}" for c in CIRR_COLORS]
    by_slot = (f"the {shape} {_POSITION[slot]}", any_color, True)
    if colorless:
        options = [(f"the {slot} {shape}", any_color, True)]
    else:
        options = [(f"the {obj}", [obj], False), by_slot]
    if shapes.count(shape) == 1:
        options += [(f"the {shape}", any_color, False)] * 2
    return rng.choice(options)


def _scene_diff(ref: Scene, tgt: Scene) -> list[dict[str, Any]] | None:
    """The edits that turn ``ref`` into ``tgt``; None when they cannot be described cleanly."""
    edits: list[dict[str, Any]] = []
    if ref[0] != tgt[0]:
        edits.append({"kind": "background", "from": ref[0], "to": tgt[0]})
    diff = [i for i in (1, 2, 3) if ref[i] != tgt[i]]
    done: set[int] = set()
    for a, b in itertools.combinations(diff, 2):
        if a in done or b in done:
            continue
        if EMPTY not in (ref[a], ref[b]) and ref[a] == tgt[b] and ref[b] == tgt[a]:
            edits.append({"kind": "swap", "slots": [CIRR_SLOTS[a - 1], CIRR_SLOTS[b - 1]]})
            done |= {a, b}
            continue
        for x, y in ((a, b), (b, a)):
            if ref[x] != EMPTY and ref[y] == EMPTY and tgt[x] == EMPTY and tgt[y] == ref[x]:
                edits.append(
                    {
                        "kind": "move",
                        "object": ref[x],
                        "from": CIRR_SLOTS[x - 1],
                        "to": CIRR_SLOTS[y - 1],
                    }
                )
                done |= {a, b}
                break
    ref_objects = set(_objects(ref))
    for i in diff:
        if i in done:
            continue
        slot, old, new = CIRR_SLOTS[i - 1], ref[i], tgt[i]
        if new != EMPTY and new in ref_objects:
            return None  # an object that seems to move or duplicate: not a clean edit
        if old == EMPTY:
            edits.append({"kind": "add", "slot": slot, "to": new})
        elif new == EMPTY:
            edits.append({"kind": "remove", "slot": slot, "from": old})
        else:
            (oc, os_), (nc, ns) = old.split(" "), new.split(" ")
            kind = "recolor" if os_ == ns else "reshape" if oc == nc else "replace"
            edits.append({"kind": kind, "slot": slot, "from": old, "to": new})
    return edits


def _any_slot(values: Sequence[str], quantifier: str = "any") -> dict[str, Any]:
    return {"attributes": list(CIRR_SLOTS), "values": list(values), "quantifier": quantifier}


def _cirr_phrase(
    edit: dict[str, Any], ref: Scene, tgt: Scene, rng: random.Random, *, place_adds: bool
) -> tuple[str, list[dict]]:
    """One clause of a CIRR caption for one edit, and what the clause alone asks for.

    ``place_adds``: an added object must name its slot (another clause frees a slot).
    """
    kind = edit["kind"]
    slot_of = {o: CIRR_SLOTS[i - 1] for i, o in enumerate(ref) if i and o != EMPTY}
    if kind == "background":
        b = edit["to"]
        text = rng.choice(
            (
                f"change the background to {b}",
                f"make the background {b}",
                f"use a {b} background",
                f"put everything on a {b} background",
                f"the background should be {b}",
            )
        )
        return text, [{"attributes": ["background"], "values": [b], "quantifier": "any"}]
    if kind == "swap":
        a, b = (ref[CIRR_SLOTS.index(s) + 1] for s in edit["slots"])
        (ma, va, _), (mb, vb, _) = (_mention(o, slot_of[o], ref, tgt, rng) for o in (a, b))
        text = rng.choice(
            (
                f"swap {ma} and {mb}",
                f"switch the positions of {ma} and {mb}",
                f"let {ma} and {mb} trade places",
            )
        )
        return text, [_any_slot(va), _any_slot(vb)]
    if kind == "move":
        to = edit["to"]
        m, values, _ = _mention(edit["object"], edit["from"], ref, tgt, rng)
        where = f"to the {to}"
        text = rng.choice((f"move {m} {where}", f"shift {m} {where}", f"put {m} {_POSITION[to]}"))
        return text, [{"attributes": [to], "values": values, "quantifier": "any"}]
    if kind in ("add", "recolor", "replace"):
        relative = _relative_color(edit, ref, tgt, rng, place_adds=place_adds)
        if relative is not None:
            return relative
    if kind == "add":
        new, slot = edit["to"], edit["slot"]
        a = _article(new)
        if not place_adds and rng.random() < 0.5:
            text = rng.choice((f"add {a} {new}", f"include {a} {new}", f"put in {a} {new}"))
            return text, [_any_slot([new])]
        text = rng.choice((f"add {a} {new} {_POSITION[slot]}", f"put {a} {new} {_POSITION[slot]}"))
        return text, [{"attributes": [slot], "values": [new], "quantifier": "any"}]
    m, values, named_slot = _mention(edit["from"], edit["slot"], ref, tgt, rng)
    if kind == "remove":
        text = rng.choice((f"remove {m}", f"take away {m}", f"get rid of {m}", f"delete {m}"))
        where = [edit["slot"]] if named_slot else list(CIRR_SLOTS)
        return text, [{"attributes": where, "values": values, "quantifier": "none"}]
    new = edit["to"]
    nc, ns = new.split(" ")
    if kind == "recolor":
        text = rng.choice(
            (
                f"change {m} to {_article(nc)} {nc} one",
                f"make {m} {nc}",
                f"color {m} {nc}",
                f"turn {m} {nc}",
            )
        )
        return text, [_any_slot([new])]
    if kind == "reshape" and rng.random() < 0.7:
        # Keeps the reference's color without naming it: only the mention may tell it.
        colors = sorted({v.split(" ")[0] for v in values})
        text = rng.choice(
            (
                f"turn {m} into {_article(ns)} {ns}",
                f"make {m} {_article(ns)} {ns} instead",
                f"replace {m} with {_article(ns)} {ns} of the same color",
            )
        )
        return text, [_any_slot([f"{c} {ns}" for c in CIRR_COLORS if c in colors])]
    text = rng.choice(
        (
            f"replace {m} with {_article(new)} {new}",
            f"swap out {m} for {_article(new)} {new}",
            f"change {m} to {_article(new)} {new}",
            f"change {m} into {_article(new)} {new}",
        )
    )
    return text, [_any_slot([new])]


def _relative_color(
    edit: dict[str, Any], ref: Scene, tgt: Scene, rng: random.Random, *, place_adds: bool
) -> tuple[str, list[dict]] | None:
    """Name the new color by another object of the reference ("the same color as the circle").

    Only the reference tells which color that is, so the text alone asks for the shape.
    """
    new_color, new_shape = edit["to"].split(" ")
    edited = edit.get("from")
    kept = set(_objects(tgt))  # a donor must stay as it is, or "its color" is ambiguous
    donors = [
        (i, o)
        for i, o in enumerate(ref)
        if i and o not in (EMPTY, edited) and o in kept and o.split(" ")[0] == new_color
    ]
    if not donors or rng.random() >= CIRR_RELATIVE_P:
        return None
    i, donor = rng.choice(donors)
    d, _, _ = _mention(donor, CIRR_SLOTS[i - 1], ref, tgt, rng, colorless=True)
    a = _article(new_shape)
    if edit["kind"] == "add":
        where = f" {_POSITION[edit['slot']]}" if place_adds else ""
        text = rng.choice(
            (
                f"add {a} {new_shape}{where} in the same color as {d}",
                f"add {a} {new_shape}{where} colored like {d}",
            )
        )
    else:
        m, _, _ = _mention(edited, edit["slot"], ref, tgt, rng)
        if edit["kind"] == "recolor":
            text = rng.choice(
                (
                    f"make {m} the same color as {d}",
                    f"color {m} like {d}",
                    f"give {m} the color of {d}",
                )
            )
        else:
            text = rng.choice(
                (
                    f"replace {m} with {a} {new_shape} the same color as {d}",
                    f"change {m} into {a} {new_shape} colored like {d}",
                )
            )
    shapes = [f"{c} {new_shape}" for c in CIRR_COLORS]
    if edit["kind"] == "add" and place_adds:
        return text, [{"attributes": [edit["slot"]], "values": shapes, "quantifier": "any"}]
    return text, [_any_slot(shapes)]


def _cirr_caption(
    edits: list[dict[str, Any]], ref: Scene, tgt: Scene, rng: random.Random
) -> tuple[str, list[dict]]:
    order = list(edits)
    rng.shuffle(order)
    place_adds = any(e["kind"] in ("remove", "move") for e in edits)
    clauses: list[str] = []
    requirements: list[dict] = []
    for e in order:
        text, req = _cirr_phrase(e, ref, tgt, rng, place_adds=place_adds)
        clauses.append(text)
        requirements += req
    if len(clauses) == 1:
        sentence = clauses[0]
    else:
        sentence = (
            ", ".join(clauses[:-1]) + rng.choice((" and ", ", then ", ", and ")) + (clauses[-1])
        )
    if rng.random() < 0.5:
        sentence = sentence[:1].upper() + sentence[1:]
    if rng.random() < 0.2:
        sentence += "."
    return sentence, requirements


def _cirr_families(
    rng: random.Random, n_images: int, family: int, taken: set[Scene]
) -> list[list[Scene]]:
    """Families of near-identical scenes grown by random walks; scenes unique in ``taken``."""
    families: list[list[Scene]] = []
    n_families = math.ceil(n_images / family)
    n_palettes = max(2, round(n_families / CIRR_FAMILIES_PER_PALETTE))
    palettes = [_Palette.random(rng) for _ in range(n_palettes)]
    total = 0
    while total < n_images:
        size = min(family, n_images - total)
        palette = palettes[len(families) % len(palettes)]
        while True:
            base = _random_scene(rng, palette)
            if base not in taken:
                break
        members = [base]
        taken.add(base)
        stalls = 0
        while len(members) < size and stalls < 10_000:
            child = _walk_edit(rng.choice(members), rng, palette)
            if child is None or child in taken:
                stalls += 1
                continue
            members.append(child)
            taken.add(child)
        families.append(members)
        total += len(members)
    return families


def _shared(a: Scene, b: Scene) -> int:
    return sum(x == y for x, y in zip(a, b, strict=True))


def _img_sets(family: list[Scene], rng: random.Random) -> list[list[Scene]]:
    """Cut a family into groups of 6 mutually similar scenes (greedy, from a random seed)."""
    left = list(family)
    rng.shuffle(left)
    sets: list[list[Scene]] = []
    while len(left) >= 6:
        group = [left.pop(0)]
        while len(group) < 6:
            best = max(
                range(len(left)), key=lambda j: (sum(_shared(left[j], g) for g in group), -j)
            )
            group.append(left.pop(best))
        rng.shuffle(group)
        sets.append(group)
    return sets


def _plan_cirr(
    seed: int, spec: SizeSpec, first_pairid: int = 1
) -> tuple[list[_Image], dict[str, dict[str, str]], dict[str, list[dict]], dict[str, list[dict]]]:
    """Images, split files, caption records and modification records of every CIRR split."""
    images: list[_Image] = []
    split_files: dict[str, dict[str, str]] = {}
    captions: dict[str, list[dict]] = {}
    mods: dict[str, list[dict]] = {}
    pairid = first_pairid
    for split in CIRR_SPLITS:
        rng = _rng(seed, "cirr", split)
        folder = CIRR_FOLDERS[split]
        families = _cirr_families(rng, spec.cirr_images[split], spec.cirr_family, set())
        scenes = [s for fam in families for s in fam]
        order = list(range(len(scenes)))
        rng.shuffle(order)  # gallery order does not reveal the families
        name_of: dict[Scene, str] = {}
        mapping: dict[str, str] = {}
        for k, j in enumerate(order):
            name = f"cirr-{folder}-{k:06d}"
            sub = f"{folder}/{k // 100}" if split == "train" else folder
            name_of[scenes[j]] = name
            mapping[name] = f"./{sub}/{name}.png"
        for j in range(len(scenes)):
            name = name_of[scenes[j]]
            w, h = _aspect(rng, 96, 132)
            attrs = dict(zip(CIRR_ATTRIBUTES, scenes[j], strict=True))
            images.append(_Image(name, "cirr", attrs, w, h, mapping[name][2:], split))
        split_files[split] = dict(sorted(mapping.items(), key=lambda kv: kv[1]))
        # img_sets: each family cut into groups of 6 similar scenes.
        sets: list[list[Scene]] = []
        for fam in families:
            sets += _img_sets(fam, rng)
        candidates: list[tuple[float, int, Scene, Scene, list[dict]]] = []
        for set_id, members in enumerate(sets):
            for ref, tgt in itertools.permutations(members, 2):
                edits = _scene_diff(ref, tgt)
                if edits is None or not 1 <= len(edits) <= CIRR_MAX_EDITS:
                    continue
                weight = CIRR_EDIT_COUNT_WEIGHTS[len(edits)]
                key = rng.random() ** (1.0 / weight)  # weighted sampling without replacement
                candidates.append((key, set_id, ref, tgt, edits))
        n_queries = spec.cirr_queries[split]
        candidates.sort(key=lambda c: -c[0])
        index = AttributeIndex([dict(zip(CIRR_ATTRIBUTES, sc, strict=True)) for sc in scenes])
        row_of = {sc: k for k, sc in enumerate(scenes)}
        chosen: list[tuple[int, Scene, Scene, list[dict], str, list[dict]]] = []
        for _, set_id, ref, tgt, edits in candidates:
            caption, requirements = _cirr_caption(edits, ref, tgt, rng)
            if _enough_confusers(index, row_of[ref], row_of[tgt], requirements):
                chosen.append((set_id, ref, tgt, edits, caption, requirements))
                if len(chosen) == n_queries:
                    break
        else:
            raise RuntimeError(f"CIRR {split}: only {len(chosen)} of {n_queries} queries placed")
        rng.shuffle(chosen)
        records: list[dict] = []
        sidecar: list[dict] = []
        for set_id, ref, tgt, edits, caption, requirements in chosen:
            members = [name_of[s] for s in sets[set_id]]
            ref_name, tgt_name = name_of[ref], name_of[tgt]
            record: dict[str, Any] = {
                "pairid": pairid,
                "reference": ref_name,
                "target_hard": tgt_name,
                "target_soft": {tgt_name: 1.0},
                "caption": caption,
                "img_set": {
                    "id": set_id,
                    "members": members,
                    "reference_rank": members.index(ref_name),
                    "target_rank": members.index(tgt_name),
                },
            }
            if split == "test1":
                del record["target_hard"], record["target_soft"], record["img_set"]["target_rank"]
            records.append(record)
            sidecar.append(
                {
                    "pairid": pairid,
                    "reference": ref_name,
                    "target": tgt_name,
                    "edits": edits,
                    "changes": {
                        a: tgt[i] for i, a in enumerate(CIRR_ATTRIBUTES) if ref[i] != tgt[i]
                    },
                    "requirements": requirements,
                }
            )
            pairid += 1
        captions[split] = records
        mods[split] = sidecar
    return images, split_files, captions, mods


# --------------------------------------------------------------------------- pool plan


def _plan_pool(seed: int, spec: SizeSpec) -> list[_Image]:
    """Unlabeled images in no triplet: FashionIQ-style per category, CIRR-style families."""
    images: list[_Image] = []
    for category in FIQ_CATEGORIES:
        rng = _rng(seed, "pool", category)
        values = _fiq_values(category, spec)
        space = list(itertools.product(*(values[a] for a in FIQ_ATTRIBUTES)))
        n = min(spec.pool_fiq, len(space))
        for k, i in enumerate(rng.sample(range(len(space)), n)):
            name = f"pool-fiq-{category}-{k:06d}"
            w, h = _aspect(rng, 64, 88)
            attrs = dict(zip(FIQ_ATTRIBUTES, space[i], strict=True))
            images.append(_Image(name, f"fiq-{category}", attrs, w, h, f"images/{name}.png"))
    rng = _rng(seed, "pool", "cirr")
    families = _cirr_families(rng, spec.pool_cirr, spec.cirr_family, set())
    scenes = [s for fam in families for s in fam]
    rng.shuffle(scenes)
    for k, scene in enumerate(scenes):
        name = f"pool-cirr-{k:06d}"
        w, h = _aspect(rng, 96, 132)
        attrs = dict(zip(CIRR_ATTRIBUTES, scene, strict=True))
        images.append(_Image(name, "cirr", attrs, w, h, f"images/{name}.png"))
    return images


# --------------------------------------------------------------------------- rendering

SUPERSAMPLE = 4


def _regular(n: int, start_deg: float) -> list[tuple[float, float]]:
    return [
        (
            math.cos(math.radians(start_deg + 360 * k / n)),
            math.sin(math.radians(start_deg + 360 * k / n)),
        )
        for k in range(n)
    ]


def _arc(cx: float, cy: float, rx: float, ry: float, a0: float, a1: float, n: int = 24):
    return [
        (
            cx + rx * math.cos(math.radians(a0 + (a1 - a0) * k / n)),
            cy + ry * math.sin(math.radians(a0 + (a1 - a0) * k / n)),
        )
        for k in range(n + 1)
    ]


def _heart() -> list[tuple[float, float]]:
    pts = []
    for k in range(64):
        t = 2 * math.pi * k / 64
        x = 16 * math.sin(t) ** 3
        y = -(13 * math.cos(t) - 5 * math.cos(2 * t) - 2 * math.cos(3 * t) - math.cos(4 * t))
        pts.append((x, y))
    return pts


def _star() -> list[tuple[float, float]]:
    pts = []
    for k in range(10):
        r = 1.0 if k % 2 == 0 else 0.45
        a = math.radians(-90 + 36 * k)
        pts.append((r * math.cos(a), r * math.sin(a)))
    return pts


def _normalise(points: list[tuple[float, float]]) -> tuple[tuple[float, float], ...]:
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    x0, y0, dx, dy = min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)
    return tuple(((x - x0) / dx, (y - y0) / dy) for x, y in points)


SHAPE_POLYGONS: dict[str, tuple[tuple[float, float], ...]] = {
    name: _normalise(list(points))
    for name, points in {
        "triangle": [(0.5, 0), (1, 1), (0, 1)],
        "trapezoid": [(0.28, 0), (0.72, 0), (1, 1), (0, 1)],
        "hourglass": [(0, 0), (1, 0), (0.62, 0.5), (1, 1), (0, 1), (0.38, 0.5)],
        "diamond": [(0.5, 0), (1, 0.5), (0.5, 1), (0, 0.5)],
        "bell": [*_arc(0.5, 0.4, 0.32, 0.4, 180, 360), (0.86, 0.75), (1, 1), (0, 1), (0.14, 0.75)],
        "arch": [(0, 1), *_arc(0.5, 0.5, 0.5, 0.5, 180, 360), (1, 1)],
        "square": [(0, 0), (1, 0), (1, 1), (0, 1)],
        "t-shape": [
            (0, 0),
            (1, 0),
            (1, 0.36),
            (0.67, 0.36),
            (0.67, 1),
            (0.33, 1),
            (0.33, 0.36),
            (0, 0.36),
        ],
        "cross": [
            (0.32, 0),
            (0.68, 0),
            (0.68, 0.32),
            (1, 0.32),
            (1, 0.68),
            (0.68, 0.68),
            (0.68, 1),
            (0.32, 1),
            (0.32, 0.68),
            (0, 0.68),
            (0, 0.32),
            (0.32, 0.32),
        ],
        "pentagon": _regular(5, -90),
        "octagon": _regular(8, 22.5),
        "l-shape": [(0, 0), (0.42, 0), (0.42, 0.58), (1, 0.58), (1, 1), (0, 1)],
        "circle": _regular(48, 0),
        "heart": _heart(),
        "star": _star(),
        "hexagon": _regular(6, 0),
        "semicircle": _arc(0.5, 1, 0.5, 1, 180, 360),
        "drop": [(0.5, 0), *_arc(0.5, 0.64, 0.36, 0.36, -34, 214, 32)],
    }.items()
}


def _shade(rgb: tuple[int, int, int], f: float) -> tuple[int, int, int]:
    return (int(rgb[0] * f), int(rgb[1] * f), int(rgb[2] * f))


def _pattern(draw: ImageDraw.ImageDraw, pattern: str, box: tuple[float, ...], ink: tuple) -> None:
    """Draw a pattern over ``box`` (hi-res pixels); the shape mask clips it later."""
    s = SUPERSAMPLE
    x0, y0, x1, y1 = (int(v) for v in box)
    if pattern == "stripes":
        for y in range(y0 + 2 * s, y1, 8 * s):
            draw.rectangle((x0, y, x1, y + 3 * s - 1), fill=ink)
    elif pattern == "dots":
        for row, y in enumerate(range(y0 + 3 * s, y1, 7 * s)):
            for x in range(x0 + 3 * s + (row % 2) * 7 * s // 2, x1, 7 * s):
                draw.ellipse((x - 2 * s, y - 2 * s, x + 2 * s, y + 2 * s), fill=ink)
    elif pattern == "checks":
        c = 5 * s
        for j, y in enumerate(range(y0, y1, c)):
            for i, x in enumerate(range(x0, x1, c)):
                if (i + j) % 2:
                    draw.rectangle((x, y, x + c - 1, y + c - 1), fill=ink)
    elif pattern == "zigzag":
        for y in range(y0 + 3 * s, y1, 8 * s):
            pts = [
                (x, y + (2 * s if k % 2 else -2 * s))
                for k, x in enumerate(range(x0, x1 + 4 * s, 4 * s))
            ]
            draw.line(pts, fill=ink, width=2 * s)


def _draw_object(
    canvas: Image.Image,
    shape: str,
    color: str,
    pattern: str,
    box: tuple[float, float, float, float],
) -> None:
    """Draw one (patterned) shape into ``box`` of the hi-res canvas, with a darker outline."""
    x0, y0, x1, y1 = box
    pts = [(x0 + px * (x1 - x0), y0 + py * (y1 - y0)) for px, py in SHAPE_POLYGONS[shape]]
    mask = Image.new("L", canvas.size, 0)
    ImageDraw.Draw(mask).polygon(pts, fill=255)
    rgb = RGB[color]
    layer = Image.new("RGB", canvas.size, rgb)
    if pattern != "solid":
        ink = _DARK_INK if color in _DARK_INK_COLORS else _LIGHT_INK
        _pattern(ImageDraw.Draw(layer), pattern, box, ink)
    canvas.paste(layer, (0, 0), mask)
    outline = _shade(rgb, 0.55) if color != "black" else (90, 90, 90)
    ImageDraw.Draw(canvas).polygon(pts, outline=outline, width=SUPERSAMPLE)


def render(
    image_kind: str, attributes: Mapping[str, str], width: int, height: int, rng: random.Random
) -> Image.Image:
    """Render one image (``image_kind`` "fiq-<category>" or "cirr"); ``rng`` adds jitter."""
    s = SUPERSAMPLE
    W, H = width * s, height * s
    side = min(W, H)
    if image_kind.startswith("fiq-"):
        canvas = Image.new("RGB", (W, H), FIQ_BACKGROUND)
        size = {"small": 0.42, "medium": 0.58, "large": 0.74}[attributes["size"]]
        length = {"short": 0.8, "regular": 1.0, "long": 1.25}[attributes["length"]]
        w, h = side * size, side * size * length
        cx = W / 2 + rng.uniform(-0.03, 0.03) * side
        cy = H / 2 + rng.uniform(-0.03, 0.03) * side
        box = (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)
        _draw_object(canvas, attributes["shape"], attributes["color"], attributes["pattern"], box)
    elif image_kind == "cirr":
        canvas = Image.new("RGB", (W, H), BACKGROUND_RGB[attributes["background"]])
        for k, slot in enumerate(CIRR_SLOTS):
            obj = attributes[slot]
            if obj == EMPTY:
                continue
            color, shape = obj.split(" ")
            d = side * 0.27 * rng.uniform(0.94, 1.06)
            cx = W * (0.2 + 0.3 * k) + rng.uniform(-0.03, 0.03) * side
            cy = H / 2 + rng.uniform(-0.12, 0.12) * side
            _draw_object(
                canvas, shape, color, "solid", (cx - d / 2, cy - d / 2, cx + d / 2, cy + d / 2)
            )
    else:
        raise ValueError(f"unknown image kind {image_kind!r}")
    return canvas.resize((width, height), Image.Resampling.BOX)


def _render_one(job: tuple[str, str, str, dict[str, str], int, int, int]) -> None:
    path, name, kind, attrs, width, height, seed = job
    img = render(kind, attrs, width, height, _rng(seed, "render", name))
    img.save(path, format="PNG", optimize=False, compress_level=6)


# --------------------------------------------------------------------------- writing


def _dump(path: Path, data: Any, *, sort_keys: bool = False, indent: int | None = 2) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(data, indent=indent, sort_keys=sort_keys, ensure_ascii=False)
    path.write_text(text + "\n", encoding="utf-8")


def _metadata(images: Sequence[_Image], extra: Callable[[_Image], dict[str, Any]]) -> dict:
    return {
        im.name: {"attributes": im.attributes, "description": describe(im.attributes), **extra(im)}
        for im in images
    }


_OUTPUTS = ("fashioniq", "cirr", "pool", "circo", "synthetic.json")
_IN_PROGRESS = ".synthetic-in-progress"


def _prepare(out: Path) -> None:
    """Make ``out`` ready: clear an earlier (complete or interrupted) synthetic benchmark.

    Any other non-empty folder is refused, so nothing that this module did not write is
    ever deleted.
    """
    out.mkdir(parents=True, exist_ok=True)
    entries = sorted(p.name for p in out.iterdir())
    if not entries:
        return
    ours = (out / _IN_PROGRESS).exists() or _is_summary(out / "synthetic.json")
    if not ours or not set(entries) <= {*_OUTPUTS, _IN_PROGRESS}:
        raise FileExistsError(
            f"{out}: not empty and not a synthetic benchmark folder (holds {entries[:5]}); "
            "choose an empty or new folder"
        )
    for name in _OUTPUTS[:-1]:
        if (out / name).exists():
            shutil.rmtree(out / name)
    (out / "synthetic.json").unlink(missing_ok=True)


def _is_summary(path: Path) -> bool:
    try:
        return json.loads(path.read_text(encoding="utf-8")).get("generator") == _GENERATOR_ID
    except (OSError, ValueError, AttributeError):
        return False


def generate(
    out: str | Path, *, seed: int = 0, size: str = "default", progress: bool = True
) -> dict[str, Any]:
    """Write the synthetic benchmark under ``out`` and return the ``synthetic.json`` summary.

    ``out`` must be empty, new, or an earlier output of this function (which is replaced).
    ``synthetic.json`` is written last: its presence marks a complete benchmark.
    """
    if size not in SIZES:
        raise ValueError(f"unknown size {size!r}; expected one of {sorted(SIZES)}")
    spec = SIZES[size]
    out = Path(out)
    _prepare(out)
    (out / _IN_PROGRESS).write_text(f"seed={seed} size={size}\n", encoding="utf-8")

    fiq_images, fiq_caps, fiq_mods = _plan_fashioniq(seed, spec)
    cirr_images, cirr_splits, cirr_caps, cirr_mods = _plan_cirr(seed, spec)
    pool_images = _plan_pool(seed, spec)

    fiq = out / "fashioniq"
    for (category, split), records in fiq_caps.items():
        _dump(fiq / "captions" / f"cap.{category}.{split}.json", records, indent=4)
        _dump(
            fiq / "metadata" / f"modifications.{category}.{split}.json", fiq_mods[category, split]
        )
    for category in FIQ_CATEGORIES:
        for split in FIQ_SPLITS:
            names = [im.name for im in fiq_images if im.kind[4:] == category and im.split == split]
            _dump(fiq / "image_splits" / f"split.{category}.{split}.json", names, indent=4)
    _dump(
        fiq / "metadata" / "images.json",
        _metadata(fiq_images, lambda im: {"category": im.kind[4:], "split": im.split}),
        sort_keys=True,
        indent=None,
    )

    cirr = out / "cirr"
    for split in CIRR_SPLITS:
        _dump(cirr / "captions" / f"cap.rc2.{split}.json", cirr_caps[split], indent=4)
        _dump(cirr / "image_splits" / f"split.rc2.{split}.json", cirr_splits[split], indent=4)
        _dump(cirr / "metadata" / f"modifications.rc2.{split}.json", cirr_mods[split])
    _dump(
        cirr / "metadata" / "images.json",
        _metadata(cirr_images, lambda im: {"split": im.split}),
        sort_keys=True,
        indent=None,
    )

    pool = out / "pool"

    def pool_extra(im: _Image) -> dict[str, Any]:
        if im.kind == "cirr":
            return {"dataset": "cirr"}
        return {"dataset": "fashioniq", "category": im.kind[4:]}

    _dump(
        pool / "metadata" / "images.json",
        _metadata(pool_images, pool_extra),
        sort_keys=True,
        indent=None,
    )

    summary = {
        "generator": _GENERATOR_ID,
        "version": GENERATOR_VERSION,
        "seed": seed,
        "size": size,
        "spec": spec.as_dict(),
        "counts": {
            "fashioniq": {
                c: {
                    s: {"images": spec.fiq_images[s], "triplets": len(fiq_caps[c, s])}
                    for s in FIQ_SPLITS
                }
                for c in FIQ_CATEGORIES
            },
            "cirr": {
                s: {
                    "images": len(cirr_splits[s]),
                    "queries": len(cirr_caps[s]),
                    "img_sets": len({r["img_set"]["id"] for r in cirr_caps[s]}),
                }
                for s in CIRR_SPLITS
            },
            "pool": {
                "fashioniq": {
                    c: sum(1 for im in pool_images if im.kind == f"fiq-{c}") for c in FIQ_CATEGORIES
                },
                "cirr": sum(1 for im in pool_images if im.kind == "cirr"),
            },
        },
        "vocabularies": vocabularies(),
        "layout": {
            "fashioniq": "official FashionIQ layout; images/<name>.png",
            "cirr": "official CIRR layout; train/<k>/, dev/, test1/",
            "pool": "pool/images/<name>.png; pool/metadata/images.json gives dataset and category",
            "modifications": "metadata/modifications.*.json: one record per caption record",
        },
    }
    jobs = [
        (str(root / im.path), im.name, im.kind, im.attributes, im.width, im.height, seed)
        for root, group in ((fiq, fiq_images), (cirr, cirr_images), (pool, pool_images))
        for im in group
    ]
    for folder in sorted({str(Path(j[0]).parent) for j in jobs}):
        Path(folder).mkdir(parents=True, exist_ok=True)
    for job in tqdm(jobs, desc=f"synthetic {size}: images", disable=not progress, unit="img"):
        _render_one(job)
    from bench.data.synthetic_circo import generate_circo  # late: it imports this module

    circo = generate_circo(out, seed=seed, size=size, progress=progress)
    summary["counts"]["circo"] = circo["counts"]
    summary["layout"]["circo"] = (
        "official CIRCO layout; COCO2017_unlabeled/unlabeled2017/<id:012d>.jpg, "
        "metadata/queries.{split}.json keeps every split's ground truths"
    )
    _dump(out / "synthetic.json", summary, sort_keys=True)
    (out / _IN_PROGRESS).unlink()
    return summary
