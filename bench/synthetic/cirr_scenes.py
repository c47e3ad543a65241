"""CIRR-style scenes: the palettes and random walks that grow families of near-identical
scenes, the edits between two scenes, and the cut of a family into img_sets."""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bench.synthetic.world import (
    CIRR_BACKGROUNDS,
    CIRR_COLORS,
    CIRR_SHAPES,
    CIRR_SLOTS,
    EMPTY,
    weighted_choice,
)

Scene = tuple[str, str, str, str]  # background, left, middle, right

# Edit kinds of the random walk that grows a family.
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
CIRR_PALETTE = (3, 3, 2)  # colors, shapes, backgrounds one family draws from
CIRR_FAMILIES_PER_PALETTE = 8  # families sharing a palette share objects: text-only confusers


def scene_objects(scene: Scene) -> list[str]:
    """The objects ("<color> <shape>") of a scene, left to right, empty slots skipped."""
    return [o for o in scene[1:] if o != EMPTY]


def _valid_scene(scene: Scene) -> bool:
    objs = scene_objects(scene)
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
    kind = weighted_choice(rng, CIRR_WALK_WEIGHTS)
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


def cirr_families(
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


def scene_diff(ref: Scene, tgt: Scene) -> list[dict[str, Any]] | None:
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
    ref_objects = set(scene_objects(ref))
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


def _shared(a: Scene, b: Scene) -> int:
    return sum(x == y for x, y in zip(a, b, strict=True))


def img_sets(family: list[Scene], rng: random.Random) -> list[list[Scene]]:
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
