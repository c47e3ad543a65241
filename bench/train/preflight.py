"""The checks of a whole spec before any work (no data generated, no MLflow run opened):
what the typed spec (:mod:`bench.config`) cannot know because it names things registered
in higher layers.

* the method (``method.name``) and the backbone architecture (``backbone.arch``) exist,
  with "did you mean" (:class:`~bench.core.errors.UnknownNameError`);
* ``method.params`` validate against the method's own parameters (strict types);
* every phase name (``train.phases.<name>``, ``spn.positives_train.phase``,
  ``spn.negatives.phase``) is one of the method's phases;
* ``spn.positives.captioner_options`` name options the captioner takes (the pipeline may
  supply the others).

Names are checked first, so a misspelt method fails in a fraction of a second.
"""

from __future__ import annotations

import inspect

from pydantic import ValidationError

from bench.backbones.base import split_family
from bench.backbones.clip import list_architectures
from bench.config import ExperimentSpec, SpecError, validation_problems
from bench.config.base import validate_strict
from bench.core.errors import UnknownNameError
from bench.spn.positives.captioners import CAPTIONERS
from methods import get_method_class, list_methods


def check_names(spec: ExperimentSpec) -> None:
    """The method and backbone names of ``spec`` (:class:`UnknownNameError`)."""
    if spec.method.name not in list_methods():
        raise UnknownNameError("method", spec.method.name, list_methods())
    family, _ = split_family(spec.backbone.arch)
    if family is None and spec.backbone.arch not in (known := list_architectures()):
        raise UnknownNameError("backbone architecture", spec.backbone.arch, known)


def preflight(spec: ExperimentSpec, source: str = "<spec>") -> None:
    """Every check of the module docstring; :class:`SpecError` (or
    :class:`UnknownNameError`) naming ``source`` and the dotted key."""
    try:
        check_names(spec)
    except UnknownNameError as exc:
        key = "method.name" if exc.kind == "method" else "backbone.arch"
        raise SpecError(f"{source}: {key}: {exc}") from None
    method = get_method_class(spec.method.name)
    try:
        validate_strict(method.Params, spec.method.params)
    except ValidationError as exc:
        problems = "\n".join(f"  {p}" for p in validation_problems(exc, "method.params"))
        raise SpecError(f"{source}: invalid {spec.method.name} parameters\n{problems}") from None
    phases = [p.name for p in method.phases]
    named = [(f"train.phases.{name}", name) for name in spec.train.phases]
    if spec.spn.positives_train is not None:
        named.append(("spn.positives_train.phase", spec.spn.positives_train.phase))
    if spec.spn.negatives is not None:
        named.append(("spn.negatives.phase", spec.spn.negatives.phase))
    for key, name in named:
        if name is not None and name not in phases:
            message = str(UnknownNameError(f"phase of {spec.method.name}", name, phases))
            raise SpecError(f"{source}: {key}: {message}")
    positives = spec.spn.positives
    if positives is not None:
        captioner = CAPTIONERS[positives.captioner]
        try:
            inspect.signature(captioner).bind_partial(**positives.captioner_options)
        except TypeError as exc:
            takes = ", ".join(inspect.signature(captioner).parameters)
            raise SpecError(
                f"{source}: spn.positives.captioner_options: {exc} (the "
                f"{positives.captioner} captioner takes {takes})"
            ) from None
