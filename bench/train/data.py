"""Everything an experiment reads from a dataset: training triplets and evaluation splits.

``load_experiment_data(spec.dataset)`` resolves the dataset root (generating the embedded
synthetic benchmark when ``root: synthetic`` and it is absent), reads the training split
and the evaluation split(s) with the format's readers, and returns the human triplets.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from bench.config import SYNTHETIC, DatasetSpec
from bench.formats import DatasetFormat, EvalOptions, get_format
from bench.formats.records import CIRSplit, TrainTriplet
from bench.synthetic import ensure_synthetic


@dataclass
class ExperimentData:
    """Training triplets and evaluation splits of one experiment."""

    format: DatasetFormat
    root: Path
    train: list[TrainTriplet]
    train_split: list[CIRSplit]
    eval_splits: list[CIRSplit]


def training_text(triplet: TrainTriplet, fmt: DatasetFormat, rng: random.Random) -> str:
    """The training query text. Generated triplets: one of their template renderings at
    random (as SPN's trainer does); human triplets: as their format trains (FashionIQ: one
    of CLIP4Cir's four variants at random; CIRR: the caption)."""
    if triplet.generated:
        return triplet.captions[rng.randrange(len(triplet.captions))]
    return fmt.training_text(triplet.captions, rng)


#: (pool row of a reference image, a training text): a query state's key.
Pair = tuple[int, str]


def training_texts(triplet: TrainTriplet, fmt: DatasetFormat) -> tuple[str, ...]:
    """Every text :func:`training_text` may draw for a triplet."""
    return triplet.captions if triplet.generated else fmt.training_texts(triplet.captions)


def state_pairs(
    triplets: Iterable[TrainTriplet],
    fmt: DatasetFormat,
    index: Mapping[str, int],
    same_as: Mapping[str, str],
) -> list[Pair]:
    """Every (pool row of the reference, text) pair an epoch may draw, sorted."""
    pairs = {
        (index[same_as.get(t.reference, t.reference)], text)
        for t in triplets
        for text in training_texts(t, fmt)
    }
    return sorted(pairs)


def eval_options(spec: DatasetSpec) -> EvalOptions:
    """The scoring options a dataset spec sets."""
    return EvalOptions(protocol=spec.protocol, targets=spec.cirr_targets)


def extra_eval_options(spec: DatasetSpec) -> tuple[EvalOptions, ...]:
    """The other protocols a dataset spec also reports (``also_protocols``)."""
    return tuple(
        EvalOptions(protocol=p, targets=spec.cirr_targets)
        for p in spec.also_protocols
        if p != spec.protocol
    )


def dataset_root(spec: DatasetSpec, *, progress: bool = True) -> Path:
    """The folder of this format's data (synthetic data is generated when absent)."""
    if spec.root == SYNTHETIC:
        world = ensure_synthetic(spec.synthetic_size, spec.synthetic_seed, progress=progress)
        return world / spec.format
    root = Path(spec.root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: dataset root folder not found (dataset.root)")
    return root


def load_experiment_data(spec: DatasetSpec, *, progress: bool = True) -> ExperimentData:
    """The human training triplets and the evaluation splits of a dataset spec (a format
    without a training split, CIRCO, has no human triplets: its runs train zero-shot)."""
    fmt = get_format(spec.format)
    root = dataset_root(spec, progress=progress)
    groups = fmt.groups(spec.categories)
    train_splits = (
        []
        if fmt.train_split is None
        else [fmt.load_split(root, spec.train_split, g) for g in groups]
    )
    eval_splits = [fmt.load_split(root, spec.eval_split, g) for g in groups]
    triplets = [
        TrainTriplet(q.reference, q.target, q.captions, split.name)
        for split in train_splits
        for q in split.queries
        if q.target is not None
    ]
    if spec.max_train_queries is not None:
        triplets = random.Random(0).sample(triplets, min(spec.max_train_queries, len(triplets)))
    return ExperimentData(fmt, root, triplets, train_splits, eval_splits)
