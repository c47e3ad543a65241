"""Per-method base settings that suites build their specs from.

Each registered method has ``experiments/methods/<name>.yaml``::

    method: <registry name>
    synthetic:            # the embedded synthetic benchmark (a small config of the same code)
      backbone: {...}
      method: {params: {...}}
      train: {...}
      spn: {...}          # optional: e.g. negatives overrides for this profile
      datasets:           # optional per-format overrides of this profile
        cirr: {train: {...}}
    real:                 # real FashionIQ / CIRR data: the published hyperparameters
      ...

:func:`method_base` resolves one (method, profile, dataset format) to a spec fragment
(``backbone``, ``method``, ``train``, ``spn``) with the dataset block merged in.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from bench.config import SpecError, deep_merge, read_yaml
from bench.runner.paths import METHODS_DIR

Profile = Literal["synthetic", "real"]
_SECTIONS = ("backbone", "method", "train", "spn", "eval")


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
) -> dict[str, Any]:
    """The spec fragment of ``method`` for ``profile`` and ``dataset_format``."""
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
    per_dataset = block.pop("datasets", {}) or {}
    unknown = set(block) - set(_SECTIONS)
    if unknown:
        raise SpecError(f"{path}: {profile}: unknown sections {sorted(unknown)}")
    merged = deep_merge(block, per_dataset.get(dataset_format, {}) or {})
    merged.setdefault("method", {})
    merged["method"] = {"name": method, **merged["method"]}
    return merged
