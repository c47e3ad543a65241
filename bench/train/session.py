"""Everything built from a spec before training: data, pixels, the method, the device."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from bench.backbones import load_backbone
from bench.backbones.resolve import resolve_weights
from bench.config import ExperimentSpec
from bench.core.arrays import ArrayCache
from bench.core.hashing import digest, image_list_digest
from bench.core.paths import cache_dir, home
from bench.core.runtime import seed_everything, select_device
from bench.evaluation.encode import SplitImages
from bench.formats.records import CIRSplit, TrainTriplet
from bench.images.dedup import duplicate_groups, pixel_digests
from bench.images.pixels import load_pixels
from bench.images.transforms import TargetPadTransform
from bench.spn.modifiers import active_modifiers
from bench.spn.positives.modifier import epoch_triplets
from bench.train.budget import cache_plan, check_plan
from bench.train.data import ExperimentData, load_experiment_data, state_pairs
from methods import create_method
from methods.base import CIRMethod


def run_dir_for(spec: ExperimentSpec) -> Path:
    """Where a spec's checkpoints live: ``<output_dir>/<name>-<spec digest>``."""
    return home() / spec.output_dir / f"{spec.name}-{spec.digest()}"


@dataclass
class Session:
    """Everything built from a spec: data, pixels, method, device, cache.

    ``pool_*`` is the training pool: every image a training triplet may use (the train
    splits' images and the generated triplets' images; zero-shot: the generated ones
    only), preprocessed once; the SPN bank holds its target vectors."""

    spec: ExperimentSpec
    device: torch.device
    data: ExperimentData
    method: CIRMethod
    pool_names: list[str]
    pool_pixels: np.ndarray
    pool_key: str
    eval_images: list[SplitImages]
    cache: ArrayCache
    generated: list[TrainTriplet] = field(default_factory=list)
    progress: bool = True
    features_in_ram: bool = False  # see bench.train.loop.training_features
    #: name -> the pool image standing for it (pixel-identical images share one row)
    same_as: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.pool_index = {n: i for i, n in enumerate(self.pool_names)}

    def epoch_triplets(self, seed: int) -> list[TrainTriplet]:
        """The training triplets of one epoch (human, generated or a seeded mix)."""
        return epoch_triplets(self.spec.spn, self.data.train, self.generated, seed)

    def rows(self, names: list[str]) -> np.ndarray:
        """Pool rows of images (a duplicate's row is its group's)."""
        index, same = self.pool_index, self.same_as
        return np.fromiter((index[same.get(n, n)] for n in names), np.int64, count=len(names))


def _split_images(
    cache: ArrayCache,
    split: CIRSplit,
    transform: TargetPadTransform,
    progress: bool,
    workers: int,
) -> SplitImages:
    pixels = load_pixels(
        cache,
        split.gallery,
        split.image_paths,
        transform,
        progress=progress,
        desc=f"{split.name} images",
        workers=workers,
    )
    key = digest(image_list_digest(split.gallery, split.image_paths), transform.describe())
    return SplitImages(split, pixels, key)


def build_session(
    spec: ExperimentSpec, *, progress: bool = True, pretrained: bool = True
) -> Session:
    """Load data, pixels and the method. ``pretrained=False`` skips loading backbone weights
    (used when a checkpoint with every weight is loaded right after)."""
    device = select_device(spec.device)
    data = load_experiment_data(spec.dataset, progress=progress)
    weights = None
    if pretrained:
        weights = resolve_weights(
            spec.backbone.arch,
            spec.backbone.pretrained,
            synthetic_size=spec.dataset.synthetic_size,
            synthetic_seed=spec.dataset.synthetic_seed,
            progress=progress,
        )
    seed_everything(spec.seed)
    backbone = load_backbone(
        spec.backbone.arch, weights, seed=spec.seed, target_pad_ratio=spec.backbone.target_pad_ratio
    )
    method = create_method(spec.method.name, backbone, spec.method.params).to(device)
    cache = ArrayCache(cache_dir())

    extras = [m.extra_triplets(spec, data.root, cache, progress) for m in active_modifiers(spec)]
    generated = [t for triplets, _ in extras for t in triplets]
    pool_names, paths, same_as = training_pool(spec, data, generated, extras, progress)
    transform = backbone.transform
    pairs = 0
    if spec.spn.negatives is not None and method.query_state_array() is not None:
        triplets = ([] if spec.spn.zero_shot else data.train) + generated
        index = {n: i for i, n in enumerate(pool_names)}
        pairs = len(state_pairs(triplets, data.format, index, same_as))
    pool = (pool_names, paths)
    plan = cache_plan(spec, method, cache, pool, data.eval_splits, transform, pairs)
    check_plan(plan, f"spec {spec.name}", progress=progress)
    workers = spec.train.num_workers
    pool_pixels = load_pixels(
        cache, pool_names, paths, transform, progress=progress, desc="train images", workers=workers
    )
    pool_key = digest(image_list_digest(pool_names, paths), transform.describe())
    eval_images = [_split_images(cache, s, transform, progress, workers) for s in data.eval_splits]
    return Session(
        spec,
        device,
        data,
        method,
        pool_names,
        pool_pixels,
        pool_key,
        eval_images,
        cache,
        generated,
        progress,
        same_as=same_as,
    )


def training_pool(
    spec: ExperimentSpec,
    data: ExperimentData,
    generated: list[TrainTriplet],
    extras: list[tuple[list[TrainTriplet], dict[str, Path]]],
    progress: bool,
) -> tuple[list[str], dict[str, Path], dict[str, str]]:
    """(names, paths, duplicates) of the training pool, the images whose target vectors
    the SPN bank holds: every image of the run's triplets (human and generated; zero-shot:
    generated only), or with ``spn.negatives.bank: split`` also every other image of the
    train split files. With ``spn.negatives.dedup`` pixel-identical images are one row:
    ``duplicates`` maps each merged name to the name that stands for it."""
    paths: dict[str, Path] = {}
    if not spec.spn.zero_shot:  # a zero-shot run uses no human image
        for split in data.train_split:
            paths.update(split.image_paths)
    for _, extra_paths in extras:
        paths.update(extra_paths)
    negatives = spec.spn.negatives
    triplets = ([] if spec.spn.zero_shot else data.train) + generated
    used = {n for t in triplets for n in (t.reference, t.target)}
    if negatives is not None and negatives.bank == "split":
        names = list(paths)
    else:
        names = [n for n in paths if n in used]
    if negatives is None or not negatives.dedup:
        return names, {n: paths[n] for n in names}, {}
    digests = pixel_digests(names, paths, cache_dir(), progress=progress)
    groups = duplicate_groups(digests)
    kept = [n for n in names if groups[n] == n]
    return kept, {n: paths[n] for n in kept}, {n: g for n, g in groups.items() if n != g}
