"""TG-CIR (Wen et al., ACM MM 2023) as the SPN authors run it: token-level gated fusion.

Both modalities become 12 tokens of width ``D`` (the CLIP embedding width; 512 for ViT-B/16):

* image: 4 *global* tokens = the pooled CLIP image feature times 4 learned channel masks
  (ReLU'd; mask ``i`` starts at 1 on the ``i``-th quarter of the channels, 0.1 elsewhere)
  and 8 *local* tokens = the ViT's output tokens (the class token and every patch token,
  before ``ln_post``) projected ``width -> D`` and pooled by 8 learned spatial attentions
  (a 1x1 Conv1d to one sigmoid weight per token; token ``s`` = mean over tokens of
  ``w_s * x``, i.e. divided by the token count, as the reference code does);
* text: the same from the CLIP text transformer: the pooled (EOT, projected) text feature
  times 4 masks, and the ``ln_final`` outputs of all context positions (padding included,
  as in the reference code) projected ``width -> D`` and pooled by 8 attentions.

Query: per token a gate ``g = sigmoid(MLP([ref_tokens, text_tokens]))`` (``Linear(2D, D),
ReLU, Linear(D, 1), Sigmoid``), ``fused = g * ref + (1 - g) * text``, mean over the tokens,
L2-normalised. Target: the mean of the image tokens, L2-normalised. The reference
representation is the (B, 12, D) image token tensor, so the SPN bank caches tokens and
stage 2 trains only the text side and the gate.

Faithfulness to the public code (BUAADreamer/SPN4CIR ``tgcir/models.py`` and
iLearn-Lab/MM23-TG-CIR ``model.py``):

* The architecture above is SPN's ``CIRPlus`` (their stage-2 model), which keeps separate
  text copies of the masks and the token learner. The original TG-CIR shares one set of
  masks / token learner between image and text; SPN deep-copies them into the text side
  when stage 2 starts (from then on the text tower, the text heads and the gate train; the
  image tower and the image heads are frozen, exactly this module's image / query sides).
  Here too (``share_token_heads``, default on): in stage 1 the text tokens use the image
  heads' masks and token learner (the text side keeps its own projection, as SPN's
  ``text_fc``); :meth:`TgCir.begin_continuation` copies them into the text heads when an
  SPN stage starts, so the bank stage trains the text copies with the image side frozen.
* ``loss: infonce`` (default) is the one InfoNCE loss of the SPN variant: the query
  against the batch's targets, scaled by a learnable logit scale initialised at 10
  (TG-CIR's ``loss_T``). ``loss: original`` adds the original TG-CIR's teacher branch
  and its extra terms, with its default weights: the teacher (target-guided) fusion
  ``t = g_remain([ref, tgt]) * ref + g_replace([text, tgt]) * text`` on detached ref / text
  tokens and its InfoNCE over flattened, per-token weighted unit tokens (lambda 1), the
  remain + replace = 1 constraint (eta 1), the token orthogonality regulariser
  (mu 0.1), the student-teacher gate distillation (nu 10) and the KL distillation at
  temperature 0.1 (kappa 0.5; its target distribution is the teacher's target-to-target
  similarity, detached, as the code computes it). The SPN authors took their stage-1
  checkpoints from the original code, so the ``real`` profile uses ``loss: original``.
* The original trains the CLIP parameters at lr 1e-5 and the heads at 1e-4 (step decay);
  the engine has one learning rate per phase (see ``experiments/methods/tgcir.yaml``).
* Preprocessing: TG-CIR and SPN's copy use CLIP's own resize / center-crop (the ``real``
  profile sets ``target_pad_ratio: null``); the ``synthetic`` profile keeps TargetPad, as
  CLIP4CIR's does, so the two compare on the same pixels.
"""

from __future__ import annotations

import copy
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from bench.backbones import Backbone, BackboneError
from methods.base import CachedArray, CIRMethod, MethodParams, Phase, TrainBatch
from methods.registry import register_method


def channel_mask_init(num_masks: int, dim: int, low: float = 0.1) -> torch.Tensor:
    """(num_masks, dim) initial masks: mask ``i`` is 1 on channels ``[i*w, (i+1)*w)`` with
    ``w = dim // num_masks`` and ``low`` elsewhere (TG-CIR's initialisation)."""
    masks = torch.full((num_masks, dim), low)
    width = dim // num_masks
    for i in range(num_masks):
        masks[i, i * width : (i + 1) * width] = 1.0
    return masks


class TokenLearner(nn.Module):
    """``num_tokens`` learned spatial attentions over a token sequence (TG-CIR's TokenLearner).

    Attention ``s`` is a 1x1 Conv1d ``dim -> 1`` (stored together as one ``Linear(dim, S)``)
    followed by a sigmoid, giving a weight ``w_sl`` per input token ``x_l``; output token
    ``s`` is ``mean_l(w_sl * x_l)``.
    """

    def __init__(self, dim: int, num_tokens: int) -> None:
        super().__init__()
        self.attention = nn.Linear(dim, num_tokens)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        weights = torch.sigmoid(self.attention(tokens))  # (B, L, S)
        return torch.einsum("bls,bld->bsd", weights, tokens) / tokens.shape[1]


class TokenHeads(nn.Module):
    """One modality's 12 tokens: pooled feature x ReLU'd channel masks (global), projected
    sequence pooled by the token learner (local)."""

    def __init__(self, width: int, dim: int, num_global: int, num_local: int) -> None:
        super().__init__()
        self.masks = nn.Parameter(channel_mask_init(num_global, dim))
        self.projection = nn.Linear(width, dim)
        self.token_learner = TokenLearner(dim, num_local)

    def forward(
        self, pooled: torch.Tensor, sequence: torch.Tensor, shared: TokenHeads | None = None
    ) -> torch.Tensor:
        """The tokens; ``shared``: take the masks and the token learner from other heads
        (the original TG-CIR's one set for both modalities), keeping this projection."""
        masks = (shared or self).masks
        learner = (shared or self).token_learner
        global_tokens = pooled[:, None, :] * F.relu(masks).to(pooled.dtype)[None]
        local_tokens = learner(self.projection(sequence))
        return torch.cat([global_tokens, local_tokens.to(global_tokens.dtype)], dim=1)


def gate_mlp(dim: int) -> nn.Sequential:
    """``sigmoid(MLP([a, b]))``: one mixing weight per token pair."""
    return nn.Sequential(nn.Linear(2 * dim, dim), nn.ReLU(), nn.Linear(dim, 1), nn.Sigmoid())


def orthogonality(tokens: torch.Tensor) -> torch.Tensor:
    """MSE between the tokens' cosine-similarity matrix and the identity (TG-CIR's ortho)."""
    unit = F.normalize(tokens, dim=-1)
    cosine = unit @ unit.transpose(1, 2)
    eye = torch.eye(tokens.shape[1], device=tokens.device, dtype=cosine.dtype)
    return F.mse_loss(cosine, eye.expand_as(cosine))


class TgCirParams(MethodParams):
    global_tokens: int = Field(default=4, gt=0, description="P: masked pooled copies")
    local_tokens: int = Field(default=8, gt=0, description="Q: spatial attentions")
    logit_scale: float = Field(default=10.0, gt=0, description="TG-CIR's loss_T initial value")
    learnable_logit_scale: bool = True
    loss: Literal["infonce", "original"] = "infonce"
    # weights of the original TG-CIR's extra terms (loss: original), its train.py defaults
    teacher_weight: float = Field(default=1.0, ge=0, description="lambda_: teacher InfoNCE")
    mask_sum_weight: float = Field(default=1.0, ge=0, description="eta_: remain + replace = 1")
    ortho_weight: float = Field(default=0.1, ge=0, description="mu_: token orthogonality")
    distill_mask_weight: float = Field(default=10.0, ge=0, description="nu_: gate distillation")
    distill_kl_weight: float = Field(default=0.5, ge=0, description="kappa_: KL distillation")
    distill_kl_tau: float = Field(default=0.1, gt=0, description="tau_: KL temperature")
    share_token_heads: bool = Field(
        default=True,
        description="stage 1 uses one set of masks and token learner for image and text (the "
        "original TG-CIR); SPN's stage 2 copies them into the text side",
    )


TRAIN = Phase(
    "train",
    ("image_encoder", "image_tokens", "text_encoder", "text_tokens", "fusion"),
    "fine-tune CLIP, the token heads and the gated fusion (TG-CIR stage 1)",
)


@register_method("tgcir")
class TgCir(CIRMethod):
    """TG-CIR: image and text as 12 global/local tokens each, fused by a per-token gate."""

    Params = TgCirParams
    paper_name = "TG-CIR"
    phases = (TRAIN,)
    group_sides: ClassVar[dict[str, str]] = {
        "image_encoder": "image",
        "image_tokens": "image",
        "text_encoder": "query",
        "text_tokens": "query",
        "fusion": "query",
        "teacher": "query",
    }
    params: TgCirParams

    def __init__(self, backbone: Backbone, params: TgCirParams) -> None:
        super().__init__(backbone, params)
        import open_clip
        from open_clip.transformer import TextTransformer, VisionTransformer

        self.clip = backbone.model
        if not isinstance(getattr(self.clip, "visual", None), VisionTransformer):
            raise BackboneError(
                f"TG-CIR needs a ViT image tower for its patch tokens; backbone {backbone.arch!r} "
                f"has {type(getattr(self.clip, 'visual', None)).__name__}"
            )
        if not hasattr(self.clip.visual, "forward_intermediates"):
            raise BackboneError(
                f"TG-CIR reads the ViT's output tokens with VisionTransformer."
                f"forward_intermediates, which open_clip {open_clip.__version__} lacks; "
                "upgrade open_clip_torch"
            )
        text_tower = getattr(self.clip, "text", None)
        if isinstance(text_tower, TextTransformer):
            text_tower.output_tokens = True
            text_width = text_tower.width
        elif isinstance(self.clip, open_clip.CLIP):
            text_width = self.clip.transformer.width
        else:
            raise BackboneError(
                f"TG-CIR needs an open_clip text transformer for its token features; backbone "
                f"{backbone.arch!r} is a {type(self.clip).__name__}"
            )
        self.clip.logit_scale.requires_grad_(False)  # CLIP's own scale is not used
        dim = backbone.embed_dim
        if dim < params.global_tokens:
            raise ValueError(f"embed_dim {dim} < global_tokens {params.global_tokens}")
        self.dim = dim
        self.image_heads = TokenHeads(
            self.clip.visual.transformer.width, dim, params.global_tokens, params.local_tokens
        )
        self.text_heads = TokenHeads(text_width, dim, params.global_tokens, params.local_tokens)
        self.text_heads.token_learner = copy.deepcopy(self.image_heads.token_learner)
        # one set of masks and token learner until an SPN stage copies them (a buffer, so a
        # checkpoint says which state the heads are in)
        self.register_buffer("heads_shared", torch.tensor(params.share_token_heads))
        self.gate = gate_mlp(dim)
        self.loss_scale = nn.Parameter(
            torch.tensor(params.logit_scale), requires_grad=params.learnable_logit_scale
        )
        self.teacher: nn.ModuleDict | None = None
        self.token_weights: nn.Parameter | None = None
        if params.loss == "original":
            self.teacher = nn.ModuleDict({"remain": gate_mlp(dim), "replace": gate_mlp(dim)})
            self.token_weights = nn.Parameter(torch.ones(self.num_tokens))

    @property
    def num_tokens(self) -> int:
        return self.params.global_tokens + self.params.local_tokens

    # ------------------------------------------------------------------ encoders
    def image_tokens(self, images: torch.Tensor) -> torch.Tensor:
        """Images -> (B, P + Q, D) global and local tokens."""
        visual = self.clip.visual
        out = visual.forward_intermediates(
            images, indices=1, output_fmt="NLC", output_extra_tokens=True
        )
        # the last block's output: class token + patch tokens, before ln_post
        sequence = torch.cat(
            [out["image_intermediates_prefix"][-1], out["image_intermediates"][-1]], dim=1
        )
        return self.image_heads(out["image_features"], sequence)

    def _text_features(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Token ids -> (pooled projected text feature (B, D), ln_final outputs (B, L, W))."""
        from open_clip.transformer import text_global_pool

        tower = getattr(self.clip, "text", None)
        if tower is not None:  # CustomTextCLIP: output_tokens set in __init__
            pooled, sequence = tower(tokens)
            return pooled, sequence
        clip = self.clip
        cast_dtype = clip.transformer.get_cast_dtype()
        x = clip.token_embedding(tokens).to(cast_dtype) + clip.positional_embedding.to(cast_dtype)
        x = clip.ln_final(clip.transformer(x, attn_mask=clip.attn_mask))
        pooled = text_global_pool(
            x, tokens, clip.text_pool_type, eos_token_id=getattr(clip, "text_eos_id", None)
        )
        if isinstance(clip.text_projection, nn.Linear):
            pooled = clip.text_projection(pooled)
        elif clip.text_projection is not None:
            pooled = pooled @ clip.text_projection
        return pooled, x

    def text_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """Token ids -> (B, P + Q, D) global and local text tokens."""
        shared = self.image_heads if bool(self.heads_shared) else None
        return self.text_heads(*self._text_features(tokens), shared=shared)

    def begin_continuation(self, phase: Phase) -> None:
        """SPN's stage 2 (``init``, ``is_origin``): the text side gets copies of the image
        side's masks and token learner, trained from then on as its own."""
        if bool(self.heads_shared):
            with torch.no_grad():
                self.text_heads.masks.copy_(self.image_heads.masks)
                self.text_heads.token_learner.load_state_dict(
                    self.image_heads.token_learner.state_dict()
                )
                self.heads_shared.fill_(False)

    def fuse(
        self, reference: torch.Tensor, text: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Gated fusion: (fused tokens, per-token gate g) with fused = g*ref + (1-g)*text."""
        reference = reference.to(text.dtype)
        gate = self.gate(torch.cat([reference, text], dim=-1))
        return gate * reference + (1 - gate) * text, gate

    def cached_arrays(self) -> tuple[CachedArray, CachedArray]:
        tokens = self.params.global_tokens + self.params.local_tokens
        return (
            CachedArray("reference", "global and local image tokens", (tokens, self.dim)),
            CachedArray("target", "normalised mean of the image tokens", (self.dim,)),
        )

    def encode_reference(self, images: torch.Tensor) -> torch.Tensor:
        return self.image_tokens(images)

    def encode_target(self, images: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.image_tokens(images).mean(dim=1), dim=-1)

    def encode_images(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        tokens = self.image_tokens(images)
        return tokens, F.normalize(tokens.mean(dim=1), dim=-1)

    def encode_query(self, reference: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        if reference.dim() != 3 or reference.shape[1:] != (self.num_tokens, self.dim):
            raise ValueError(
                f"TG-CIR reference representations must be (B, {self.num_tokens}, {self.dim}) "
                f"image tokens, got {tuple(reference.shape)}"
            )
        fused, _ = self.fuse(reference, self.text_tokens(tokens))
        return F.normalize(fused.mean(dim=1), dim=-1)

    # ------------------------------------------------------------------ training
    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        image = list(self.clip.visual.parameters())
        image_ids = {id(p) for p in image}
        text = [
            p
            for name, p in self.clip.named_parameters()
            if id(p) not in image_ids and name != "logit_scale"
        ]
        groups = {
            "image_encoder": image,
            "image_tokens": list(self.image_heads.parameters()),
            "text_encoder": text,
            "text_tokens": list(self.text_heads.parameters()),
            "fusion": list(self.gate.parameters()),
        }
        if self.params.learnable_logit_scale:
            groups["fusion"].append(self.loss_scale)
        if self.teacher is not None and self.token_weights is not None:
            groups["teacher"] = [*self.teacher.parameters(), self.token_weights]
        return groups

    def logit_scale(self) -> torch.Tensor:
        return self.loss_scale

    def training_loss(self, batch: TrainBatch) -> torch.Tensor:
        """InfoNCE of the fused query against the batch's targets; with ``loss: original``
        plus the original TG-CIR's teacher branch and distillation terms."""
        text = self.text_tokens(batch.tokens)
        fused, remain = self.fuse(batch.reference, text)
        query = F.normalize(fused.mean(dim=1), dim=-1).float()
        target = batch.target.float()
        student = self.loss(query, target)
        if self.teacher is None or self.token_weights is None:
            return student
        p = self.params
        reference = batch.reference.to(text.dtype).detach()
        target_tokens = batch.target_reference.to(text.dtype)
        text_detached = text.detach()
        t_remain = self.teacher["remain"](torch.cat([reference, target_tokens], dim=-1))
        t_replace = self.teacher["replace"](torch.cat([text_detached, target_tokens], dim=-1))
        t_fused = t_remain * reference + t_replace * text_detached
        weights = self.token_weights[None, :, None]
        t_query = (F.normalize(t_fused, dim=-1) * weights).flatten(1).float()
        t_target = (F.normalize(target_tokens, dim=-1) * weights).flatten(1).float()
        teacher = self.loss(t_query, t_target)
        mask_sum = F.mse_loss(t_remain + t_replace, torch.ones_like(t_remain))
        ortho = (
            orthogonality(batch.reference) + orthogonality(target_tokens) + orthogonality(text)
        ) / 3.0
        distill_mask = F.mse_loss(remain, t_remain.detach()) + F.mse_loss(
            1 - remain, t_replace.detach()
        )
        student_logits = query @ target.t() / p.distill_kl_tau
        unit = F.normalize(t_target, dim=-1).detach()
        teacher_probs = F.softmax(unit @ unit.t() / p.distill_kl_tau, dim=1)
        kl = F.kl_div(F.log_softmax(student_logits, dim=1), teacher_probs, reduction="batchmean")
        return (
            student
            + p.teacher_weight * teacher
            + p.mask_sum_weight * mask_sum
            + p.ortho_weight * ortho.float()
            + p.distill_mask_weight * distill_mask.float()
            + p.distill_kl_weight * kl
        )
