"""BLIP4CIR as the SPN paper ran it (its "BLIP4CIR+Bi" rows): stage I of Candidate-Reranking-CIR.

Provenance. The SPN tables' "BLIP4CIR+Bi" rows (Feng et al., ACM MM 2024) name the WACV
2024 paper of Liu et al., "Bi-directional Training for Composed Image Retrieval via Text
Prompt Learning", but SPN4CIR's code (``blip4cir/blip_cir.py``, ``models.py``) is
"Modified for Candidate-Reranking CIR stage I" and its stage 2 starts from the stage-I
checkpoints of Candidate-Reranking-CIR (Liu et al., TMLR 2024; loaded from the key
``"BLIP_Retrieval"`` that code saves). That model (``src/blip_stage1.py``,
``src/stage1_train.py`` there), which this class implements on transformers' BLIP:

* reference = the BLIP ViT's output tokens of the reference image (B, 1 + patches, width);
* query = ``normalize(text_proj(h[ENC]))``, where h is the BLIP text encoder run on the
  modification text with its first token replaced by ``[ENC]``, cross-attending in every
  layer to the reference tokens;
* target = ``normalize(vision_proj(ViT [CLS] output))`` of the target image;
* loss = cross-entropy of ``query @ target.T / temp`` over the batch, ``temp`` BLIP's
  learnable ITC temperature (initialised from the checkpoint, 0.07 in BLIP);
* the image encoder is frozen (``--blip-img-tune`` off; ``train_image_encoder`` here);
  the text encoder (cross-attention included), ``text_proj`` and ``temp`` train.

Not this model: the Bi-BLIP4CIR code (Cuberick-Orion/Bi-Blip4CIR) is a *late-fusion*
model (BLIP unimodal text features + image features, element-wise sum, then a CLIP4Cir
Combiner) that adds a loss on reversed queries. Its reversed-direction objective is
available here as an option, ``reverse_loss_weight`` > 0 (default 0, because the
checkpoints behind the SPN rows were trained without it): a reversed query is the text
encoder cross-attending to the *target* image tokens, the text prefixed (after ``[ENC]``)
by a learnable reversal prompt embedding, and it must retrieve the *reference* image among
the batch's reference embeddings; loss = forward + weight * reversed. Bi-BLIP4CIR used
weight 0.4 (FashionIQ) and 0.1 (CIRR) in its stage I. Differences from its code, on
purpose: (1) there the direction markers are the strings " [FORWARD] " / " [BACKWARD] "
put before every "and"-chunk of the caption and tokenised into ordinary word pieces; here
one learned embedding marks the reversed direction and forward texts stay unmarked, so
the forward query (evaluation, SPN's stage 2) is exactly the stage-I query; (2) there the
reversed logits contrast the composed queries (T_j, reversed text_i) against the fixed
reference R_i, cheap for late fusion but B x B text-encoder passes with cross-attention;
here the reversed query (T_i, reversed text_i) is contrasted against the batch's
references R_j (InfoNCE in the other direction).

SPN stage 2 (the engine's bank phase) trains the query side only against the static bank
of target embeddings, reference tokens read from the feature cache, tau learnable
(SPN4CIR ``CIRPlus.tau``): batch 128, 10 epochs FashionIQ / 3 CIRR, lr 5e-6 / 6e-6, tau
0.03 / 0.02.
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from bench.backbones import Backbone, BackboneError
from bench.backbones.blip import BlipCIRModel
from methods.base import CachedArray, CIRMethod, MethodParams, Phase, TrainBatch
from methods.registry import register_method


class Blip4CirParams(MethodParams):
    reverse_loss_weight: float = Field(
        default=0.0,
        ge=0,
        description="weight of the reversed-query loss (Bi-BLIP4CIR); 0: off, as in the SPN runs",
    )
    train_image_encoder: bool = Field(
        default=False, description="also fine-tune the ViT in stage I (CR's --blip-img-tune)"
    )


TEXT_ONLY = Phase(
    "stage1",
    ("text_encoder",),
    "fine-tune the BLIP text encoder cross-attending to the frozen reference image tokens",
)
BOTH = Phase(
    "stage1", ("image_encoder", "text_encoder"), "fine-tune the BLIP image and text encoders"
)


@register_method("blip4cir_bi")
class Blip4CirBi(CIRMethod):
    """The SPN paper's "BLIP4CIR+Bi": Candidate-Reranking-CIR stage I (see the module
    docstring for the exact provenance and the optional bi-directional loss)."""

    Params = Blip4CirParams
    paper_name = "BLIP4CIR+Bi"
    phases = (TEXT_ONLY,)
    group_sides: ClassVar[dict[str, str]] = {"image_encoder": "image", "text_encoder": "query"}
    params: Blip4CirParams

    def __init__(self, backbone: Backbone, params: Blip4CirParams) -> None:
        super().__init__(backbone, params)
        if not isinstance(backbone.model, BlipCIRModel):
            raise BackboneError(
                f"{self.name} needs an hf-blip backbone (arch 'hf-blip:<name>'), "
                f"got {backbone.arch!r}"
            )
        self.blip = backbone.model
        self.pad_id = int(self.tokenizer.pad_id)
        self.enc_id = int(self.tokenizer.token_id("[ENC]"))
        text_config = self.blip.config.text_config
        if params.reverse_loss_weight > 0:
            if backbone.context_length + 1 > text_config.max_position_embeddings:
                raise BackboneError(
                    f"{backbone.arch}: no position left for the reversal prompt "
                    f"({backbone.context_length} + 1 > {text_config.max_position_embeddings})"
                )
            self.reverse_prompt = nn.Parameter(
                torch.randn(text_config.hidden_size) * text_config.initializer_range
            )
        else:
            self.reverse_prompt = None
        if params.train_image_encoder:
            self.phases = (BOTH,)
        self.active_phase = self.phases[-1].name

    # ------------------------------------------------------------------ encoders
    def cached_arrays(self) -> tuple[CachedArray, CachedArray]:
        vision = self.blip.config.vision_config
        tokens = 1 + (int(vision.image_size) // int(vision.patch_size)) ** 2
        dim = int(self.blip.config.image_text_hidden_size)
        return (
            CachedArray(
                "reference", "BLIP ViT tokens ([CLS] + patches)", (tokens, vision.hidden_size)
            ),
            CachedArray("target", "normalised ITC embedding of [CLS]", (dim,)),
        )

    def encode_reference(self, images: torch.Tensor) -> torch.Tensor:
        return self.blip.image_tokens(images)

    def encode_target(self, images: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.blip.image_embedding(self.blip.image_tokens(images)), dim=-1)

    def encode_images(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        tokens = self.blip.image_tokens(images)
        return tokens, F.normalize(self.blip.image_embedding(tokens), dim=-1)

    def _text_inputs(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Token ids cut to the batch's longest text (as ``padding='longest'``), ``[ENC]``
        first, and their attention mask."""
        mask = tokens != self.pad_id
        length = max(1, int(mask.sum(1).max()))
        ids = tokens[:, :length].clone()
        ids[:, 0] = self.enc_id
        return ids, mask[:, :length].long()

    def encode_query(self, reference: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        ids, mask = self._text_inputs(tokens)
        image = reference.to(self.blip.text_proj.weight.dtype)
        return F.normalize(self.blip.text_features(ids, mask, image), dim=-1)

    def encode_reversed_query(self, target: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Bi-directional training's reversed query: the text (with the reversal prompt after
        ``[ENC]``) cross-attending to the *target* image tokens; retrieves the reference."""
        if self.reverse_prompt is None:
            raise RuntimeError("reversed queries need reverse_loss_weight > 0")
        ids, mask = self._text_inputs(tokens)
        words = self.blip.text_encoder.embeddings.word_embeddings(ids)
        prompt = self.reverse_prompt.to(words.dtype).expand(ids.shape[0], 1, -1)
        embeds = torch.cat([words[:, :1], prompt, words[:, 1:]], dim=1)
        mask = torch.cat([mask[:, :1], torch.ones_like(mask[:, :1]), mask[:, 1:]], dim=1)
        image = target.to(self.blip.text_proj.weight.dtype)
        return F.normalize(self.blip.text_features(None, mask, image, inputs_embeds=embeds), dim=-1)

    # ------------------------------------------------------------------ training
    def training_loss(self, batch: TrainBatch) -> torch.Tensor:
        query = self.encode_query(batch.reference, batch.tokens)
        loss = self.loss(query.float(), batch.target.float())
        weight = self.params.reverse_loss_weight
        if weight > 0:
            reversed_query = self.encode_reversed_query(batch.target_reference, batch.tokens)
            loss = loss + weight * self.loss(reversed_query.float(), batch.reference_target.float())
        return loss

    def logit_scale(self) -> torch.Tensor:
        """1 / BLIP's ``temp`` (learnable, trained with the text side in stage I)."""
        return self.blip.logit_scale.exp()

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        image = [*self.blip.vision_model.parameters(), *self.blip.vision_proj.parameters()]
        text = [
            *self.blip.text_encoder.parameters(),
            *self.blip.text_proj.parameters(),
            self.blip.logit_scale,
        ]
        if self.reverse_prompt is not None:
            text.append(self.reverse_prompt)
        return {"image_encoder": image, "text_encoder": text}
