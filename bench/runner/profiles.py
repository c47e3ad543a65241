"""Run profiles (``experiments/profiles.yaml``): how big a suite run is."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError

from bench.config import SpecError, Strict, read_yaml, validation_problems
from bench.config.base import SyntheticSize, validate_strict
from bench.config.paths import PROFILES_FILE
from bench.core.errors import UnknownNameError


class Profile(Strict):
    """How big a suite run is: data size, seeds, epoch caps, study trials."""

    name: str
    description: str = ""
    synthetic_size: SyntheticSize = "compact"
    seeds: tuple[int, ...] = (0,)
    max_epochs: int | None = Field(default=None, ge=1, description="cap on every phase")
    max_train_queries: int | None = Field(default=None, gt=0)
    categories: tuple[Literal["dress", "shirt", "toptee"], ...] | None = None
    pretrained: str | None = Field(default=None, description="override the synthetic backbone")
    n_trials: int = Field(default=8, ge=1)
    #: per-suite seeds (e.g. one seed for the secondary studies of a time-boxed profile)
    suite_seeds: dict[str, tuple[int, ...]] = Field(default_factory=dict)
    overrides: tuple[str, ...] = Field(default=(), description="--set KEY=VALUE for every spec")


def load_profiles(path: Path = PROFILES_FILE) -> dict[str, Profile]:
    data = read_yaml(path) or {}
    out: dict[str, Profile] = {}
    for name, block in data.items():
        try:
            out[name] = validate_strict(Profile, {"name": name, **(block or {})})
        except ValidationError as exc:
            problems = "; ".join(validation_problems(exc))
            raise SpecError(f"{path}: profile {name!r}: {problems}") from None
    return out


def get_profile(name: str) -> Profile:
    profiles = load_profiles()
    if name not in profiles:
        raise UnknownNameError("profile", name, list(profiles))
    return profiles[name]
