"""CLIP4CIR (Baldrati et al., CVPR-W 2022 / TOMM 2023): CLIP encoders + Combiner.

Phase ``finetune`` (CLIP4Cir's first stage) fine-tunes both CLIP encoders with the query
``normalize(image_features + text_features)``; phase ``combiner`` (second stage) freezes
CLIP and trains the Combiner on its features:

    t' = Dropout(ReLU(Linear(d, p)(t)))      i' = Dropout(ReLU(Linear(d, p)(i)))
    c = concat(t', i')
    out = Linear(h, d)(Dropout(ReLU(Linear(2p, h)(c))))
    lambda = sigmoid(Linear(h, 1)(Dropout(ReLU(Linear(2p, h)(c)))))
    query = normalize(out + lambda * t + (1 - lambda) * i)

Both phases use the contrastive loss with logit scale 100, as CLIP4Cir does.
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from bench.backbones import Backbone
from methods.base import CachedArray, CIRMethod, MethodParams, Phase
from methods.registry import register_method


class Combiner(nn.Module):
    """CLIP4Cir's Combiner network (see the module docstring)."""

    def __init__(self, dim: int, projection_dim: int, hidden_dim: int, dropout: float) -> None:
        super().__init__()
        self.text_projection = nn.Linear(dim, projection_dim)
        self.image_projection = nn.Linear(dim, projection_dim)
        self.combiner_layer = nn.Linear(2 * projection_dim, hidden_dim)
        self.output_layer = nn.Linear(hidden_dim, dim)
        self.gate_hidden = nn.Linear(2 * projection_dim, hidden_dim)
        self.gate_output = nn.Linear(hidden_dim, 1)
        self.dropout = nn.Dropout(dropout)

    def forward(self, image: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        text_p = self.dropout(F.relu(self.text_projection(text)))
        image_p = self.dropout(F.relu(self.image_projection(image)))
        joint = torch.cat((text_p, image_p), dim=-1)
        out = self.output_layer(self.dropout(F.relu(self.combiner_layer(joint))))
        gate = torch.sigmoid(self.gate_output(self.dropout(F.relu(self.gate_hidden(joint)))))
        return F.normalize(out + gate * text + (1 - gate) * image, dim=-1)


class Clip4CirParams(MethodParams):
    use_combiner: bool = True
    projection_multiplier: int = Field(default=4, gt=0, description="p = multiplier * d")
    hidden_multiplier: int = Field(default=8, gt=0, description="h = multiplier * d")
    dropout: float = Field(default=0.5, ge=0, lt=1)
    logit_scale: float = Field(default=100.0, gt=0)


FINETUNE = Phase("finetune", ("image_encoder", "text_encoder"), "fine-tune CLIP with sum fusion")
COMBINER = Phase("combiner", ("combiner",), "train the Combiner on frozen CLIP features")


@register_method("clip4cir")
class Clip4Cir(CIRMethod):
    """CLIP4CIR: a CLIP model fine-tuned for CIR, then a Combiner on its frozen features."""

    Params = Clip4CirParams
    paper_name = "CLIP4CIR"
    phases = (FINETUNE, COMBINER)
    group_sides: ClassVar[dict[str, str]] = {
        "image_encoder": "image",
        "text_encoder": "query",
        "combiner": "query",
    }
    params: Clip4CirParams

    def __init__(self, backbone: Backbone, params: Clip4CirParams) -> None:
        super().__init__(backbone, params)
        self.clip = backbone.model
        self.clip.logit_scale.requires_grad_(False)  # CLIP4Cir uses a fixed scale of 100
        dim = backbone.embed_dim
        self.embed_dim = dim
        self.combiner = (
            Combiner(
                dim,
                params.projection_multiplier * dim,
                params.hidden_multiplier * dim,
                params.dropout,
            )
            if params.use_combiner
            else None
        )
        if self.combiner is None:
            self.phases = (FINETUNE,)
        self.active_phase = self.phases[-1].name

    def cached_arrays(self) -> tuple[CachedArray, CachedArray]:
        dim = (self.embed_dim,)
        return (
            CachedArray("reference", "CLIP image feature", dim),
            CachedArray("target", "normalised CLIP image feature", dim),
        )

    def encode_reference(self, images: torch.Tensor) -> torch.Tensor:
        return self.clip.encode_image(images)

    def encode_target(self, images: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.clip.encode_image(images), dim=-1)

    def encode_images(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.clip.encode_image(images)
        return features, F.normalize(features, dim=-1)

    def encode_query(self, reference: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        text = self.clip.encode_text(tokens)
        reference = reference.to(text.dtype)
        if self.active_phase == COMBINER.name and self.combiner is not None:
            return self.combiner(reference, text)
        return F.normalize(reference + text, dim=-1)

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        image = list(self.clip.visual.parameters())
        image_ids = {id(p) for p in image}
        text = [
            p
            for name, p in self.clip.named_parameters()
            if id(p) not in image_ids and name != "logit_scale"
        ]
        groups = {"image_encoder": image, "text_encoder": text}
        if self.combiner is not None:
            groups["combiner"] = list(self.combiner.parameters())
        return groups

    def logit_scale(self) -> float:
        return self.params.logit_scale
