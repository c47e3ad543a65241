"""Everything an experiment reads from a dataset: training triplets and evaluation splits.

``load_experiment_data(spec.dataset)`` resolves the dataset root (generating the embedded
synthetic benchmark when ``root: synthetic`` and it is absent), reads the training split
and the evaluation split(s) with the official readers, and returns them with the query
texts built the way the official code builds them.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from bench.config import SYNTHETIC, DatasetSpec, ExperimentSpec
from bench.core.arrays import ArrayCache
from bench.data import circo, cirr, fashioniq
from bench.data.records import CIRSplit
from bench.synthetic import ensure_synthetic


@dataclass(frozen=True)
class TrainTriplet:
    """A training triplet: reference and target image names and the raw caption(s)."""

    reference: str
    target: str
    captions: tuple[str, ...]
    source: str  # split name it came from (e.g. "dress/train", "generated/<name>")
    generated: bool = False  # captions are alternative template renderings (SPN positives)


@dataclass
class ExperimentData:
    """Training triplets and evaluation splits of one experiment."""

    format: str
    root: Path
    train: list[TrainTriplet]
    train_split: list[CIRSplit]
    eval_splits: list[CIRSplit]


def training_text(triplet: TrainTriplet, format: str, rng: random.Random) -> str:
    """The training query text. Generated triplets: one of their template renderings at
    random (as SPN's trainer does); FashionIQ: one of CLIP4Cir's four variants at random
    ("c1 and c2", "c2 and c1", "c1", "c2"); CIRR: the caption."""
    captions = triplet.captions
    if triplet.generated:
        return captions[rng.randrange(len(captions))]
    if format == "fashioniq":
        first, second = captions
        variant = rng.randrange(4)
        chosen = [(first, second), (second, first), (first,), (second,)][variant]
        return fashioniq.fashioniq_query_text(chosen)
    return captions[0]


def eval_text(format: str, captions: tuple[str, ...]) -> str:
    """The evaluation query text: FashionIQ "C1 and c2"; CIRR and CIRCO the caption."""
    return fashioniq.fashioniq_query_text(captions) if format == "fashioniq" else captions[0]


def dataset_root(spec: DatasetSpec, *, progress: bool = True) -> Path:
    """The folder of this format's data (synthetic data is generated when absent)."""
    if spec.root == SYNTHETIC:
        return ensure_synthetic(spec.synthetic_size, spec.synthetic_seed, progress=progress) / (
            spec.format
        )
    root = Path(spec.root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: dataset root folder not found (dataset.root)")
    return root


def load_split(spec: DatasetSpec, root: Path, split: str, category: str | None) -> CIRSplit:
    if spec.format == "fashioniq":
        assert category is not None
        return fashioniq.load_fashioniq_split(root, category, split)
    if spec.format == "circo":
        return circo.load_circo_split(root, split)
    return cirr.load_cirr_split(root, split)


def load_generated_triplets(
    spec: ExperimentSpec, dataset_root: Path, cache: ArrayCache, progress: bool = True
) -> tuple[list[TrainTriplet], dict[str, Path]]:
    """Build (or reuse, it is cached) the spec's generated triplets (positive scaling) and
    read them back in the dataset's own caption format, with their images' paths."""
    from bench.spn.positives.pipeline import build_positives

    positives = spec.spn.positives
    assert positives is not None
    built = build_positives(
        dataset_root, spec.dataset.format, positives, cache=cache, progress=progress
    )
    source = f"generated/{positives.name}"
    triplets = [
        TrainTriplet(
            g.reference,
            g.target,
            (g.text, g.alternative) if g.alternative else (g.text,),
            source,
            generated=True,
        )
        for g in built.triplets
    ]
    return triplets, built.image_paths


def load_experiment_data(spec: DatasetSpec, *, progress: bool = True) -> ExperimentData:
    root = dataset_root(spec, progress=progress)
    categories: list[str | None] = list(spec.categories) if spec.format == "fashioniq" else [None]
    # CIRCO is an evaluation benchmark only: its methods train on generated triplets
    train_splits = (
        []
        if spec.format == "circo"
        else [load_split(spec, root, spec.train_split, c) for c in categories]
    )
    eval_splits = [load_split(spec, root, spec.eval_split, c) for c in categories]
    triplets = [
        TrainTriplet(q.reference, q.target, q.captions, split.name)
        for split in train_splits
        for q in split.queries
        if q.target is not None
    ]
    if spec.max_train_queries is not None:
        triplets = random.Random(0).sample(triplets, min(spec.max_train_queries, len(triplets)))
    return ExperimentData(spec.format, root, triplets, train_splits, eval_splits)
