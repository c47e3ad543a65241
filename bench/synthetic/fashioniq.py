"""The FashionIQ planner: images, caption records (two partial captions per triplet) and
modification records of every category and split."""

from __future__ import annotations

import itertools
import random
from collections.abc import Mapping
from typing import Any

from bench.synthetic.text import caption_noise, fiq_edit, fiq_phrase, join_phrases
from bench.synthetic.world import (
    FIQ_ATTRIBUTES,
    FIQ_CATEGORIES,
    FIQ_ORDINAL,
    FIQ_SPLITS,
    AttributeIndex,
    PlannedImage,
    SizeSpec,
    aspect,
    enough_confusers,
    fiq_values,
    seeded_rng,
    weighted_choice,
    weighted_sample,
)

# How many edits a FashionIQ triplet has, and how often each attribute is edited.
FIQ_EDIT_COUNTS = {1: 0.15, 2: 0.55, 3: 0.30}
FIQ_EDIT_WEIGHTS = {"shape": 1.0, "color": 1.0, "pattern": 1.0, "size": 1.2, "length": 1.2}
# Triplets with c > 1 categorical edits (shape, color, pattern) are kept with
# probability FIQ_MULTI_CATEGORICAL_P ** (c - 1).
FIQ_MULTI_CATEGORICAL_P = 0.2


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
            text = join_phrases([fiq_phrase(edits[i], rng) for i in g])
            if text not in captions:
                break
        captions.append(caption_noise(text, rng))
        for i in g:
            edits[i].setdefault("captions", []).append(len(captions) - 1)
    return captions


def plan_fashioniq(
    seed: int, spec: SizeSpec
) -> tuple[
    list[PlannedImage], dict[tuple[str, str], list[dict]], dict[tuple[str, str], list[dict]]
]:
    """Images, caption records and modification records of every category and split."""
    images: list[PlannedImage] = []
    captions: dict[tuple[str, str], list[dict]] = {}
    mods: dict[tuple[str, str], list[dict]] = {}
    for category in FIQ_CATEGORIES:
        values = fiq_values(category, spec)
        space = list(itertools.product(*(values[a] for a in FIQ_ATTRIBUTES)))
        counter = 0
        for split in FIQ_SPLITS:
            rng = seeded_rng(seed, "fashioniq", category, split)
            n = spec.fiq_images[split]
            if n > len(space):
                raise ValueError(f"{n} images do not fit the {len(space)} attribute tuples")
            tuples = [space[i] for i in rng.sample(range(len(space)), n)]
            by_tuple: dict[tuple[str, ...], str] = {}
            for t in tuples:
                name = f"fiq-{category}-{counter:06d}"
                counter += 1
                by_tuple[t] = name
                w, h = aspect(rng, 64, 88)
                attrs = dict(zip(FIQ_ATTRIBUTES, t, strict=True))
                path = f"images/{name}.png"
                images.append(PlannedImage(name, f"fiq-{category}", attrs, w, h, path, split))
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
            m = weighted_choice(rng, FIQ_EDIT_COUNTS)
            attrs = weighted_sample(rng, FIQ_EDIT_WEIGHTS, m)
            categorical = sum(a not in FIQ_ORDINAL for a in attrs)
            if categorical > 1 and rng.random() >= FIQ_MULTI_CATEGORICAL_P ** (categorical - 1):
                continue  # several categorical edits would let the text alone find the target
            attrs = [a for a in FIQ_ATTRIBUTES if a in attrs]
            edits = [fiq_edit(a, values[a], ref[a], rng) for a in attrs]
            composed = dict(ref)
            composed.update({e["attribute"]: e["to"] for e in edits})
            target = by_tuple.get(tuple(composed[a] for a in FIQ_ATTRIBUTES))
            if target is None or (names[i], target) in used:
                continue
            requirements = [
                {"attributes": [e["attribute"]], "values": e.pop("requires"), "quantifier": "any"}
                for e in edits
            ]
            if enough_confusers(index, i, row_of[target], requirements):
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
