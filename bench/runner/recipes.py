"""The SPN released recipe a suite point runs: the ``spn`` block of a composition.

The generated-triplet recipe: one target per reference from a similarity-rank window
(FashionIQ: the "{target}" template; CIRR: the first two). On the synthetic benchmark the
captioner is the oracle with 10% attribute noise and the window is scaled to its pool; on
real data the captions come from a file the user provides (``--set``
``spn.positives.captioner_options.path=...``). The method's own ``spn`` settings (e.g. its
CIRR temperature) apply to the modifiers the composition switches on.
"""

from __future__ import annotations

from typing import Any

from bench.spn.compositions import modifier_blocks


def positives_recipe(dataset: str, real: bool) -> dict[str, Any]:
    """The generated-triplet block of the released recipe (``pool`` is the composition's)."""
    templates = ["target"] if dataset == "fashioniq" else ["instead", "unlike"]
    recipe: dict[str, Any] = {
        "name": "spn",
        "captioner": "oracle",
        "captioner_options": {"noise": 0.1},
        "rank_lo": 5,
        "rank_hi": 50,
        "k": 1,
        "templates": templates,
    }
    if real:
        recipe |= {
            "captioner": "file",
            "captioner_options": {},
            "backbone": {"arch": "ViT-L-14", "pretrained": "openai"},
            "rank_lo": 10000 if dataset == "fashioniq" else 100,
            "rank_hi": 20000 if dataset == "fashioniq" else 1000,
        }
    return recipe


def composition_spn(
    composition: str, dataset: str, real: bool, method_spn: dict[str, Any]
) -> dict[str, Any]:
    """The ``spn`` block of ``composition`` (see the module docstring)."""
    return modifier_blocks(
        composition,
        positives_recipe(dataset, real),
        dict(method_spn.get("negatives", {}) or {}),
        method_spn.get("positives_train"),
    )
