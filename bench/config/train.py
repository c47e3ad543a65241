"""Training settings: the ``train`` block of a spec and the per-phase overrides.

A phase (a method's stage-1 phase under ``train.phases.<name>``, P's continuation under
``spn.positives_train``, the bank stage under ``spn.negatives``) may override any loop
setting of ``train`` (:class:`LoopOverrides`); an unset field inherits it. The optimiser
is AdamW (``adam_betas``, ``adam_eps``; ``weight_decay`` on matrices only, or on every
parameter with ``decay: all`` as the SPN reference does), the schedule a linear warm-up
and cosine decay (or constant), gradients clipped to ``grad_clip`` (``off``: never), the
last partial batch dropped with ``drop_last``, the model in ``train`` or ``eval`` mode
(dropout, BatchNorm statistics) while it trains.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from bench.config.base import Strict

Mode = Literal["train", "eval"]
Decay = Literal["matrices", "all"]


class LoopOverrides(Strict):
    """Loop settings a phase may set; unset fields inherit ``train``."""

    epochs: int | None = Field(default=None, ge=0)
    batch_size: int | None = Field(default=None, gt=0)
    lr: float | None = Field(default=None, gt=0)
    weight_decay: float | None = Field(default=None, ge=0)
    adam_betas: tuple[float, float] | None = None
    adam_eps: float | None = Field(default=None, gt=0)
    decay: Decay | None = None
    grad_clip: float | Literal["off"] | None = Field(
        default=None, description="a max gradient norm, or 'off' (no clipping)"
    )
    drop_last: bool | None = None
    mode: Mode | None = None
    schedule: Literal["cosine", "constant"] | None = None
    warmup_ratio: float | None = Field(default=None, ge=0, lt=1)

    def overrides(self) -> dict[str, Any]:
        """The loop fields this block sets (``grad_clip: off`` as ``None``)."""
        out = {k: getattr(self, k) for k in LoopOverrides.model_fields}
        out = {k: v for k, v in out.items() if v is not None}
        if out.get("grad_clip") == "off":
            out["grad_clip"] = None
        return out


class PhaseSpec(LoopOverrides):
    """Training settings of one method phase (stage); unset fields inherit ``train``."""


class TrainSpec(Strict):
    epochs: int = Field(default=3, ge=0)
    batch_size: int = Field(default=64, gt=0)
    lr: float = Field(default=1e-4, gt=0)
    weight_decay: float = Field(default=0.01, ge=0)
    adam_betas: tuple[float, float] = (0.9, 0.999)
    adam_eps: float = Field(default=1e-8, gt=0)
    decay: Decay = Field(default="matrices", description="which parameters weight decay hits")
    warmup_ratio: float = Field(default=0.05, ge=0, lt=1)
    schedule: Literal["cosine", "constant"] = "cosine"
    grad_clip: float | None = Field(default=1.0, gt=0)
    drop_last: bool = False
    mode: Mode = "train"
    mixed_precision: bool = True
    num_workers: int = Field(
        default=0,
        ge=0,
        description="processes that decode and preprocess images (0: the machine's cores, "
        "1: the main process); changes no result, so it is not part of the spec digest",
    )
    save_best_checkpoint_artifact: bool = False
    phases: dict[str, PhaseSpec] = Field(default_factory=dict)

    def phase(self, name: str) -> TrainSpec:
        """The settings for phase ``name``: this spec with the phase's overrides applied."""
        override = self.phases.get(name)
        return self if override is None else self.with_overrides(override)

    def with_overrides(self, block: LoopOverrides, **forced: Any) -> TrainSpec:
        """This spec with a phase block's loop settings (and ``forced`` values) applied."""
        return self.model_copy(update={**block.overrides(), **forced})
