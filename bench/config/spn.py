"""The ``spn`` block of a spec: the SPN modifiers, every field typed.

* ``positives`` (:class:`PositivesSpec`): where generated triplets come from (positive
  scaling, P): captioner, pool, de-duplication, matching window, templates, cap ``K``;
* ``positives_train`` (:class:`PositivesTrainSpec`): how they enter training (the mix
  ratio) and the settings of P's continuation phase;
* ``negatives`` (:class:`NegativesSpec`): the bank stage (negative scaling, N);
* ``zero_shot``: stage 1 trains on generated triplets only; ``control``: P-control, P's
  continuation on human triplets only.

Which composition a block names is :func:`bench.spn.compositions.composition_of`.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from bench.config.base import Strict
from bench.formats.generated import check_set_name
from bench.spn.compositions import Composition, composition_of
from bench.spn.positives.templates import resolve_template


class MatchingBackbone(Strict):
    """The image encoder that ranks pool images (SPN used Unicom ViT-L/14).

    ``pretrained``: as ``bench.backbones.load_backbone`` takes it (open_clip tag, checkpoint
    path, ``random``), or ``synthetic``: the pre-trained backbone of the synthetic
    benchmark the dataset belongs to."""

    arch: str = "cirbench-tiny"
    pretrained: str | None = "synthetic"
    target_pad_ratio: float | None = Field(default=1.25, gt=1.0)


class PositivesSpec(Strict):
    """Everything that determines a generated set (see :mod:`bench.spn.positives.pipeline`)."""

    #: The modifier this block switches on (its letter in composition names).
    LETTER: ClassVar[str] = "P"

    name: str = Field(default="generated", description="files: cap.extend_<name>...")
    captioner: Literal["oracle", "file", "hf"] = "oracle"
    captioner_options: dict[str, Any] = Field(default_factory=dict)
    dedup_threshold: float | None = Field(default=None, ge=-1.0, le=1.0)
    backbone: MatchingBackbone = Field(default_factory=MatchingBackbone)
    mode: Literal["window", "random"] = "window"
    rank_lo: int = Field(default=1, ge=1)
    rank_hi: int | None = Field(default=None, ge=2, description="null: to the end of the ranking")
    k: int = Field(default=1, ge=1, description="targets per reference")
    K: int | None = Field(default=None, ge=1, description="cap on the total; null: no cap")
    only_train_references: bool = False
    templates: tuple[str, ...] = Field(default=("instead", "unlike"), validate_default=True)
    seed: int = 0
    pool: str = Field(default="train", description="train | pool | a folder of images")
    categories: tuple[Literal["dress", "shirt", "toptee"], ...] | None = None
    embed_batch_size: int = Field(default=128, ge=1)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return check_set_name(value)

    @field_validator("templates")
    @classmethod
    def _templates(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("at least one template is needed")
        return tuple(resolve_template(t) for t in value)

    @model_validator(mode="after")
    def _consistent(self) -> PositivesSpec:
        if self.rank_hi is not None and self.rank_hi <= self.rank_lo:
            raise ValueError(f"rank window [{self.rank_lo}, {self.rank_hi}) is empty")
        if self.only_train_references and self.pool != "train":
            raise ValueError("only_train_references needs pool: train (human train references)")
        return self


class PositivesTrainSpec(Strict):
    """How generated triplets (positive scaling, P) enter training, and P's continuation."""

    epochs: int = Field(default=2, ge=0, description="epochs of the P continuation")
    lr: float | None = Field(default=None, gt=0, description="default: train.lr")
    batch_size: int | None = Field(default=None, gt=0, description="default: train.batch_size")
    mix_ratio: float | None = Field(
        default=1.0, gt=0, description="generated triplets per human triplet per epoch; null: all"
    )


class NegativesSpec(Strict):
    """Negative scaling (N): stage 2 against a static bank; unset fields take the method's
    paper defaults (``CIRMethod.spn_defaults``)."""

    LETTER: ClassVar[str] = "N"

    epochs: int | None = Field(default=None, ge=0)
    batch_size: int | None = Field(default=None, gt=0)
    lr: float | None = Field(default=None, gt=0)
    tau: float | None = Field(default=None, gt=0)
    learnable_tau: bool | None = None
    neg_num: int | None = Field(default=None, gt=0, description="negatives sampled per query")
    half_bank: bool = False


class SPNSpec(Strict):
    """The SPN modifiers (see the module docstring)."""

    positives: PositivesSpec | None = None
    positives_train: PositivesTrainSpec = Field(default_factory=PositivesTrainSpec)
    negatives: NegativesSpec | None = None
    zero_shot: bool = False
    control: bool = Field(
        default=False,
        description="P-control: P's continuation phase on human triplets only (no positives)",
    )

    @model_validator(mode="after")
    def _consistent(self) -> SPNSpec:
        if self.zero_shot and self.positives is None:
            raise ValueError("spn.zero_shot needs spn.positives (the generated triplets)")
        if self.control and (self.positives is not None or self.negatives is not None):
            raise ValueError(
                "spn.control (P-control: the continuation on human triplets only) takes "
                "neither spn.positives nor spn.negatives"
            )
        return self

    @property
    def composition(self) -> Composition:
        """The composition this block names (:func:`bench.spn.compositions.composition_of`)."""
        return composition_of(self)
