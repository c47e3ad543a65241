"""The :class:`Modifier` interface: what an SPN modifier adds to a run, and the registry.

A modifier is switched on by its block of the spec's ``spn`` section. After stage 1 it
may add

* training triplets (P: the generated ones, mixed into every epoch),
* the phase that continues from the stage-1 checkpoint (P: an in-batch continuation on
  every group; N: the query side against a static bank) with its settings,
* the objective that phase trains (N: InfoNCE against the bank).

At most one active modifier adds a phase (P's continuation runs only without N; with both,
P+N is N's phase on P's triplets). A modifier is one module of :mod:`bench.spn` with a
class decorated by ``@register_modifier`` (plus its block in :mod:`bench.config.spn`); the
modules of the package are imported on the first :func:`modifiers` call.
"""

from __future__ import annotations

import importlib
import pkgutil
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch

from bench.config import ExperimentSpec, TrainSpec
from bench.core.arrays import ArrayCache
from bench.core.errors import CirbenchError
from bench.formats.records import TrainTriplet
from methods.base import CIRMethod, Phase

_REGISTRY: dict[str, Modifier] = {}
_DISCOVERED = False


@dataclass
class PlannedPhase:
    """One phase a run trains (a method's stage-1 phase, or the phase a modifier runs after
    stage 1): what trains, with which settings, against which objective (``None``: the
    method's own in-batch loss)."""

    phase: Phase
    settings: TrainSpec
    objective: torch.nn.Module | None = None
    #: the method phase whose query function it runs (default: the phase itself when the
    #: method has it, else the method's last phase)
    method_phase: str | None = None


class Modifier(ABC):
    """One SPN modifier (see the module docstring)."""

    #: Its block in the spec's ``spn`` section.
    key: ClassVar[str] = ""

    @abstractmethod
    def enabled(self, spec: ExperimentSpec) -> bool:
        """True when the spec switches this modifier on."""

    def extra_triplets(
        self, spec: ExperimentSpec, root: Path, cache: ArrayCache, progress: bool
    ) -> tuple[list[TrainTriplet], dict[str, Path]]:
        """Training triplets this modifier adds and the paths of their images."""
        return [], {}

    def phase(self, spec: ExperimentSpec, method: CIRMethod) -> PlannedPhase | None:
        """The phase this modifier runs after stage 1, if any."""
        return None


def stage_groups(
    method: CIRMethod, wanted: tuple[str, ...] | None, default: tuple[str, ...], where: str
) -> tuple[str, ...]:
    """The parameter groups a stage trains: ``wanted`` (checked against the method's
    groups), else ``default``."""
    groups = method.parameter_groups()
    chosen = tuple(wanted) if wanted else default
    unknown = [g for g in chosen if g not in groups]
    if unknown:
        raise CirbenchError(
            f"{where}: {method.name} has no parameter groups {unknown}; it has {sorted(groups)}"
        )
    return chosen


def method_phase(method: CIRMethod, wanted: str | None, where: str) -> str:
    """The method phase whose query function a stage runs (default: the last phase)."""
    names = [p.name for p in method.phases]
    if wanted is None:
        return names[-1]
    if wanted not in names:
        raise CirbenchError(f"{where}: {method.name} has no phase {wanted!r}; it has {names}")
    return wanted


def register_modifier(cls: type[Modifier]) -> type[Modifier]:
    """Class decorator: register one instance of a :class:`Modifier` subclass."""
    _REGISTRY[cls.key] = cls()
    return cls


def modifiers() -> list[Modifier]:
    """Every registered modifier (the package's modules imported on the first call)."""
    global _DISCOVERED
    if not _DISCOVERED:
        package = Path(__file__).parent  # bench/spn (this module's package, not imported)
        for info in pkgutil.walk_packages([str(package)], "bench.spn."):
            importlib.import_module(info.name)
        _DISCOVERED = True
    return list(_REGISTRY.values())


def active_modifiers(spec: ExperimentSpec) -> list[Modifier]:
    """The modifiers a spec switches on."""
    return [m for m in modifiers() if m.enabled(spec)]


def modifier_phase(spec: ExperimentSpec, method: CIRMethod) -> PlannedPhase:
    """The one phase the active modifiers run after stage 1."""
    phases = [p for m in active_modifiers(spec) if (p := m.phase(spec, method)) is not None]
    if len(phases) != 1:
        names = [p.phase.name for p in phases]
        raise ValueError(
            f"spec {spec.name}: composition {spec.spn.composition.name} continues from stage 1 "
            f"but its modifiers add {len(phases)} phases ({names}); expected exactly one"
        )
    return phases[0]
