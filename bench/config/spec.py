"""Experiment specs: YAML files validated into typed config objects.

One spec = dataset, backbone, method (with its hyperparameters), training, evaluation and
the SPN modifiers (:mod:`bench.config.spn`). Unknown keys and bad values are errors that
name the file and the dotted key; command line overrides (``--set train.lr=1e-5``) are
applied before validation, their values parsed as YAML scalars.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from bench.config.base import (
    SpecError,
    Strict,
    SyntheticSize,
    read_yaml,
    validate_strict,
    validation_problems,
)
from bench.config.bases import fill_from_recipe
from bench.config.merge import apply_overrides, flatten
from bench.config.spn import SPNSpec
from bench.config.train import TrainSpec
from bench.core.errors import unknown_name_message
from bench.formats import get_format

#: ``dataset.root`` value that selects the embedded synthetic benchmark.
SYNTHETIC = "synthetic"
#: Version of the spec schema (what a spec digest is a hash of). 2: the typed SPN block
#: (spn.positives is a PositivesSpec, spn.control names P-control); run folders of
#: schema 1 have other digests and are not reused. 3: the SPN recipe as data (stage
#: recipes with phase / trains / optimiser, bank contents, dataset.also_protocols).
SPEC_SCHEMA = 3
#: (block, key, the value the digest hashes): settings that change no result.
RUNTIME_ONLY = (("train", "num_workers", 0),)


class DatasetSpec(Strict):
    format: str = Field(description="a registered format (bench.formats.format_names())")
    root: str = SYNTHETIC
    synthetic_size: SyntheticSize = "default"
    synthetic_seed: int = 0
    categories: tuple[Literal["dress", "shirt", "toptee"], ...] = Field(
        default=("dress", "shirt", "toptee"), min_length=1
    )
    train_split: str = "train"
    eval_split: str = "val"
    protocol: Literal["full_gallery", "drop_reference", "triplet_gallery"] = "full_gallery"
    #: FashionIQ: the metrics also under these protocols, keys prefixed "<protocol>." (e.g.
    #: "full_gallery.Rmean" beside a recipe's drop_reference numbers, for a fair comparison)
    also_protocols: tuple[Literal["full_gallery", "drop_reference", "triplet_gallery"], ...] = ()
    cirr_targets: Literal["hard", "soft"] = "hard"
    max_train_queries: int | None = Field(default=None, gt=0)

    @field_validator("format")
    @classmethod
    def _known_format(cls, value: str) -> str:
        get_format(value)  # UnknownFormatError (a ValueError) names the registered ones
        return value


class BackboneSpec(Strict):
    arch: str = "cirbench-tiny"
    pretrained: str | None = SYNTHETIC
    target_pad_ratio: float | None = Field(default=1.25, gt=1.0)


class MethodSpec(Strict):
    name: str = "clip4cir"
    params: dict[str, Any] = Field(default_factory=dict)


class Stage1Spec(Strict):
    """A released stage-1 checkpoint that *is* the spec's stage 1 (nothing of stage 1 is
    trained): its files (one per part of the format, e.g. CLIP4Cir's CLIP and Combiner
    files) and the format name (``bench.checkpoints.checkpoint_format_names()``)."""

    checkpoint: tuple[str, ...] = Field(description="the file, or a list of the format's files")
    format: str = Field(
        description="a released checkpoint format (`cirbench checkpoints` lists them)"
    )

    @field_validator("checkpoint", mode="before")
    @classmethod
    def _one_or_more(cls, value: Any) -> Any:
        return (value,) if isinstance(value, str) else value

    @field_validator("checkpoint")
    @classmethod
    def _not_empty(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value or not all(value):
            raise ValueError("give the checkpoint file (or the list of the format's files)")
        return value


class EvalSpec(Strict):
    batch_size: int = Field(default=256, gt=0)
    every_epoch: bool = True
    select_metric: str | None = None


class ExperimentSpec(Strict):
    name: str
    experiment: str = "cirbench"
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    output_dir: str = "runs"
    dataset: DatasetSpec
    backbone: BackboneSpec = Field(default_factory=BackboneSpec)
    method: MethodSpec = Field(default_factory=MethodSpec)
    train: TrainSpec = Field(default_factory=TrainSpec)
    eval: EvalSpec = Field(default_factory=EvalSpec)
    spn: SPNSpec = Field(default_factory=SPNSpec)
    #: a released checkpoint as the stage-1 result (None: stage 1 is trained)
    stage1: Stage1Spec | None = None

    @field_validator("name")
    @classmethod
    def _name_is_a_path_segment(cls, value: str) -> str:
        if not value or "/" in value or value.startswith("."):
            raise ValueError("must be a non-empty name without '/' (it names the run folder)")
        return value

    @model_validator(mode="after")
    def _spn_is_consistent(self) -> ExperimentSpec:
        fmt = get_format(self.dataset.format)
        if fmt.train_split is None:
            name = self.dataset.format
            if not self.spn.zero_shot:
                raise ValueError(
                    f"dataset.format {name}: {fmt.title} has no training split; a {fmt.title} "
                    "run trains zero-shot on generated triplets: set spn.zero_shot: true and "
                    "spn.positives with an out-of-domain pool (pool: pool or a folder)"
                )
            if self.spn.positives is None or self.spn.positives.pool == "train":
                raise ValueError(
                    f"dataset.format {name}: spn.positives.pool 'train' (the default) does not "
                    f"exist for {fmt.title}; use pool: pool (the synthetic unlabeled pool) or a "
                    "folder of images"
                )
        if self.stage1 is not None and self.spn.zero_shot:
            raise ValueError(
                "stage1: a released stage-1 checkpoint cannot be combined with spn.zero_shot "
                "(a zero-shot stage 1 trains on generated triplets)"
            )
        return self

    @property
    def imports_stage1(self) -> bool:
        """True when this spec's stage 1 is a released checkpoint (``stage1``)."""
        return self.stage1 is not None

    @property
    def is_stage1(self) -> bool:
        """True when this spec trains from the backbone (no modifier, or zero-shot stage 1);
        False when it continues from the run of :meth:`stage1_spec`."""
        return self.spn.composition.is_stage1

    def stage1_spec(self) -> ExperimentSpec:
        """The spec whose run is the stage-1 checkpoint SPN continues from: the same spec
        without modifiers (zero-shot: without negatives, stage 1 trains on generated data).
        All compositions of one base share it, so stage 1 is trained once."""
        spn = self.spn.model_copy(update={"negatives": None}) if self.spn.zero_shot else SPNSpec()
        return self.model_copy(update={"spn": spn})

    def flat(self) -> dict[str, Any]:
        """The spec flattened to dotted keys (MLflow params)."""
        return flatten(self.dump())

    def digest(self) -> str:
        """A content hash of the resolved spec (identifies a grid point); a spec without
        ``stage1`` hashes as before the field existed. Settings that change no result
        (:data:`RUNTIME_ONLY`) enter it at their defaults, so a run folder is the same for
        any number of input workers."""
        data = self.dump()
        for block, key, default in RUNTIME_ONLY:
            data[block][key] = default
        blob = json.dumps(data, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.dump(), sort_keys=False)

    def dump(self) -> dict[str, Any]:
        """The spec as JSON data, without the fields added after schema 3 where they hold
        their defaults (``stage1`` unset, ``spn.positives.source: generate``), so that the
        digests of the specs that existed before stay the same."""
        data = self.model_dump(mode="json")
        if self.stage1 is None:
            data.pop("stage1")
        positives = data["spn"].get("positives")
        if positives is not None and positives.get("source") == "generate":
            positives.pop("source")
        return data


def parse_spec(
    data: dict[str, Any], *, source: str = "<spec>", overrides: list[str] | None = None
) -> ExperimentSpec:
    """Validate a spec given as a dict (after applying overrides)."""
    if not isinstance(data, dict):
        raise SpecError(f"{source}: expected a mapping at the top level, got {type(data).__name__}")
    data = fill_from_recipe(apply_overrides(data, overrides or [], source))
    try:
        spec = validate_strict(ExperimentSpec, data)
    except ValidationError as exc:
        problems = "\n".join(f"  {line}" for line in validation_problems(exc))
        raise SpecError(f"{source}: invalid experiment spec\n{problems}") from None
    metric = spec.eval.select_metric
    if metric is not None:
        fmt = get_format(spec.dataset.format)
        names = list(fmt.metric_names(spec.dataset.categories))
        names += [f"{p}.{n}" for p in spec.dataset.also_protocols for n in names]
        if metric not in names:
            message = unknown_name_message(f"{fmt.title} metric", metric, names)
            raise SpecError(f"{source}: eval.select_metric: {message}")
    return spec


def load_spec(path: str | Path, overrides: list[str] | None = None) -> ExperimentSpec:
    """Read and validate a YAML experiment spec."""
    path = Path(path)
    if not path.is_file():
        raise SpecError(f"{path}: spec file not found")
    return parse_spec(read_yaml(path), source=str(path), overrides=overrides)
