"""The synthetic world: attribute vocabularies, sizes, the attribute index, oracle
descriptions, the planned-image record and the seeded-randomness helpers every planner
shares.

FashionIQ-style images are one object on a white background (64 px; some 64x88 / 88x64)
with five attributes: shape (each category its own family of silhouettes), color,
pattern, size and length. CIRR-style images are scenes (96 px; some 96x132 / 132x96)
with a background and 2-3 objects (color + shape) in the slots left / middle / right.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

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
        """The spec as a plain dict (as written to ``synthetic.json``)."""
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
    # the default profile's world: small's val splits (as many queries to resolve a
    # difference) and vocabularies, about a third of its training data and pre-training
    # pairs, so that `nox -s ablate` fits 30 minutes on a 2-core CPU
    "compact": SizeSpec(
        fiq_images={"train": 300, "val": 400, "test": 200},
        fiq_triplets={"train": 250, "val": 300, "test": 100},
        fiq_vocab={"shape": 5, "color": 7, "pattern": 4, "size": 3, "length": 3},
        cirr_images={"train": 480, "val": 480, "test1": 288},
        cirr_queries={"train": 500, "val": 500, "test1": 300},
        cirr_family=24,
        pool_fiq=100,
        pool_cirr=240,
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


def fiq_values(category: str, spec: SizeSpec) -> dict[str, tuple[str, ...]]:
    """The attribute values one FashionIQ category draws from at one size."""
    full = {
        "shape": FIQ_SHAPES[category],
        "color": FIQ_COLORS,
        "pattern": FIQ_PATTERNS,
        "size": FIQ_SIZES,
        "length": FIQ_LENGTHS,
    }
    return {a: full[a][: spec.fiq_vocab[a]] for a in FIQ_ATTRIBUTES}


# --------------------------------------------------------------------------- attribute index


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

    def matches_subset(self, attributes: Mapping[str, str]) -> np.ndarray:
        """Per image, how many of ``attributes`` (a subset of the table's attributes) it has."""
        hits = np.zeros(self.matrix.shape[0], dtype=np.float64)
        for attribute, value in attributes.items():
            code = self.codes[attribute].get(value, -1)
            hits += self.matrix[:, self.attributes.index(attribute)] == code
        return hits

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


def enough_confusers(
    index: AttributeIndex, reference: int, target: int, requirements: Sequence[Mapping[str, Any]]
) -> bool:
    """Whether a FashionIQ / CIRR triplet has the minimum text- and image-only confusers."""
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
#: How captions and descriptions name a CIRR slot.
POSITION = {"left": "on the left", "middle": "in the middle", "right": "on the right"}


def article(word: str) -> str:
    """The indefinite article before ``word`` ("a" / "an")."""
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
        return f"{article(words[0])} {' '.join(words)}"
    if "background" in attributes:
        parts = [
            f"{article(attributes[s])} {attributes[s]} {POSITION[s]}"
            for s in CIRR_SLOTS
            if attributes[s] != EMPTY
        ]
        objects = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
        return f"{objects}, on a {attributes['background']} background"
    raise ValueError(f"not a synthetic attribute set: {sorted(attributes)}")


# --------------------------------------------------------------------------- planned images


@dataclass
class PlannedImage:
    """One image to render."""

    name: str
    kind: str  # "fiq-<category>" or "cirr"
    attributes: dict[str, str]
    width: int
    height: int
    path: str  # relative to the dataset (or pool) folder
    split: str | None = None


def aspect(rng: random.Random, base: int, long: int) -> tuple[int, int]:
    """A random (width, height): 15% tall, 15% wide (one side ``long``), else square."""
    r = rng.random()
    if r < 0.15:
        return base, long
    if r < 0.30:
        return long, base
    return base, base


# --------------------------------------------------------------------------- random helpers


def seeded_rng(seed: int, *tags: object) -> random.Random:
    """An independent generator for one part of the benchmark (str seeding is stable)."""
    return random.Random("/".join(["cirbench-synthetic", str(seed), *map(str, tags)]))


def weighted_choice(rng: random.Random, weights: Mapping[Any, float]) -> Any:
    """One key of ``weights``, drawn with probability proportional to its weight."""
    keys = list(weights)
    return rng.choices(keys, weights=[weights[k] for k in keys])[0]


def weighted_sample(rng: random.Random, weights: Mapping[str, float], k: int) -> list[str]:
    """``k`` distinct keys of ``weights``, drawn one by one by weight without replacement."""
    pool = dict(weights)
    out: list[str] = []
    for _ in range(k):
        choice = weighted_choice(rng, pool)
        out.append(choice)
        del pool[choice]
    return out
