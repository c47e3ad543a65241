"""Edits of the one-object (FashionIQ-style) world and the human-style phrases captions
use for them: shared by the FashionIQ and the CIRCO planners."""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from typing import Any

from bench.synthetic.world import FIQ_ORDINAL, article

FIQ_RELATIVE_P = 0.8  # an ordinal edit is relative ("is larger") with this probability

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


def caption_noise(text: str, rng: random.Random) -> str:
    """Light human-style noise: sometimes capitalised, rarely a final period."""
    if rng.random() < 0.15:
        text = text[:1].upper() + text[1:]
    if rng.random() < 0.08:
        text += "."
    return text


def _color_word(color: str, rng: random.Random) -> str:
    return rng.choice(_COLOR_WORDS.get(color, (color,)))


def fiq_phrase(edit: Mapping[str, Any], rng: random.Random) -> str:
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
                f"is {article(new)} {new}",
                f"is {new} shaped",
                f"has {article(new)} {new} shape",
                f"is {article(new)} {new} instead of {article(old)} {old}",
                f"has {article(new)} {new} silhouette",
            )
        )
    if edit["op"] == "set":
        return rng.choice(_ORDINAL_SET[new])
    return rng.choice(_ORDINAL_WORDS[attr][edit["steps"]])


def join_phrases(phrases: Sequence[str]) -> str:
    """'is red' + 'is larger' -> 'is red and larger'."""
    out = phrases[0]
    for phrase in phrases[1:]:
        if out.startswith("is ") and phrase.startswith("is "):
            phrase = phrase[3:]
        out += " and " + phrase
    return out


def fiq_edit(attr: str, values: Sequence[str], current: str, rng: random.Random) -> dict[str, Any]:
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
