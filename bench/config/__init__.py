"""Typed specs: experiments (:mod:`~bench.config.spec`), their SPN block
(:mod:`~bench.config.spn`), the shared strict base and error format
(:mod:`~bench.config.base`) and fragment merging (:mod:`~bench.config.merge`)."""

from bench.config.base import SpecError, Strict, read_yaml, validation_problems
from bench.config.merge import apply_overrides, deep_merge, flatten
from bench.config.spec import (
    SYNTHETIC,
    BackboneSpec,
    DatasetSpec,
    EvalSpec,
    ExperimentSpec,
    MethodSpec,
    Stage1Spec,
    load_spec,
    parse_spec,
)
from bench.config.spn import (
    MatchingBackbone,
    NegativesSpec,
    PositivesSpec,
    PositivesTrainSpec,
    SPNSpec,
)
from bench.config.train import LoopOverrides, PhaseSpec, TrainSpec

__all__ = [
    "SYNTHETIC",
    "BackboneSpec",
    "DatasetSpec",
    "EvalSpec",
    "ExperimentSpec",
    "LoopOverrides",
    "MatchingBackbone",
    "MethodSpec",
    "NegativesSpec",
    "PhaseSpec",
    "PositivesSpec",
    "PositivesTrainSpec",
    "SPNSpec",
    "SpecError",
    "Stage1Spec",
    "Strict",
    "TrainSpec",
    "apply_overrides",
    "deep_merge",
    "flatten",
    "load_spec",
    "parse_spec",
    "read_yaml",
    "validation_problems",
]
