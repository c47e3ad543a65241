"""The SPN recipe a suite point runs: the ``spn`` block of a composition, from the method's
base settings (``experiments/methods/<name>.yaml``: its ``spn`` section per profile and
dataset holds the released recipe: the generated-triplet block ``positives``, the bank
stage's ``negatives`` settings, P's continuation ``positives_train``). The composition
decides which of them the point switches on (:func:`bench.spn.compositions.modifier_blocks`).
"""

from __future__ import annotations

from typing import Any

from bench.config import ExperimentSpec, PositivesSpec, SpecError, parse_spec
from bench.config.bases import (
    Profile,
    method_base,
    method_base_file,
    method_references,
    methods_with_bases,
)
from bench.config.train import TrainSpec
from bench.spn.compositions import get_composition, modifier_blocks
from bench.spn.negatives import negatives_settings
from bench.spn.positives.templates import TEMPLATE_ALIASES


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


# ----------------------------------------------------------------------------- the recipe table

RECIPE_COLUMNS = (
    "method",
    "dataset",
    "SPN stage 2 (N)",
    "trains",
    "τ",
    "batch · epochs · lr",
    "optimiser",
    "positives (P)",
    "bank",
    "protocol",
    "mirrors",
)


def recipe_rows(profile: Profile = "real") -> list[dict[str, str]]:
    """One row per (method, dataset) of the SPN recipe each base file declares for
    ``profile``, resolved as a P+N point resolves it (the README's recipe table)."""
    rows = []
    for method in methods_with_bases():
        references = method_references(method)
        for dataset in ("fashioniq", "cirr"):
            spec = recipe_spec(method, dataset, profile)
            negatives, positives = spec.spn.negatives, spec.spn.positives
            assert negatives is not None and positives is not None
            loop = negatives_settings(spec)
            tau = f"{negatives.tau:g} " + (
                f"learned as {'τ' if negatives.tau_parametrisation == 'tau' else 'log 1/τ'}"
                if negatives.learnable_tau
                else "fixed"
            )
            rows.append(
                {
                    "method": method,
                    "dataset": dataset,
                    "SPN stage 2 (N)": f"stage 1, {negatives.phase or 'last'} phase",
                    "trains": ", ".join(negatives.trains or ("query side",)),
                    "τ": tau,
                    "batch · epochs · lr": f"{loop.batch_size} · {loop.epochs} · {loop.lr:g}",
                    "optimiser": _optimiser(loop),
                    "positives (P)": _positives(positives),
                    "bank": f"{negatives.bank.removesuffix('s')} images"
                    + (", dedup" if negatives.dedup else ""),
                    "protocol": spec.dataset.protocol if dataset == "fashioniq" else "hard targets",
                    "mirrors": references.get(dataset, "–"),
                }
            )
    return rows


def recipe_spec(method: str, dataset: str, profile: Profile) -> ExperimentSpec:
    """The P+N spec of ``method`` on ``dataset`` from its base file (no folder is read)."""
    base = method_base(method, profile, dataset)
    spn = composition_spn("P+N", base.pop("spn", {}) or {}, f"{method} {profile} recipe")
    root = "synthetic" if profile == "synthetic" else f"<data-root>/{dataset}"
    data = {
        "name": f"recipe-{method}",
        **base,
        "dataset": {**(base.get("dataset") or {}), "format": dataset, "root": root},
        "spn": spn,
    }
    return parse_spec(data, source=f"{method_base_file(method)} ({profile}, {dataset})")


def recipe_markdown(profile: Profile = "real") -> str:
    """:func:`recipe_rows` as a Markdown table."""
    rows = recipe_rows(profile)
    lines = ["| " + " | ".join(RECIPE_COLUMNS) + " |", "|" + "---|" * len(RECIPE_COLUMNS)]
    lines += [
        "| " + " | ".join(r[c].replace("|", "\\|") for c in RECIPE_COLUMNS) + " |" for r in rows
    ]
    return "\n".join(lines) + "\n"


def _optimiser(loop: TrainSpec) -> str:
    beta1, beta2 = loop.adam_betas
    clip = "no clip" if loop.grad_clip is None else f"clip {loop.grad_clip:g}"
    last = ", drop_last" if loop.drop_last else ""
    return (
        f"AdamW β ({beta1:g}, {beta2:g}), eps {loop.adam_eps:g}, wd {loop.weight_decay:g} "
        f"({loop.decay}), {clip}, {loop.mode} mode{last}"
    )


def _positives(p: PositivesSpec) -> str:
    window = f"window [{p.rank_lo:g}, {p.rank_hi:g})" if p.mode == "window" else "random targets"
    parts = [window, f"k {p.k}"]
    if p.only_train_references:
        parts.append("refer")
    if p.K is not None:
        parts.append(f"K {p.K:g}")
    names = {text: alias for alias, text in TEMPLATE_ALIASES.items()}
    parts.append("templates " + "+".join(names.get(t, repr(t)) for t in p.templates))
    words = p.captioner_options.get("words")
    parts.append(f"{p.captioner} captions" + (f" ({words} words)" if words else ""))
    if p.merge_categories:
        parts.append("one merged pool")
    return ", ".join(parts)
