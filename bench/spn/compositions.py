"""The one vocabulary of SPN compositions: what each name means and how a spec says it.

All compositions but the zero-shot ones continue from the same stage-1 run (the spec
without modifiers), so stage 1 trains once per (method, dataset, seed):

============  ==================================================================
none          stage 1 only (the baseline as published)
P             continue on human + generated triplets, in-batch negatives
P-control     P's continuation (same epochs, lr) on human triplets only
N             stage 2 against the static negative bank, human triplets
P+N           stage 2 against the bank on human + generated triplets
ZS            zero-shot: stage 1 on generated triplets from the train images only
ZS+N          ZS, then stage 2 against the bank
ZS-ood        zero-shot from an out-of-domain pool (the unlabeled pool, a folder)
ZS-ood+N      ZS-ood, then stage 2 against the bank
============  ==================================================================

A spec's ``spn`` block names its composition by which blocks it sets
(:func:`composition_of`): ``positives`` (generated triplets), ``negatives`` (the bank
stage), ``zero_shot`` and ``control`` (P-control). The suites build blocks from names
(:func:`modifier_blocks`). This module imports nothing of cirbench (the spec models
validate against it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True)
class Composition:
    """One composition: its name, what it means, and what it switches on."""

    name: str
    description: str
    positives: bool = False  #: generated triplets are built
    negatives: bool = False  #: the bank stage runs
    zero_shot: bool = False  #: stage 1 trains on generated triplets only
    out_of_domain: bool = False  #: generated from a pool outside the train split
    control: bool = False  #: P's continuation without generated triplets

    @property
    def is_stage1(self) -> bool:
        """True when the composition trains from the backbone (no stage 1 to continue)."""
        return self.name in ("none", "ZS", "ZS-ood")

    @property
    def continues(self) -> bool:
        """True when a continuation phase (in-batch, after stage 1) runs: P and P-control."""
        return (self.positives or self.control) and not self.negatives and not self.zero_shot


COMPOSITIONS: dict[str, Composition] = {
    c.name: c
    for c in (
        Composition("none", "stage 1 only (the baseline as published)"),
        Composition(
            "P", "continue on human + generated triplets, in-batch negatives", positives=True
        ),
        Composition(
            "P-control",
            "P's continuation (same epochs, lr) on human triplets only: what P buys beyond "
            "training longer",
            control=True,
        ),
        Composition(
            "N", "stage 2 against the static negative bank, human triplets", negatives=True
        ),
        Composition("P+N", "stage 2 against the bank on human + generated triplets", True, True),
        Composition(
            "ZS",
            "zero-shot: generated triplets from the dataset's train images only",
            True,
            zero_shot=True,
        ),
        Composition("ZS+N", "zero-shot in-domain, then stage 2 against the bank", True, True, True),
        Composition(
            "ZS-ood",
            "zero-shot: generated triplets from the unlabeled pool (out of domain)",
            True,
            zero_shot=True,
            out_of_domain=True,
        ),
        Composition(
            "ZS-ood+N",
            "zero-shot out of domain, then stage 2 against the bank",
            True,
            True,
            True,
            True,
        ),
    )
}


class UnknownCompositionError(ValueError):
    """A composition name that is not in :data:`COMPOSITIONS`."""


def get_composition(name: str) -> Composition:
    try:
        return COMPOSITIONS[name]
    except KeyError:
        raise UnknownCompositionError(
            f"unknown composition {name!r}; known: {', '.join(COMPOSITIONS)}"
        ) from None


class _SPNBlock(Protocol):
    positives: Any
    negatives: Any
    zero_shot: bool
    control: bool


def modifier_letters(spn: _SPNBlock) -> list[str]:
    """The letters of the modifier blocks a ``spn`` block sets, in field order (a block
    class names its modifier with a ``LETTER`` class attribute: P, N, ...)."""
    fields = getattr(type(spn), "model_fields", {})
    blocks = [getattr(spn, name) for name in fields]
    return [b.LETTER for b in blocks if b is not None and hasattr(b, "LETTER")]


def composition_of(spn: _SPNBlock) -> Composition:
    """The composition a spec's ``spn`` block names (see the module docstring); a
    combination with no name in :data:`COMPOSITIONS` (a new modifier's) is named by its
    letters joined with ``+``."""
    letters = modifier_letters(spn)
    if spn.zero_shot:
        ood = spn.positives is not None and spn.positives.pool != "train"
        rest = [x for x in letters if x != "P"]
        name = "+".join(["ZS-ood" if ood else "ZS", *rest])
    elif spn.control:
        name = "+".join(["P-control", *letters])
    else:
        name = "+".join(letters) or "none"
    if name in COMPOSITIONS:
        return COMPOSITIONS[name]
    return Composition(
        name, f"modifiers {name}", positives="P" in letters, negatives="N" in letters
    )


def modifier_blocks(
    name: str,
    positives: dict[str, Any],
    negatives: dict[str, Any],
    positives_train: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The ``spn`` block of composition ``name`` from the recipe's blocks: ``positives``
    (without ``pool``; an out-of-domain composition sets ``pool: pool``), ``negatives``,
    and the continuation's ``positives_train`` (used by P and P-control)."""
    composition = get_composition(name)
    out: dict[str, Any] = {}
    if composition.positives:
        pool = "pool" if composition.out_of_domain else "train"
        out["positives"] = {**positives, "pool": pool, "name": f"{positives['name']}-{pool}"}
    if composition.continues and positives_train:
        out["positives_train"] = dict(positives_train)
    if composition.control:
        out["control"] = True
    if composition.negatives:
        out["negatives"] = dict(negatives)
    if composition.zero_shot:
        out["zero_shot"] = True
    return out
