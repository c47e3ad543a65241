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
from bench.config.train import LoopOverrides
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
    #: ``generate``: build the set (the pipeline, cached); ``released``: read the SPN
    #: authors' released files as they are (``cap.extend_<name>.train.json`` in FashionIQ's
    #: captions/, ``cap.rc2.train.extend_<name>.json`` in CIRR's; ``name``: clip, tgcir,
    #: blip, blip2), no captioning or matching (the other fields below are not used)
    source: Literal["generate", "released"] = "generate"
    captioner: Literal["oracle", "file", "hf"] = "oracle"
    captioner_options: dict[str, Any] = Field(default_factory=dict)
    dedup_threshold: float | None = Field(default=None, ge=-1.0, le=1.0)
    backbone: MatchingBackbone = Field(default_factory=MatchingBackbone)
    mode: Literal["window", "random"] = "window"
    rank_lo: int | float = Field(
        default=1, gt=0, description="a rank, or a share of the pool in (0, 1) (scaled windows)"
    )
    rank_hi: int | float | None = Field(
        default=None, gt=0, description="a rank or a share of the pool; null: to the end"
    )
    k: int = Field(default=1, ge=1, description="targets per reference")
    K: int | float | None = Field(
        default=None,
        gt=0,
        description="cap on the total: a count, or a share of the pairs in (0, 1]; null: no cap",
    )
    only_train_references: bool = False
    templates: tuple[str, ...] = Field(default=("instead", "unlike"), validate_default=True)
    seed: int = 0
    pool: str = Field(default="train", description="train | pool | a folder of images")
    categories: tuple[Literal["dress", "shirt", "toptee"], ...] | None = None
    merge_categories: bool = Field(
        default=False,
        description="rank and pair the images of every category in one pool (the reference "
        "does for FashionIQ); a triplet takes its reference's category",
    )
    max_text_tokens: int | None = Field(
        default=None,
        ge=3,
        description="a modification text longer than this many CLIP tokens falls back to the "
        "target caption (the reference: 77, clip.tokenize's limit)",
    )
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
        for name, value in (("rank_lo", self.rank_lo), ("rank_hi", self.rank_hi), ("K", self.K)):
            if isinstance(value, float) and not 0 < value <= 1:
                raise ValueError(f"{name} {value}: a share of the pool is in (0, 1]")
        both_shares = isinstance(self.rank_lo, float) == isinstance(self.rank_hi, float)
        if self.rank_hi is not None and both_shares and self.rank_hi <= self.rank_lo:
            raise ValueError(f"rank window [{self.rank_lo}, {self.rank_hi}) is empty")
        if self.only_train_references and self.pool != "train":
            raise ValueError("only_train_references needs pool: train (human train references)")
        return self


class StageRecipe(LoopOverrides):
    """What a phase after stage 1 trains and how: the method phase whose query function it
    uses (``phase``: e.g. CLIP4CIR's ``finetune``, element-wise sum, instead of the
    Combiner; default: the method's last phase), the parameter groups it trains
    (``trains``; default: the stage's own rule), and the loop settings it overrides."""

    phase: str | None = None
    trains: tuple[str, ...] | None = None


class PositivesTrainSpec(StageRecipe):
    """How generated triplets (positive scaling, P) enter training, and P's continuation
    phase (every group trains by default; the method's own loss, or InfoNCE at ``tau``)."""

    epochs: int | None = Field(default=2, ge=0, description="epochs of the P continuation")
    mix_ratio: float | None = Field(
        default=1.0,
        gt=0,
        description="generated triplets per human triplet, a fresh sample each epoch; "
        "null: every generated triplet every epoch (the reference concatenates them once)",
    )
    tau: float | None = Field(
        default=None, gt=0, description="in-batch InfoNCE temperature; null: the method's loss"
    )


class NegativesSpec(StageRecipe):
    """Negative scaling (N): stage 2 against a static bank. Unset fields are completed from
    the method's recipe when the spec is read (``bench.config.bases.fill_from_recipe``).
    Only the query side trains (``trains`` narrows it, e.g. CLIP4CIR: its text encoder)."""

    LETTER: ClassVar[str] = "N"

    tau: float | None = Field(default=None, gt=0)
    learnable_tau: bool | None = None
    tau_parametrisation: Literal["tau", "log_inverse"] = Field(
        default="tau",
        description="a learnable tau is learned as tau itself (the reference) or as log(1/tau)",
    )
    neg_num: int | None = Field(default=None, gt=0, description="negatives sampled per query")
    half_bank: bool = False
    bank: Literal["triplets", "split"] = Field(
        default="triplets",
        description="triplets: every image of the training triplets (human + generated), "
        "as the reference; split: also the split files' other images (the reference's "
        "'unlabeled negatives' ablation)",
    )
    dedup: bool = Field(
        default=True, description="pixel-identical images are one bank row (the reference)"
    )


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
