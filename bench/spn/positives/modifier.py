"""Positive scaling (P) as a modifier: the generated triplets it adds, how they are mixed
into each epoch, and P's continuation phase.

* The triplets come from the cached pipeline (:func:`~bench.spn.positives.pipeline.
  build_positives`), read back in the dataset's own caption records, or
  (``spn.positives.source: released``) straight from the SPN authors' released files.
* Each epoch trains on the human triplets plus a seeded sample of the generated ones,
  ``spn.positives_train.mix_ratio`` per human triplet (``null``: all of them); a zero-shot
  run trains on the generated triplets only.
* Without N, P continues from the stage-1 checkpoint with in-batch negatives, every
  parameter group trainable (the reference's ``--plus --wo_bank``), for
  ``positives_train.epochs`` at ``positives_train.lr``; P-control runs the same
  continuation on human triplets only.
"""

from __future__ import annotations

import random
from pathlib import Path

import torch

from bench.config import ExperimentSpec, SPNSpec
from bench.core.arrays import ArrayCache
from bench.formats.generated import read_generated
from bench.formats.records import GeneratedTriplet, TrainTriplet
from bench.spn.modifiers import (
    Modifier,
    PlannedPhase,
    method_phase,
    register_modifier,
    stage_groups,
)
from bench.spn.positives.pipeline import build_positives
from methods.base import CIRMethod, Phase, target_scores

#: The name of P's continuation phase.
SPN_POSITIVES = "spn_positives"


def generated_triplets(
    spec: ExperimentSpec, root: Path, cache: ArrayCache, progress: bool = True
) -> tuple[list[TrainTriplet], dict[str, Path]]:
    """Build (or reuse, it is cached) the spec's generated triplets and read them back in
    the dataset's own caption records, with their images' paths."""
    positives = spec.spn.positives
    assert positives is not None
    if positives.source == "released":
        released, paths = read_generated(root, spec.dataset.format, positives.name)
        return _train_triplets(released, f"released/{positives.name}"), paths
    built = build_positives(root, spec.dataset.format, positives, cache=cache, progress=progress)
    return _train_triplets(built.triplets, f"generated/{positives.name}"), built.image_paths


def _train_triplets(generated: list[GeneratedTriplet], source: str) -> list[TrainTriplet]:
    return [
        TrainTriplet(
            g.reference,
            g.target,
            (g.text, g.alternative) if g.alternative else (g.text,),
            source,
            generated=True,
        )
        for g in generated
    ]


def epoch_triplets(
    spn: SPNSpec, human: list[TrainTriplet], generated: list[TrainTriplet], seed: int
) -> list[TrainTriplet]:
    """The training triplets of one epoch (see the module docstring)."""
    if spn.zero_shot:
        return generated
    if not generated:
        return human
    ratio = spn.positives_train.mix_ratio
    count = len(generated) if ratio is None else round(ratio * len(human))
    if count >= len(generated):
        return human + generated
    return human + random.Random(seed).sample(generated, count)


@register_modifier
class PositiveScaling(Modifier):
    """P: generated triplets, and the continuation phase when N is off."""

    key = "positives"

    def enabled(self, spec: ExperimentSpec) -> bool:
        return spec.spn.positives is not None or spec.spn.control

    def extra_triplets(
        self, spec: ExperimentSpec, root: Path, cache: ArrayCache, progress: bool
    ) -> tuple[list[TrainTriplet], dict[str, Path]]:
        if spec.spn.positives is None:
            return [], {}
        return generated_triplets(spec, root, cache, progress)

    def phase(self, spec: ExperimentSpec, method: CIRMethod) -> PlannedPhase | None:
        if not spec.spn.composition.continues:
            return None
        pt = spec.spn.positives_train
        settings = spec.train.with_overrides(pt)
        every = tuple(method.parameter_groups())
        trains = stage_groups(method, pt.trains, every, "spn.positives_train.trains")
        objective = None if pt.tau is None else InBatchInfoNCE(pt.tau)
        query = (
            None
            if pt.phase is None
            else method_phase(method, pt.phase, "spn.positives_train.phase")
        )
        phase = Phase(SPN_POSITIVES, trains, "fine-tune on human + generated triplets")
        return PlannedPhase(phase, settings, objective, query)


class InBatchInfoNCE(torch.nn.Module):
    """InfoNCE of each query against the batch's targets at a fixed temperature, in place of
    the method's own loss (CLIP4CIR's P in the reference: sum fusion at tau 0.02)."""

    def __init__(self, tau: float) -> None:
        super().__init__()
        self.tau = tau

    def forward(self, query: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logits = target_scores(query, target) / self.tau
        labels = torch.arange(query.shape[0], device=query.device)
        return torch.nn.functional.cross_entropy(logits, labels)
