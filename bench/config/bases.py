"""Per-method base settings: the recipe of each method, as data.

Each registered method has ``experiments/methods/<name>.yaml``::

    method: <registry name>
    synthetic:            # the embedded synthetic benchmark (a small config of the same code)
      backbone: {...}
      method: {params: {...}}
      train: {...}        # stage 1
      dataset: {...}      # e.g. the evaluation protocol its published numbers used
      spn:                # the SPN recipe: positives, positives_train, negatives
        ...
      datasets:           # per-format overrides of this profile
        cirr: {train: {...}, spn: {...}}
      sizes:              # per synthetic size (bench.config.base.SYNTHETIC_SIZES): the
        compact:          # scale-dependent numbers calibrated in that world, over the above
          train: {...}
          datasets: {fashioniq: {...}}
    real:                 # real FashionIQ / CIRR data: the published recipe
      ...

:func:`method_base` resolves one (method, profile, dataset format, synthetic size) to a
spec fragment: the profile's block, its ``datasets`` entry, then the size's block and its
``datasets`` entry, each over the one before. Suites build their points from it;
:func:`fill_from_recipe` completes a hand-written spec's SPN blocks and dataset settings
from it, so that every spec names every recipe value it runs (and its digest covers them).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from bench.config.base import SYNTHETIC_SIZES, SpecError, read_yaml
from bench.config.merge import deep_merge
from bench.config.paths import METHODS_DIR

Profile = Literal["synthetic", "real"]
_SECTIONS = ("backbone", "method", "train", "dataset", "spn", "eval")


def method_base_file(method: str, directory: Path = METHODS_DIR) -> Path:
    return directory / f"{method}.yaml"


def methods_with_bases(directory: Path = METHODS_DIR) -> list[str]:
    """Names of the methods that have a base file."""
    return sorted(p.stem for p in directory.glob("*.yaml"))


def method_base(
    method: str,
    profile: Profile,
    dataset_format: str,
    directory: Path = METHODS_DIR,
    synthetic_size: str | None = None,
) -> dict[str, Any]:
    """The spec fragment of ``method`` for ``profile`` and ``dataset_format`` (and, for the
    synthetic profile, ``synthetic_size``: its ``sizes`` entry applies, if it has one)."""
    path = method_base_file(method, directory)
    if not path.is_file():
        raise SpecError(
            f"{path}: no base settings for method {method!r} (every method in a suite needs "
            f"experiments/methods/<name>.yaml)"
        )
    data = read_yaml(path) or {}
    if data.get("method") != method:
        raise SpecError(f"{path}: field 'method' is {data.get('method')!r}, expected {method!r}")
    if profile not in data:
        raise SpecError(f"{path}: no {profile!r} profile")
    block = dict(data[profile])
    sizes = block.pop("sizes", {}) or {}
    if sizes and profile != "synthetic":
        raise SpecError(f"{path}: {profile}: 'sizes' is for the synthetic profile only")
    wrong = sorted(set(sizes) - set(SYNTHETIC_SIZES))
    if wrong:
        raise SpecError(
            f"{path}: {profile}.sizes: unknown sizes {wrong} (known: {', '.join(SYNTHETIC_SIZES)})"
        )
    merged = _with_datasets(block, dataset_format, f"{path}: {profile}")
    if synthetic_size in sizes:
        where = f"{path}: {profile}.sizes.{synthetic_size}"
        size_block = _with_datasets(dict(sizes[synthetic_size]), dataset_format, where)
        merged = deep_merge(merged, size_block)
    merged.setdefault("method", {})
    merged["method"] = {"name": method, **merged["method"]}
    return merged


def _with_datasets(block: dict[str, Any], dataset_format: str, where: str) -> dict[str, Any]:
    """``block`` with its ``datasets`` entry for ``dataset_format`` merged over it."""
    per_dataset = block.pop("datasets", {}) or {}
    unknown = set(block) - set(_SECTIONS)
    if unknown:
        raise SpecError(f"{where}: unknown sections {sorted(unknown)}")
    return deep_merge(block, per_dataset.get(dataset_format, {}) or {})


def method_references(method: str, directory: Path = METHODS_DIR) -> dict[str, str]:
    """dataset format -> the reference commands / files its recipe mirrors (the base file's
    top-level ``reference`` map)."""
    data = read_yaml(method_base_file(method, directory)) or {}
    return dict(data.get("reference") or {})


def profile_of(dataset: dict[str, Any]) -> Profile:
    """``synthetic`` for the embedded benchmark (``root: synthetic``), else ``real``."""
    return "synthetic" if dataset.get("root", "synthetic") == "synthetic" else "real"


# Recipe settings that only mean something for the recipe's value of another setting: a
# spec that changes the second does not inherit the first (e.g. --refer is for the train pool).
_BOUND_TO = {
    "positives": {"captioner_options": "captioner", "only_train_references": "pool"},
}
_IMPLICIT = {"pool": "train"}  # the field defaults a recipe leaves unsaid


def _unbound(default: dict[str, Any], given: dict[str, Any], block: str) -> dict[str, Any]:
    """The recipe block less the settings whose anchor the spec changes."""
    out = dict(default)
    for key, anchor in _BOUND_TO.get(block, {}).items():
        recipe_anchor = default.get(anchor, _IMPLICIT.get(anchor))
        if given.get(anchor, recipe_anchor) != recipe_anchor:
            out.pop(key, None)
    return out


def fill_from_recipe(data: dict[str, Any]) -> dict[str, Any]:
    """A spec mapping completed from its method's recipe: unset dataset settings (e.g. the
    protocol) and, for the SPN blocks the spec switches on, every field it leaves unset
    (``negatives``: batch, epochs, lr, tau, what trains, the optimiser...; ``positives``:
    the generated-triplet recipe; ``positives_train``: mixing and P's continuation). The
    spec's own values win. A method without a base file is left as it is."""
    method = (data.get("method") or {}).get("name", "clip4cir")
    dataset = data.get("dataset")
    if not isinstance(dataset, dict) or not method_base_file(method).is_file():
        return data
    base = method_base(
        method,
        profile_of(dataset),
        str(dataset.get("format")),
        synthetic_size=str(dataset.get("synthetic_size", "default")),
    )
    out = dict(data)
    out["dataset"] = deep_merge(base.get("dataset") or {}, dataset)
    spn = dict(out.get("spn") or {})
    recipe = base.get("spn") or {}
    for block in ("negatives", "positives"):
        given, default = spn.get(block), recipe.get(block)
        if isinstance(given, dict) and isinstance(default, dict):
            spn[block] = deep_merge(_unbound(default, given, block), given)
    uses_positives = spn.get("positives") is not None or spn.get("control")
    if uses_positives and isinstance(recipe.get("positives_train"), dict):
        given = spn.get("positives_train") or {}
        spn["positives_train"] = deep_merge(recipe["positives_train"], given)
    if spn:
        out["spn"] = spn
    return out
