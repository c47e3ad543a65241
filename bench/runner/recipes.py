"""The SPN recipe a suite point runs: the ``spn`` block of a composition, from the method's
base settings (``experiments/methods/<name>.yaml``: its ``spn`` section per profile and
dataset holds the released recipe: the generated-triplet block ``positives``, the bank
stage's ``negatives`` settings, P's continuation ``positives_train``). The composition
decides which of them the point switches on (:func:`bench.spn.compositions.modifier_blocks`).
"""

from __future__ import annotations

from typing import Any

from bench.config import SpecError
from bench.spn.compositions import get_composition, modifier_blocks


def composition_spn(composition: str, method_spn: dict[str, Any], source: str) -> dict[str, Any]:
    """The ``spn`` block of ``composition`` from a method's resolved ``spn`` settings."""
    positives = dict(method_spn.get("positives") or {})
    if get_composition(composition).positives and not positives:
        raise SpecError(
            f"{source}: composition {composition} needs spn.positives (the generated-triplet "
            "recipe) in the method's base settings"
        )
    return modifier_blocks(
        composition,
        positives,
        dict(method_spn.get("negatives", {}) or {}),
        method_spn.get("positives_train"),
    )
