"""Modification texts from a reference caption and a target caption, by template.

The paper's three templates (SPN4CIR ``zscir/get_cir_data.py``, ``get_captions``:
``"{1} instead of {0}"``, ``"Unlike {0}, I want {1}"``, ``"{1}"`` with ``{0}`` the
reference caption and ``{1}`` the target caption) are written here with named fields.
A template list chooses which are used; the released recipe used ``"{target}"`` alone on
FashionIQ and the first two on CIRR. Each triplet gets one template, drawn with a seeded
generator, so the same seed gives the same texts.
"""

from __future__ import annotations

import functools
import random
import string
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

INSTEAD = "{target} instead of {reference}"
UNLIKE = "Unlike {reference}, I want {target}"
TARGET = "{target}"
PAPER_TEMPLATES: tuple[str, ...] = (INSTEAD, UNLIKE, TARGET)
#: Short names usable in specs instead of the template text.
TEMPLATE_ALIASES = {"instead": INSTEAD, "unlike": UNLIKE, "target": TARGET}
_FIELDS = {"reference", "target"}


def resolve_template(template: str) -> str:
    """An alias (``instead``, ``unlike``, ``target``) or a format string with ``{target}``
    and optionally ``{reference}``; anything else is an error naming the template."""
    template = TEMPLATE_ALIASES.get(template, template)
    try:
        fields = {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}
    except ValueError as exc:
        raise ValueError(f"template {template!r}: {exc}") from None
    if "target" not in fields:
        raise ValueError(f"template {template!r} must contain {{target}}")
    if fields - _FIELDS:
        raise ValueError(
            f"template {template!r}: unknown fields {sorted(fields - _FIELDS)}; "
            "use {reference} and {target}"
        )
    return template


def clean_caption(caption: str) -> str:
    """A caption ready for a template: blanks collapsed, trailing ``.`` / ``,`` removed."""
    return " ".join(caption.split()).rstrip(" .,;:")


def compose(template: str, reference: str, target: str) -> str:
    """Fill one template with the two captions."""
    return template.format(reference=clean_caption(reference), target=clean_caption(target))


@dataclass(frozen=True)
class Composed:
    """The text of one triplet, the template index it came from, and a second rendering
    (another template when there are several, else the same) for formats with two texts."""

    text: str
    template: int
    alternative: str


class TemplateComposer:
    """Renders modification texts with a seeded choice among ``templates``."""

    def __init__(self, templates: Sequence[str] = (INSTEAD, UNLIKE), seed: int = 0) -> None:
        if not templates:
            raise ValueError("at least one template is needed")
        self.templates = tuple(resolve_template(t) for t in templates)
        self.seed = seed

    def compose_all(self, pairs: Sequence[tuple[str, str]]) -> list[Composed]:
        """One :class:`Composed` per (reference caption, target caption) pair, in order."""
        rng = random.Random(f"cirbench-templates/{self.seed}")
        n = len(self.templates)
        out = []
        for reference, target in pairs:
            first = rng.randrange(n)
            second = (first + 1 + rng.randrange(n - 1)) % n if n > 1 else first
            out.append(
                Composed(
                    compose(self.templates[first], reference, target),
                    first,
                    compose(self.templates[second], reference, target),
                )
            )
        return out


@functools.cache
def _clip_tokenizer() -> Any:
    from open_clip.tokenizer import SimpleTokenizer  # third-party, its BPE vocabulary read once

    return SimpleTokenizer()


def clip_token_count(text: str) -> int:
    """CLIP's tokens of a text, start and end tokens included (``clip.tokenize`` refuses a
    text over 77 of them)."""
    return len(_clip_tokenizer().encode(text)) + 2


def text_limit(max_tokens: int | None) -> Callable[[str, str], str]:
    """``fit(text, target_caption)``: the text, or the cleaned target caption when the text
    has more than ``max_tokens`` CLIP tokens (the reference's fallback); the identity for
    ``None``."""

    def fit(text: str, target_caption: str) -> str:
        if max_tokens is None or clip_token_count(text) <= max_tokens:
            return text
        return clean_caption(target_caption)

    return fit
