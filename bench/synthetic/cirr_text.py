"""CIRR captions: how a sentence refers to the objects of a scene and phrases each edit,
with what the text alone asks for (the requirements of the text-only confusers)."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

from bench.synthetic.cirr_scenes import Scene, scene_objects
from bench.synthetic.world import CIRR_COLORS, CIRR_SLOTS, EMPTY, POSITION, article

CIRR_RELATIVE_P = 0.6  # name a new color by another object of the reference when possible


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
    shapes = [o.split(" ")[1] for o in sorted(set(scene_objects(ref)) | set(scene_objects(tgt)))]
    any_color = [f"{c} {shape}" for c in CIRR_COLORS]
    by_slot = (f"the {shape} {POSITION[slot]}", any_color, True)
    if colorless:
        options = [(f"the {slot} {shape}", any_color, True)]
    else:
        options = [(f"the {obj}", [obj], False), by_slot]
    if shapes.count(shape) == 1:
        options += [(f"the {shape}", any_color, False)] * 2
    return rng.choice(options)


def _any_slot(values: Sequence[str], quantifier: str = "any") -> dict[str, Any]:
    return {"attributes": list(CIRR_SLOTS), "values": list(values), "quantifier": quantifier}


def _cirr_phrase(
    edit: dict[str, Any], ref: Scene, tgt: Scene, rng: random.Random, *, place_adds: bool
) -> tuple[str, list[dict]]:
    """One clause of a CIRR caption for one edit, and what the clause alone asks for.

    ``place_adds``: an added object must name its slot (another clause frees a slot).
    """
    kind = edit["kind"]
    if kind == "background":
        return _background_phrase(edit, rng)
    if kind == "swap":
        return _swap_phrase(edit, ref, tgt, rng)
    if kind == "move":
        return _move_phrase(edit, ref, tgt, rng)
    if kind in ("add", "recolor", "replace"):
        relative = _relative_color(edit, ref, tgt, rng, place_adds=place_adds)
        if relative is not None:
            return relative
    if kind == "add":
        return _add_phrase(edit, rng, place_adds=place_adds)
    return _object_phrase(edit, ref, tgt, rng)


def _background_phrase(edit: dict[str, Any], rng: random.Random) -> tuple[str, list[dict]]:
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


def _swap_phrase(
    edit: dict[str, Any], ref: Scene, tgt: Scene, rng: random.Random
) -> tuple[str, list[dict]]:
    slot_of = {o: CIRR_SLOTS[i - 1] for i, o in enumerate(ref) if i and o != EMPTY}
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


def _move_phrase(
    edit: dict[str, Any], ref: Scene, tgt: Scene, rng: random.Random
) -> tuple[str, list[dict]]:
    to = edit["to"]
    m, values, _ = _mention(edit["object"], edit["from"], ref, tgt, rng)
    where = f"to the {to}"
    text = rng.choice((f"move {m} {where}", f"shift {m} {where}", f"put {m} {POSITION[to]}"))
    return text, [{"attributes": [to], "values": values, "quantifier": "any"}]


def _add_phrase(
    edit: dict[str, Any], rng: random.Random, *, place_adds: bool
) -> tuple[str, list[dict]]:
    new, slot = edit["to"], edit["slot"]
    a = article(new)
    if not place_adds and rng.random() < 0.5:
        text = rng.choice((f"add {a} {new}", f"include {a} {new}", f"put in {a} {new}"))
        return text, [_any_slot([new])]
    text = rng.choice((f"add {a} {new} {POSITION[slot]}", f"put {a} {new} {POSITION[slot]}"))
    return text, [{"attributes": [slot], "values": [new], "quantifier": "any"}]


def _object_phrase(
    edit: dict[str, Any], ref: Scene, tgt: Scene, rng: random.Random
) -> tuple[str, list[dict]]:
    """A remove, recolor, reshape or replace clause that names the edited object."""
    kind = edit["kind"]
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
                f"change {m} to {article(nc)} {nc} one",
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
                f"turn {m} into {article(ns)} {ns}",
                f"make {m} {article(ns)} {ns} instead",
                f"replace {m} with {article(ns)} {ns} of the same color",
            )
        )
        return text, [_any_slot([f"{c} {ns}" for c in CIRR_COLORS if c in colors])]
    text = rng.choice(
        (
            f"replace {m} with {article(new)} {new}",
            f"swap out {m} for {article(new)} {new}",
            f"change {m} to {article(new)} {new}",
            f"change {m} into {article(new)} {new}",
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
    kept = set(scene_objects(tgt))  # a donor must stay as it is, or "its color" is ambiguous
    donors = [
        (i, o)
        for i, o in enumerate(ref)
        if i and o not in (EMPTY, edited) and o in kept and o.split(" ")[0] == new_color
    ]
    if not donors or rng.random() >= CIRR_RELATIVE_P:
        return None
    i, donor = rng.choice(donors)
    d, _, _ = _mention(donor, CIRR_SLOTS[i - 1], ref, tgt, rng, colorless=True)
    a = article(new_shape)
    if edit["kind"] == "add":
        where = f" {POSITION[edit['slot']]}" if place_adds else ""
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


def cirr_caption(
    edits: list[dict[str, Any]], ref: Scene, tgt: Scene, rng: random.Random
) -> tuple[str, list[dict]]:
    """One CIRR caption for all edits (clauses in random order) and its requirements."""
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
