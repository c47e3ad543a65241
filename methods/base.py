"""The interface every CIR method implements, so the engine can train any of them.

A method is a small ``torch.nn.Module`` with three encoders:

* ``encode_reference(images)``: image -> reference representation (any shape per item:
  one vector for CLIP4CIR, a token sequence for TG-CIR or BLIP-2 methods);
* ``encode_target(images)``: image -> L2-normalised target vector, or a *set* of them
  (``(T, D)`` per image, e.g. SPRC's query tokens) scored by the best one
  (:func:`target_scores`: a query's score against a target is its maximum dot product
  over the target's vectors; the bank, the galleries and the metrics take both shapes);
* ``encode_query(reference, tokens)``: (reference representation, text) -> L2-normalised
  query vector.

Its parameters are split into named groups, and each group belongs to the query side
or the target side. A method trains in one or more *phases* (CLIP4CIR: fine-tune the
encoders, then train the Combiner); each phase names the groups it trains. When a phase
trains no image-side group, the engine computes image representations once and caches
them; this is also what the SPN negative-scaling stage relies on.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from bench.backbones import Backbone
from bench.config import Strict
from bench.core.hashing import tensor_fingerprint

#: Parameter groups whose outputs depend on images only (the reference and target encoders).
IMAGE_SIDE = "image"


def target_scores(query: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``(B, N)`` scores of queries ``(B, D)`` against targets ``(N, D)`` (dot products) or
    target sets ``(N, T, D)`` (the maximum dot product over each set's vectors)."""
    if targets.ndim == 2:
        return query @ targets.t()
    return torch.einsum("bd,ntd->bnt", query, targets.to(query.dtype)).amax(dim=-1)


@dataclass
class TrainBatch:
    """One in-batch training step's inputs, as the engine hands them to a method.

    ``reference`` / ``target`` are the batch's reference representations and target
    vectors; ``target_reference`` (the target images' reference representations) and
    ``reference_target`` (the reference images' target vectors) serve objectives that
    also run the other way (BLIP4CIR+Bi's reversed queries) or compare the two images.
    """

    reference: torch.Tensor
    target: torch.Tensor
    target_reference: torch.Tensor
    reference_target: torch.Tensor
    tokens: torch.Tensor
    texts: list[str]


@dataclass(frozen=True)
class CachedArray:
    """One array a method's frozen image side is cached as (a bank, a reference cache):
    what it holds and the shape of one image's entry."""

    role: str  #: "reference" (what ``encode_query`` reads) or "target" (bank, gallery)
    holds: str
    shape: tuple[int, ...]

    def item_bytes(self, itemsize: int = 4) -> int:
        """Bytes of one image's entry at ``itemsize`` bytes a value (float32: 4)."""
        count = 1
        for n in self.shape:
            count *= int(n)
        return count * itemsize


@dataclass(frozen=True)
class Phase:
    """One training phase of a method: its name, the parameter groups it trains, and what
    it is for. ``image_frozen`` is true when no image-side group trains (features cacheable)."""

    name: str
    trains: tuple[str, ...]
    description: str
    #: "in_batch": contrastive against the batch's targets; "bank": against the static
    #: bank of every training image's target vector (SPN negative scaling).
    objective: str = "in_batch"

    def image_frozen(self, method: CIRMethod) -> bool:
        return not any(method.group_side(g) == IMAGE_SIDE for g in self.trains)


class MethodParams(Strict):
    """Base of a method's hyperparameters (validated from ``method.params`` of a spec)."""


class CIRMethod(nn.Module, ABC):
    """Base class of registered CIR methods (see the module docstring)."""

    #: Registry name, set by ``@register_method``.
    name: ClassVar[str] = ""
    #: The method's name in the SPN paper's tables (``spn_tables.csv``), e.g. "CLIP4CIR".
    paper_name: ClassVar[str] = ""
    #: Hyperparameter model of the method.
    Params: ClassVar[type[MethodParams]] = MethodParams
    #: The phases, in training order.
    phases: ClassVar[tuple[Phase, ...]] = ()
    #: group name -> "image" (reference/target encoders) or "query" (text side, fusion).
    group_sides: ClassVar[dict[str, str]] = {}

    def __init__(self, backbone: Backbone, params: MethodParams) -> None:
        super().__init__()
        self.backbone_info = {"arch": backbone.arch, "weights": backbone.weights}
        self.params = params
        self.tokenizer = backbone.tokenizer
        self.transform = backbone.transform
        self.active_phase = self.phases[-1].name if self.phases else ""

    # ------------------------------------------------------------------ encoders
    @abstractmethod
    def encode_reference(self, images: torch.Tensor) -> torch.Tensor:
        """Images (B, 3, H, W) -> reference representations (B, ...)."""

    @abstractmethod
    def encode_target(self, images: torch.Tensor) -> torch.Tensor:
        """Images (B, 3, H, W) -> L2-normalised target vectors (B, D) or sets (B, T, D)."""

    @abstractmethod
    def encode_query(self, reference: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Reference representations and token ids -> L2-normalised query vectors (B, D)."""

    @abstractmethod
    def cached_arrays(self) -> tuple[CachedArray, CachedArray]:
        """What a frozen image side is cached as, per image: the reference representation
        (what :meth:`encode_query` reads) and the target (the bank's and the gallery's
        rows), with their shapes from the model's configuration (the engine sizes caches
        with them before any image is encoded)."""

    def query_state_array(self) -> CachedArray | None:
        """What the bank stage caches per (reference image, query text) instead of the
        reference representations, or ``None`` (default: it reads the reference cache).
        A method whose ``encode_query`` starts with a part that depends only on the image
        side (frozen in the bank stage) declares it here (SPRC: the fused Q-Former states)
        and implements :meth:`query_state` and :meth:`encode_query_from_state`."""
        return None

    def query_state(self, reference: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """The frozen first part of :meth:`encode_query` (see :meth:`query_state_array`)."""
        raise NotImplementedError(f"{self.name} declares no query state")

    def encode_query_from_state(self, state: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """:meth:`encode_query` from a cached :meth:`query_state` of the same text."""
        raise NotImplementedError(f"{self.name} declares no query state")

    def encode_images(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Reference representations and target vectors of the same images (one pass when
        a method can share the work)."""
        return self.encode_reference(images), self.encode_target(images)

    def tokenize(self, texts: list[str]) -> torch.Tensor:
        return self.tokenizer(texts)

    # ------------------------------------------------------------------ training hooks
    @abstractmethod
    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """Named parameter groups; every trainable parameter is in exactly one group."""

    def loss(self, query: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """In-batch contrastive loss of queries against the batch's targets."""
        logits = self.logit_scale() * target_scores(query, target)
        labels = torch.arange(query.shape[0], device=query.device)
        return nn.functional.cross_entropy(logits, labels)

    def training_loss(self, batch: TrainBatch) -> torch.Tensor:
        """The loss of one in-batch step (default: the query against the batch's targets).
        Methods with extra terms (reverse queries, alignment losses) override this; the SPN
        bank stage does not call it, it uses ``encode_query`` and the bank objective."""
        query = self.encode_query(batch.reference, batch.tokens)
        return self.loss(query.float(), batch.target.float())

    def logit_scale(self) -> float | torch.Tensor:
        """Multiplier of cosine similarities in the training loss (1 / temperature)."""
        return 100.0

    def begin_continuation(self, phase: Phase) -> None:
        """Called once when a phase after stage 1 (the SPN stages) starts from the stage-1
        weights, before its optimiser is built (e.g. TG-CIR copies its image-side token
        heads into the text side, as SPN's stage 2 does). Default: nothing."""

    def set_phase(self, name: str) -> None:
        """Switch behaviour to phase ``name`` (e.g. which fusion ``encode_query`` uses)."""
        if name not in {p.name for p in self.phases}:
            raise ValueError(f"{self.name} has no phase {name!r}")
        self.active_phase = name

    # ------------------------------------------------------------------ derived helpers
    def group_side(self, group: str) -> str:
        return self.group_sides[group]

    def side_parameters(self, side: str) -> Iterator[nn.Parameter]:
        for group, params in self.parameter_groups().items():
            if self.group_side(group) == side:
                yield from params

    def query_parameters(self) -> Iterator[nn.Parameter]:
        """Parameters of the query side (text encoder, fusion)."""
        return self.side_parameters("query")

    def target_parameters(self) -> Iterator[nn.Parameter]:
        """Parameters of the image side (reference and target encoders)."""
        return self.side_parameters(IMAGE_SIDE)

    def image_fingerprint(self) -> str:
        """Hash of the image-side weights (keys cached image features)."""

        return tensor_fingerprint(self.target_parameters())

    def describe(self) -> dict[str, Any]:
        groups = self.parameter_groups()
        return {
            "name": self.name,
            "phases": [p.name for p in self.phases],
            "groups": {g: sum(p.numel() for p in ps) for g, ps in groups.items()},
        }
