"""SPRC (Bai et al., ICLR 2024, "Sentence-level Prompts Benefit Composed Image Retrieval").

BLIP-2's Q-Former composes the query; written after ``Blip2QformerCirAlignPrompt`` of
the public code (chunmeifeng/SPRC ``src/lavis/models/blip2_models/
blip2_qformer_cir_align_prompt.py`` and its ``Qformer.py``; the SPN authors' copy in
BUAADreamer/SPN4CIR ``blip24cir`` adds the stage-2 query copy), on transformers' BLIP-2
modules (:mod:`bench.backbones.blip2`). With ``R`` = ``ln_vision(ViT(reference))``:

* fusion pass: the Q-Former runs the ``n`` query tokens and the text together, the query
  tokens cross-attending to ``R`` (query feed-forward for them, text feed-forward for the
  text): ``F`` = the ``n`` fused query states;
* text pass: the Q-Former again, without the image, on ``[F; text]`` (every token through
  the text feed-forward, as SPRC's modified ``BertLayer`` does when no image is given);
  query = ``normalize(text_proj(state at position n))``, the text's [CLS];
* target: the query tokens cross-attend to the target's ``ln_vision(ViT(.))`` and
  ``normalize(vision_proj(.))`` gives ``n`` token vectors;
* sentence-level prompt: ``P`` learnable prompt tokens are inserted after the text's [CLS]
  (``[CLS]; P; text[1:]``, position embeddings over the whole sequence) and run without
  image; ``normalize(text_proj(state of [CLS]))`` is the prompt-text feature.

Losses (SPRC's ``forward``): ``loss_itc`` contrastive query -> target, ``loss_rtc``
contrastive prompt-text feature -> target (both with the learnable temperature ``temp``,
initialised 0.07), ``loss_align`` = MSE between the token-mean of ``F`` and the token-mean of
the (detached) prompt tokens. FashionIQ sums the three (``blip_fine_tune_2.py``,
``clip_finetune_fiq``); CIRR weights ``loss_rtc`` and ``loss_align`` by 0.4 (``--loss-rtc``,
``--loss-align``): ``rtc_weight`` / ``align_weight`` here, 0.4 in the CIRR block of
``experiments/methods/sprc.yaml``.

Representations for the engine and the SPN bank:

* reference = ``R``, the (frozen-ViT) image token states ``(1 + patches, vision width)``:
  the Q-Former's fusion needs the image tokens, so this is what makes ``encode_query``
  exact. (The SPN code banks 32 x 768 *fused* query states per triplet instead; they
  depend on the text, so they are not an image representation.)
* target = the ``n`` normalised token vectors ``normalize(vision_proj(.))`` of the query
  tokens after cross-attending to the target's ``ln_vision(ViT(.))``: a token set
  ``(n, projection width)``, 32 x 256 for BLIP-2, 16 x 64 for ``hf-blip2:tiny``. A query
  scores a target by the maximum over its tokens (SPRC's ``sim_t2q.max(-1)`` in
  ``loss_itc`` / ``loss_rtc`` and at retrieval; SPN's bank stage the same), through
  :func:`methods.base.target_scores`; the engine's galleries, bank and metrics take token
  sets as they are (exact scores, no per-image average).

Parameter groups: the EVA ViT is frozen (SPRC's ``freeze_vit``) and in no group (it is
part of :meth:`image_fingerprint`); ``qformer`` (image side: the shared Q-Former, its word
embeddings, query tokens, ``ln_vision``, ``vision_proj``); ``query_offset`` (query side, see
below); ``text_projection`` and ``prompt`` (prompt tokens, temperature), query side. Stage
1 (phase ``sprc``) trains ``qformer``, ``text_projection`` and ``prompt``.

SPN stage 2 for SPRC (``init_stage2`` / ``forward_stage2``) deep-copies the Q-Former into
``Qformer_query`` and ``text_proj`` into ``text_proj_q``, freezes everything else and uses the
copy for the text pass only. Here the text pass always runs with weights ``shared +
query_offset``; the offset is zero and untrained in stage 1 (so both passes share weights,
exactly as in SPRC), and the SPN bank stage trains only the query side: the offset (= the
copy) and the text projection, while the fusion pass and the target path stay frozen.
Differences: AdamW's weight decay pulls the offset towards 0 (the copy towards the shared
weights) rather than the copy towards 0; and the positives-only continuation (``P``, which
trains every group) trains the offset together with the shared weights.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import ClassVar

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn
from torch.func import functional_call

from bench.backbones import Backbone, BackboneError
from bench.backbones.blip2 import EXTRAS_ATTR
from bench.core.hashing import tensor_fingerprint
from methods.base import (
    IMAGE_SIDE,
    CachedArray,
    CIRMethod,
    MethodParams,
    Phase,
    TrainBatch,
    target_scores,
)
from methods.registry import register_method

#: Extras of a LAVIS checkpoint (see bench.backbones.lavis_keys) this method uses.
EXTRA_PROMPT = "prompt_tokens"
EXTRA_TEMP = "temp"
EXTRA_QUERY_COPY = "qformer_query."
EXTRA_TEXT_PROJ_COPY = "text_projection_query."
#: LAVIS's clamp of the BLIP-2 temperature (a guard; SPRC's fine-tuning lr never reaches it).
TEMP_RANGE = (0.001, 0.5)


def extras_state(
    extras: dict[str, torch.Tensor], own: dict[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """The LAVIS extras of a BLIP-2 checkpoint (:mod:`bench.backbones.lavis_keys`) as this
    method's keys, given its state dict ``own`` (``blip2.*`` already the checkpoint's):
    ``prompt_tokens``; ``temp`` -> ``temperature``; SPN's stage-2 query copy
    ``qformer_query.<k>`` -> ``query_offset.<k> = copy - blip2.<k>`` (its cross-attention,
    which the text pass never uses, dropped); ``text_projection_query.*`` (SPN's
    inference projects the query with it) -> ``blip2.text_projection.*``."""
    out: dict[str, torch.Tensor] = {}
    if EXTRA_PROMPT in extras:
        out["prompt_tokens"] = extras[EXTRA_PROMPT]
    if EXTRA_TEMP in extras:
        out["temperature"] = extras[EXTRA_TEMP].reshape(())
    copies = {
        k[len(EXTRA_QUERY_COPY) :]: v for k, v in extras.items() if k.startswith(EXTRA_QUERY_COPY)
    }
    if copies:
        offsets = [k.removeprefix("query_offset.") for k in own if k.startswith("query_offset.")]
        missing = sorted(set(offsets) - set(copies))
        if missing:
            raise ValueError(f"checkpoint has Qformer_query but not {missing[:5]}")
        for name in offsets:
            out[f"query_offset.{name}"] = copies[name] - own[f"blip2.{name}"]
    for key, value in extras.items():
        if key.startswith(EXTRA_TEXT_PROJ_COPY):
            out["blip2.text_projection." + key[len(EXTRA_TEXT_PROJ_COPY) :]] = value
    return out


class SprcParams(MethodParams):
    num_prompt_tokens: int | None = Field(
        default=None, gt=0, description="default: the number of query tokens (as SPRC)"
    )
    rtc_weight: float = Field(default=1.0, ge=0, description="weight of loss_rtc (CIRR: 0.4)")
    align_weight: float = Field(default=1.0, ge=0, description="weight of loss_align (CIRR: 0.4)")
    temperature: float = Field(default=0.07, gt=0, description="initial temp (a checkpoint's wins)")
    learnable_temperature: bool = True
    freeze_vit: bool = Field(default=True, description="SPRC freezes the ViT")


STAGE1 = Phase("sprc", ("qformer", "text_projection", "prompt"), "SPRC: Q-Former + prompts")


def contrastive_loss(
    features: torch.Tensor, targets: torch.Tensor, temp: torch.Tensor
) -> torch.Tensor:
    """Cross-entropy of the best-token scores ``max_t features . targets_t / temp`` against
    the diagonal (in-batch); ``targets``: ``(B, n, D)`` token sets (or ``(B, D)`` vectors)."""
    logits = target_scores(features, targets) / temp
    labels = torch.arange(features.shape[0], device=features.device)
    return F.cross_entropy(logits, labels)


def prompt_alignment_loss(fused: torch.Tensor, prompt: torch.Tensor) -> torch.Tensor:
    """SPRC's ``loss_align``: MSE between the token-means of the fused query states
    ``(B, n, H)`` and of the prompt tokens ``(1, P, H)``, the prompts detached."""
    target = prompt.detach().mean(1).expand(fused.shape[0], -1)
    return F.mse_loss(fused.mean(1), target)


def _zero_copy(module: nn.Module) -> nn.Module:
    out = copy.deepcopy(module)
    for p in out.parameters():
        p.requires_grad_(False)
        p.zero_()
    return out


@register_method("sprc")
class Sprc(CIRMethod):
    """SPRC on a transformers BLIP-2 retrieval model (see the module docstring)."""

    Params = SprcParams
    paper_name = "SPRC"
    phases = (STAGE1,)
    group_sides: ClassVar[dict[str, str]] = {
        "vision_encoder": IMAGE_SIDE,
        "qformer": IMAGE_SIDE,
        "query_offset": "query",
        "text_projection": "query",
        "prompt": "query",
    }
    params: SprcParams

    def __init__(self, backbone: Backbone, params: SprcParams) -> None:
        super().__init__(backbone, params)
        from transformers import Blip2ForImageTextRetrieval

        model = backbone.model
        if not isinstance(model, Blip2ForImageTextRetrieval):
            raise BackboneError(
                f"sprc needs a BLIP-2 backbone (arch 'hf-blip2:tiny' or 'hf-blip2:<HF id>'), "
                f"got {backbone.arch!r}"
            )
        self.blip2 = model
        config = model.config
        qcfg = config.qformer_config
        if not getattr(qcfg, "use_qformer_text_input", False):
            raise BackboneError(
                f"{backbone.arch}: the Q-Former has no text feed-forward layers "
                "(qformer_config.use_qformer_text_input is false); SPRC's text passes need them"
            )
        self.num_query = config.num_query_tokens
        num_prompt = params.num_prompt_tokens or self.num_query
        needed = backbone.context_length + max(num_prompt, self.num_query)
        if needed > qcfg.max_position_embeddings:
            raise BackboneError(
                f"{backbone.arch}: text length {backbone.context_length} + {num_prompt} prompt "
                f"tokens needs {needed} positions, the Q-Former has {qcfg.max_position_embeddings}"
            )
        self.pad_id = int(backbone.tokenizer.pad_id)
        self.prompt_tokens = nn.Parameter(
            torch.empty(1, num_prompt, qcfg.hidden_size).normal_(0.0, qcfg.initializer_range)
        )
        self.temperature = nn.Parameter(
            torch.tensor(float(params.temperature)), requires_grad=params.learnable_temperature
        )
        # the text pass's weights = shared Q-Former + offset (SPN's stage-2 query copy)
        qformer_offset = _zero_copy(model.qformer)
        for layer in qformer_offset.encoder.layer:  # the text pass never cross-attends
            if layer.has_cross_attention:
                del layer.crossattention
        self.query_offset = nn.ModuleDict(
            {"embeddings": _zero_copy(model.embeddings), "qformer": qformer_offset}
        )
        for p in self._vit_parameters():
            p.requires_grad_(not params.freeze_vit)
        if not params.freeze_vit:
            self.phases = (
                Phase("sprc", ("vision_encoder", *STAGE1.trains), "SPRC with a trainable ViT"),
            )
        self._apply_extras(getattr(model, EXTRAS_ATTR, None) or {}, backbone.arch)

    def _apply_extras(self, extras: dict[str, torch.Tensor], arch: str) -> None:
        """Prompt tokens, temperature and SPN's stage-2 copies from a LAVIS checkpoint."""
        own = self.state_dict()
        try:
            state = extras_state(extras, own)
        except ValueError as exc:
            raise BackboneError(f"{arch}: {exc}") from None
        for key, value in state.items():
            if value.shape != own[key].shape:
                raise BackboneError(
                    f"{arch}: checkpoint {key} {tuple(value.shape)} vs {tuple(own[key].shape)}"
                    + (" (method.params.num_prompt_tokens?)" if key == "prompt_tokens" else "")
                )
        self.load_state_dict(state, strict=False)

    # ------------------------------------------------------------------ building blocks
    def _vit_parameters(self) -> Iterator[nn.Parameter]:
        vision = self.blip2.vision_model
        yield from vision.embeddings.parameters()
        yield from vision.encoder.parameters()

    def train(self, mode: bool = True) -> Sprc:
        super().train(mode)
        if self.params.freeze_vit:  # LAVIS: visual_encoder.train = disabled_train
            self.blip2.vision_model.embeddings.eval()
            self.blip2.vision_model.encoder.eval()
        return self

    def temp(self) -> torch.Tensor:
        return self.temperature.clamp(*TEMP_RANGE)

    def logit_scale(self) -> torch.Tensor:
        return 1.0 / self.temp()

    def image_embeds(self, images: torch.Tensor) -> torch.Tensor:
        """``ln_vision(ViT(images))``: (B, 1 + patches, vision width); no ViT gradient when
        it is frozen (``ln_vision`` trains)."""
        vision = self.blip2.vision_model
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.params.freeze_vit):
            states = vision.encoder(inputs_embeds=vision.embeddings(images)).last_hidden_state
        return vision.post_layernorm(states)

    def target_tokens(self, embeds: torch.Tensor) -> torch.Tensor:
        """The Q-Former's image path: (B, n, projection width) normalised token vectors."""
        queries = self.blip2.query_tokens.expand(embeds.shape[0], -1, -1)
        states = self.blip2.qformer(query_embeds=queries, encoder_hidden_states=embeds)
        return F.normalize(self.blip2.vision_projection(states.last_hidden_state), dim=-1)

    def trim(self, tokens: torch.Tensor) -> torch.Tensor:
        """Drop the padding columns at the right end of a batch (every text is padded to the
        context length; masked positions change no other token's state, so this only saves
        compute)."""
        used = (tokens != self.pad_id).any(0).nonzero()
        return tokens[:, : int(used.max()) + 1] if len(used) else tokens[:, :1]

    def _masks(self, tokens: torch.Tensor, prefix: int) -> torch.Tensor:
        ones = torch.ones(tokens.shape[0], prefix, dtype=torch.long, device=tokens.device)
        return torch.cat([ones, (tokens != self.pad_id).long()], dim=1)

    def fuse(self, reference: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Fusion pass: the ``n`` query states after attending to the text and ``reference``."""
        queries = self.blip2.query_tokens.expand(tokens.shape[0], -1, -1)
        embeds = self.blip2.embeddings(input_ids=tokens, query_embeds=queries)
        out = self.blip2.qformer(
            query_embeds=embeds,
            query_length=self.num_query,
            attention_mask=self._masks(tokens, self.num_query),
            encoder_hidden_states=reference.to(embeds.dtype),
        )
        return out.last_hidden_state[:, : self.num_query]

    def _text_pass_weights(self) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        embeddings = dict(self.blip2.embeddings.named_parameters())
        qformer = dict(self.blip2.qformer.named_parameters())
        offsets = self.query_offset
        return (
            {n: embeddings[n] + p for n, p in offsets["embeddings"].named_parameters()},
            {n: qformer[n] + p for n, p in offsets["qformer"].named_parameters()},
        )

    def query_features(self, fused: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Text pass over ``[fused; text]`` (no image; weights shared + offset) ->
        ``normalize(text_proj(state of the text's [CLS]))``."""
        emb_weights, qformer_weights = self._text_pass_weights()
        embeds = functional_call(
            self.blip2.embeddings, emb_weights, (tokens,), {"query_embeds": fused}
        )
        out = functional_call(
            self.blip2.qformer,
            qformer_weights,
            (),
            {
                "query_embeds": embeds,
                "query_length": 0,
                "attention_mask": self._masks(tokens, fused.shape[1]),
            },
        )
        cls = out.last_hidden_state[:, fused.shape[1]]
        return F.normalize(self.blip2.text_projection(cls), dim=-1)

    def prompt_sequence(self, tokens: torch.Tensor) -> torch.Tensor:
        """``[CLS]; prompt tokens; text[1:]`` plus position embeddings over the whole
        sequence (SPRC's ``BertEmbeddings`` with ``no_img=True``)."""
        embeddings = self.blip2.embeddings
        words = embeddings.word_embeddings(tokens)
        prompt = self.prompt_tokens.expand(tokens.shape[0], -1, -1).to(words.dtype)
        sequence = torch.cat([words[:, :1], prompt, words[:, 1:]], dim=1)
        positions = torch.arange(sequence.shape[1], device=tokens.device)
        return sequence + embeddings.position_embeddings(positions)[None]

    def prompt_features(self, tokens: torch.Tensor) -> torch.Tensor:
        """The prompt-text feature: ``normalize(text_proj(state of [CLS]))`` of the
        prompt sequence, run through the Q-Former without image."""
        mask = self._masks(tokens[:, 1:], 1 + self.prompt_tokens.shape[1])
        out = self.blip2.qformer(
            query_embeds=self.prompt_sequence(tokens), query_length=0, attention_mask=mask
        )
        return F.normalize(self.blip2.text_projection(out.last_hidden_state[:, 0]), dim=-1)

    # ------------------------------------------------------------------ encoders
    def cached_arrays(self) -> tuple[CachedArray, CachedArray]:
        config = self.blip2.config
        vision = config.vision_config
        tokens = 1 + (int(vision.image_size) // int(vision.patch_size)) ** 2
        width = int(self.blip2.vision_projection.out_features)
        return (
            CachedArray("reference", "ln_vision(ViT) tokens", (tokens, int(vision.hidden_size))),
            CachedArray("target", "Q-Former query token vectors", (self.num_query, width)),
        )

    def query_state_array(self) -> CachedArray:
        """The fused query states ``F`` (SPN's ``refer_bank``, 32 x 768 for BLIP-2): the
        fusion pass reads only frozen weights in the bank stage."""
        hidden = int(self.blip2.config.qformer_config.hidden_size)
        return CachedArray("query state", "fused Q-Former query states", (self.num_query, hidden))

    def query_state(self, reference: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        return self.fuse(reference, self.trim(tokens))

    def encode_query_from_state(self, state: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        return self.query_features(state.to(self.prompt_tokens.dtype), self.trim(tokens))

    def encode_reference(self, images: torch.Tensor) -> torch.Tensor:
        return self.image_embeds(images)

    def encode_target(self, images: torch.Tensor) -> torch.Tensor:
        return self.target_tokens(self.image_embeds(images))

    def encode_images(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        embeds = self.image_embeds(images)
        return embeds, self.target_tokens(embeds)

    def encode_query(self, reference: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        tokens = self.trim(tokens)
        return self.query_features(self.fuse(reference, tokens), tokens)

    # ------------------------------------------------------------------ training
    def loss_terms(self, batch: TrainBatch) -> dict[str, torch.Tensor]:
        """SPRC's three losses of one batch: ``itc``, ``rtc``, ``align`` (unweighted)."""
        tokens = self.trim(batch.tokens)
        fused = self.fuse(batch.reference, tokens)
        query = self.query_features(fused, tokens).float()
        target = batch.target.float()
        temp = self.temp()
        prompt_text = self.prompt_features(tokens).float()
        return {
            "itc": contrastive_loss(query, target, temp),
            "rtc": contrastive_loss(prompt_text, target, temp),
            "align": prompt_alignment_loss(fused.float(), self.prompt_tokens.float()),
        }

    def training_loss(self, batch: TrainBatch) -> torch.Tensor:
        terms = self.loss_terms(batch)
        return (
            terms["itc"]
            + self.params.rtc_weight * terms["rtc"]
            + self.params.align_weight * terms["align"]
        )

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        model = self.blip2
        groups: dict[str, list[nn.Parameter]] = {}
        if not self.params.freeze_vit:
            groups["vision_encoder"] = list(self._vit_parameters())
        groups["qformer"] = [
            *model.qformer.parameters(),
            *model.embeddings.parameters(),
            model.query_tokens,
            *model.vision_model.post_layernorm.parameters(),
            *model.vision_projection.parameters(),
        ]
        groups["query_offset"] = list(self.query_offset.parameters())
        groups["text_projection"] = list(model.text_projection.parameters())
        groups["prompt"] = [self.prompt_tokens]
        if self.params.learnable_temperature:
            groups["prompt"].append(self.temperature)
        return groups

    def image_fingerprint(self) -> str:
        """Hash of every weight the image representations depend on, the frozen ViT too."""

        vit = list(self._vit_parameters()) if self.params.freeze_vit else []
        return tensor_fingerprint([*vit, *self.target_parameters()])
