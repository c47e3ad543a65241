"""What every backbone family returns, and the one door in: :func:`load_backbone`.

An ``arch`` is ``"<family>:<name>"`` (``hf-blip:tiny``, ``hf-blip2:Salesforce/blip2-itm-vit-g``)
or a plain open_clip architecture name (``RN50x4``, ``ViT-B-16``, ``cirbench-tiny``). Each
family is one module of this package exposing ``load(name, pretrained, seed,
target_pad_ratio) -> Backbone``; it is imported on first use, so a CLIP run never imports
the BLIP stack.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from bench.core.errors import CirbenchError
from bench.images.transforms import TARGET_PAD_RATIO, TargetPadTransform


class BackboneError(CirbenchError):
    """A backbone cannot be built or its weights cannot be had."""


@dataclass
class Backbone:
    """A vision-language model (open_clip by default) with its tokenizer and the CIR
    preprocessing that goes with it."""

    arch: str
    weights: str
    model: Any  # open_clip.CLIP, BlipCIRModel, Blip2ForImageTextRetrieval
    tokenizer: Any
    transform: TargetPadTransform
    embed_dim: int
    context_length: int

    def tokenize(self, texts: list[str]) -> torch.Tensor:
        return self.tokenizer(texts)


#: family prefix -> module of this package that builds it (``load(...)``).
FAMILIES: dict[str, str] = {
    "hf-blip": "bench.backbones.blip",
    "hf-blip2": "bench.backbones.blip2",
}
#: The module of plain (open_clip) architecture names.
OPEN_CLIP_FAMILY = "bench.backbones.clip"


def split_family(arch: str) -> tuple[str | None, str]:
    """``"hf-blip:tiny"`` -> ``("hf-blip", "tiny")``; an open_clip name -> ``(None, arch)``."""
    family, sep, name = arch.partition(":")
    if sep and family in FAMILIES:
        return family, name
    return None, arch


def load_backbone(
    arch: str,
    pretrained: str | Path | None = None,
    *,
    seed: int = 0,
    target_pad_ratio: float | None = TARGET_PAD_RATIO,
) -> Backbone:
    """Build a backbone and its preprocessing; ``pretrained`` is what its family takes (a
    tag, a checkpoint file, ``random``/``None``); see each family module."""
    family, name = split_family(arch)
    module = importlib.import_module(FAMILIES[family] if family else OPEN_CLIP_FAMILY)
    return module.load(name, pretrained, seed, target_pad_ratio)
