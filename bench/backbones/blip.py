"""The ``hf-blip`` backbone family: BLIP (Li et al., ICML 2022) on transformers' modules.

``arch: hf-blip:<name>`` builds a :class:`BlipCIRModel` (the BLIP parts composed image
retrieval uses: ViT image encoder, BERT text encoder with cross-attention to image tokens,
the two 256-d ITC projections and the ITC temperature):

* ``hf-blip:tiny``: a small config made here (64 px images, patch 8, a 4-layer width-128
  ViT, a 2-layer width-128 BERT without dropout, 128-d projections) with the offline
  ``cirbench-bert-tiny`` tokenizer; the synthetic benchmark's BLIP.
* ``hf-blip:base``: "BLIP w/ ViT-B", the architecture of Salesforce's ``model_base.pth``
  (ViT-B/16 at 384 px, BERT-base with cross-attention in every layer, vocabulary 30524,
  256-d projections, dropout 0.1 as in BLIP's ``med_config.json``) with the
  ``bert-base-uncased`` tokenizer plus ``[DEC]`` / ``[ENC]``.
* ``hf-blip:<transformers id or local folder>`` of a ``BlipForImageTextRetrieval``
  checkpoint (e.g. ``Salesforce/blip-itm-base-coco``): config, weights and tokenizer with
  ``from_pretrained`` (its ITM head is dropped).

Weights (``pretrained``):

* ``None`` / ``"random"``: random initialisation (seeded). For a transformers id ``None``
  (or ``"hf"``) means the id's own weights and ``"random"`` its config with random weights.
* ``"blip-base"`` / ``"blip-base-coco"``: Salesforce's ``model_base.pth`` (pre-trained on
  129M images; what BLIP4CIR / Candidate-Reranking-CIR stage I start from) or
  ``model_base_retrieval_coco.pth``, downloaded into torch's hub cache on first use.
* a checkpoint file, read through :func:`map_blip_state_dict`: the BLIP / LAVIS layout
  (``visual_encoder.*``, ``text_encoder.*``, ``vision_proj``, ``text_proj``, ``temp``), also
  wrapped as the BLIP4CIR authors save it (``{"BLIP_Retrieval": ...}`` from
  Candidate-Reranking-CIR, ``{"state_dict": {"blip.*": ...}}`` from SPN4CIR's BLIP4CIR,
  ``{"model": ...}`` from BLIP / LAVIS); or the layout of this module / transformers
  (``vision_model.*``, ...), e.g. the synthetic pre-training checkpoint.

``BlipCIRModel`` also has ``encode_image`` / ``encode_text`` / ``logit_scale`` (BLIP's
image-text contrastive head), so ``backbone.pretrained: synthetic`` pre-trains it on the
synthetic world with ``bench/backbones/pretrain.py`` like the synthetic CLIP (BLIP's ITC objective;
the cross-attention layers are left to the CIR training).
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from bench.backbones.base import Backbone, BackboneError
from bench.backbones.tokenizers import TINY, BertTokenize, bert_tokenizer
from bench.core.hashing import file_digest
from bench.images.transforms import TargetPadTransform

FAMILY = "hf-blip"
#: BLIP4CIR / SPRC tokenise CIR texts to at most 35 tokens.
CONTEXT_LENGTH = 35
#: BLIP's initial ITC temperature (``temp`` in BLIP's code).
BLIP_TEMP = 0.07
#: ``pretrained`` tags -> Salesforce BLIP checkpoints (BLIP w/ ViT-B).
BLIP_URLS = {
    "blip-base": "https://storage.googleapis.com/sfr-vision-language-research/BLIP/models/model_base.pth",
    "blip-base-coco": (
        "https://storage.googleapis.com/sfr-vision-language-research/BLIP/models/"
        "model_base_retrieval_coco.pth"
    ),
}
_RANDOM = (None, "", "random")


class BlipCIRModel(nn.Module):
    """BLIP's image encoder, text encoder (with cross-attention), ITC projections and
    temperature, named as in transformers' ``BlipForImageTextRetrieval`` (whose state dict
    loads as it is, minus ``itm_head``); ``logit_scale`` = log(1 / BLIP's ``temp``)."""

    def __init__(self, config: Any, temp: float = BLIP_TEMP) -> None:
        from transformers.models.blip.modeling_blip import BlipVisionModel
        from transformers.models.blip.modeling_blip_text import BlipTextModel

        super().__init__()
        self.config = config
        self.vision_model = BlipVisionModel(config.vision_config)
        self.text_encoder = BlipTextModel(config.text_config, add_pooling_layer=False)
        dim = config.image_text_hidden_size
        self.vision_proj = nn.Linear(config.vision_config.hidden_size, dim)
        self.text_proj = nn.Linear(config.text_config.hidden_size, dim)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / temp)))

    @property
    def image_size(self) -> int:
        return int(self.config.vision_config.image_size)

    @property
    def embed_dim(self) -> int:
        return int(self.config.image_text_hidden_size)

    def image_tokens(self, images: torch.Tensor) -> torch.Tensor:
        """Images (B, 3, S, S) -> the ViT's output tokens (B, 1 + patches, width), [CLS] first."""
        return self.vision_model(pixel_values=images).last_hidden_state

    def image_embedding(self, tokens: torch.Tensor) -> torch.Tensor:
        """Image tokens -> the (unnormalised) ITC embedding of the [CLS] token."""
        return self.vision_proj(tokens[:, 0, :])

    def text_features(
        self,
        input_ids: torch.Tensor | None,
        attention_mask: torch.Tensor,
        image_tokens: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The projected first-token output of the text encoder: unimodal (ITC) without
        ``image_tokens``, cross-attending to them (BLIP's image-grounded encoder) with."""
        out = self.text_encoder(
            input_ids=input_ids,
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            encoder_hidden_states=image_tokens,
        )
        return self.text_proj(out.last_hidden_state[:, 0, :])

    # CLIP-style interface of bench/backbones/pretrain.py (BLIP's image-text contrastive head)
    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        return self.image_embedding(self.image_tokens(images))

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        pad = self.config.text_config.pad_token_id
        return self.text_features(tokens, (tokens != pad).long())


# ----------------------------------------------------------------------------- configs


def tiny_config(tokenizer: BertTokenize) -> Any:
    """The synthetic benchmark's BLIP: the ViT of ``cirbench-tiny`` (64 px, patch 8, width
    128, 4 layers of 4 heads) and a 2-layer, width-128 BERT with cross-attention; no text
    dropout (BLIP's 0.1 slowed the small ITC pre-training and stage I on synthetic data)."""
    from transformers import BlipConfig

    vision = {
        "hidden_size": 128,
        "intermediate_size": 512,
        "num_hidden_layers": 4,
        "num_attention_heads": 4,
        "image_size": 64,
        "patch_size": 8,
        "layer_norm_eps": 1e-6,
        "initializer_range": 0.02,  # transformers' default 1e-10 starts the ViT at ~zero
    }
    return BlipConfig(
        text_config=_text_config(
            tokenizer, hidden=128, layers=2, heads=4, vision_width=128, dropout=0.0
        ),
        vision_config=vision,
        image_text_hidden_size=128,
    )


def base_config(tokenizer: BertTokenize) -> Any:
    """BLIP w/ ViT-B as in Salesforce's ``model_base.pth`` / BLIP4CIR (``med_config.json``,
    ``create_vit('base', 384)``)."""
    from transformers import BlipConfig

    vision = {
        "hidden_size": 768,
        "intermediate_size": 3072,
        "num_hidden_layers": 12,
        "num_attention_heads": 12,
        "image_size": 384,
        "patch_size": 16,
        "layer_norm_eps": 1e-6,
        "initializer_range": 0.02,  # BLIP's ViT: trunc_normal(std=0.02)
    }
    text = _text_config(tokenizer, hidden=768, layers=12, heads=12, vision_width=768)
    text.update(vocab_size=30524, max_position_embeddings=512)
    return BlipConfig(text_config=text, vision_config=vision, image_text_hidden_size=256)


def _text_config(
    tokenizer: BertTokenize,
    *,
    hidden: int,
    layers: int,
    heads: int,
    vision_width: int,
    dropout: float = 0.1,
) -> dict[str, Any]:
    return {
        "vocab_size": tokenizer.vocab_size,
        "hidden_size": hidden,
        "intermediate_size": 4 * hidden,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "encoder_hidden_size": vision_width,
        "max_position_embeddings": 64,
        "hidden_dropout_prob": dropout,
        "attention_probs_dropout_prob": dropout,
        "pad_token_id": tokenizer.pad_id,
        "bos_token_id": tokenizer.token_id("[DEC]"),
        "sep_token_id": tokenizer.token_id("[SEP]"),
        "is_decoder": True,  # transformers builds the cross-attention layers only then
    }


# ----------------------------------------------------------------------------- key mapping

#: BLIP / LAVIS ``visual_encoder`` (timm-style ViT) -> transformers ``BlipVisionModel``.
_VISION_RENAMES: tuple[tuple[str, str], ...] = (
    (r"^visual_encoder\.cls_token$", "vision_model.embeddings.class_embedding"),
    (r"^visual_encoder\.pos_embed$", "vision_model.embeddings.position_embedding"),
    (r"^visual_encoder\.patch_embed\.proj\.", "vision_model.embeddings.patch_embedding."),
    (r"^visual_encoder\.blocks\.(\d+)\.norm1\.", r"vision_model.encoder.layers.\1.layer_norm1."),
    (
        r"^visual_encoder\.blocks\.(\d+)\.attn\.qkv\.",
        r"vision_model.encoder.layers.\1.self_attn.qkv.",
    ),
    (
        r"^visual_encoder\.blocks\.(\d+)\.attn\.proj\.",
        r"vision_model.encoder.layers.\1.self_attn.projection.",
    ),
    (r"^visual_encoder\.blocks\.(\d+)\.norm2\.", r"vision_model.encoder.layers.\1.layer_norm2."),
    (
        r"^visual_encoder\.blocks\.(\d+)\.mlp\.fc([12])\.",
        r"vision_model.encoder.layers.\1.mlp.fc\2.",
    ),
    (r"^visual_encoder\.norm\.", "vision_model.post_layernorm."),
    # BLIP's med.py BertModel uses the names of transformers' BlipTextModel
    (r"^text_encoder\.", "text_encoder."),
    (r"^vision_proj\.", "vision_proj."),
    (r"^text_proj\.", "text_proj."),
)
#: The inverse of ``_VISION_RENAMES`` (exporting to the BLIP / LAVIS layout).
BLIP_EXPORT_RENAMES: tuple[tuple[str, str], ...] = (
    (r"^vision_model\.embeddings\.class_embedding$", "visual_encoder.cls_token"),
    (r"^vision_model\.embeddings\.position_embedding$", "visual_encoder.pos_embed"),
    (r"^vision_model\.embeddings\.patch_embedding\.", "visual_encoder.patch_embed.proj."),
    (r"^vision_model\.encoder\.layers\.(\d+)\.layer_norm1\.", r"visual_encoder.blocks.\1.norm1."),
    (
        r"^vision_model\.encoder\.layers\.(\d+)\.self_attn\.qkv\.",
        r"visual_encoder.blocks.\1.attn.qkv.",
    ),
    (
        r"^vision_model\.encoder\.layers\.(\d+)\.self_attn\.projection\.",
        r"visual_encoder.blocks.\1.attn.proj.",
    ),
    (r"^vision_model\.encoder\.layers\.(\d+)\.layer_norm2\.", r"visual_encoder.blocks.\1.norm2."),
    (r"^vision_model\.encoder\.layers\.(\d+)\.mlp\.", r"visual_encoder.blocks.\1.mlp."),
    (r"^vision_model\.post_layernorm\.", "visual_encoder.norm."),
)


def blip_released_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A :class:`BlipCIRModel` state dict in the BLIP / LAVIS layout (``logit_scale`` ->
    ``temp = exp(-logit_scale)``): what :func:`map_blip_state_dict` reads back."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key == "logit_scale":
            out["temp"] = torch.exp(-value.detach().float())
            continue
        for pattern, replacement in BLIP_EXPORT_RENAMES:
            key = re.sub(pattern, replacement, key)
        out[key] = value.detach().clone()
    return out


#: Keys of BLIP / LAVIS / BLIP4CIR checkpoints that CIR does not use: ITM head, momentum
#: encoders and queues of ITC distillation, the captioning decoder, the persistent
#: ``position_ids`` buffer, and SPN4CIR's stage-2 bank temperature ``tau``.
_IGNORED = re.compile(
    r"^(itm_head\.|visual_encoder_m\.|text_encoder_m\.|vision_proj_m\.|text_proj_m\.|"
    r"image_queue$|text_queue$|idx_queue$|ptr_queue$|text_decoder\.|tau$|"
    r"text_encoder\.embeddings\.position_ids$|text_encoder\.pooler\.)"
)
#: Wrappers of the state dict: Candidate-Reranking-CIR saves {"BLIP_Retrieval": sd},
#: SPN4CIR {"state_dict": sd}, BLIP / LAVIS / cirbench {"model": sd}.
_CONTAINERS = ("BLIP_Retrieval", "state_dict", "model")


def unwrap_state_dict(checkpoint: Any, source: str) -> dict[str, torch.Tensor]:
    """The tensor state dict inside a checkpoint, without ``module.`` / ``blip.`` prefixes."""
    state = checkpoint
    for key in _CONTAINERS:
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    if not isinstance(state, dict) or not state:
        raise BackboneError(
            f"{source}: expected a (wrapped) state dict, got {type(state).__name__}"
        )
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            continue
        for prefix in ("module.", "blip."):
            key = key.removeprefix(prefix)
        out[key] = value
    return out


def map_blip_state_dict(
    state: dict[str, torch.Tensor], model: BlipCIRModel, source: str = "<state dict>"
) -> dict[str, torch.Tensor]:
    """Rename a BLIP / LAVIS-layout state dict to :class:`BlipCIRModel`'s names.

    ``visual_encoder.cls_token`` -> ``vision_model.embeddings.class_embedding``,
    ``.pos_embed`` -> ``.position_embedding`` (bicubic-interpolated over the patch grid
    when the image size differs, as BLIP's ``interpolate_pos_embed``),
    ``.patch_embed.proj`` -> ``.patch_embedding``, ``.blocks.i.{norm1, attn.qkv, attn.proj,
    norm2, mlp.fc1, mlp.fc2}`` -> ``.encoder.layers.i.{layer_norm1, self_attn.qkv,
    self_attn.projection, layer_norm2, mlp.fc1, mlp.fc2}``, ``.norm`` -> ``.post_layernorm``;
    ``text_encoder.*``, ``vision_proj``, ``text_proj`` keep their names; ``temp`` ->
    ``logit_scale = log(1 / temp)``; the keys in ``_IGNORED`` are dropped. A state dict
    already in this module's layout (``vision_model.*``) passes through (minus
    ``itm_head``). Raises :class:`BackboneError` on keys it does not know.
    """
    if any(k.startswith("vision_model.") for k in state):
        return {k: v for k, v in state.items() if not _IGNORED.match(k)}
    if not any(k.startswith("visual_encoder.") for k in state):
        raise BackboneError(
            f"{source}: not a BLIP checkpoint (no 'visual_encoder.*' or 'vision_model.*' keys; "
            f"first keys: {sorted(state)[:3]})"
        )
    out: dict[str, torch.Tensor] = {}
    unknown: list[str] = []
    for key, value in state.items():
        if _IGNORED.match(key):
            continue
        if key == "temp":
            out["logit_scale"] = torch.log(1.0 / value.float().reshape(()))
            continue
        for pattern, replacement in _VISION_RENAMES:
            new, count = re.subn(pattern, replacement, key)
            if count:
                out[new] = value
                break
        else:
            unknown.append(key)
    if unknown:
        raise BackboneError(
            f"{source}: {len(unknown)} keys of unknown meaning for a BLIP model "
            f"(e.g. {unknown[:3]})"
        )
    pos = "vision_model.embeddings.position_embedding"
    if pos in out:
        out[pos] = interpolate_position_embedding(out[pos], model.vision_model.embeddings)
    return out


def interpolate_position_embedding(pos: torch.Tensor, embeddings: nn.Module) -> torch.Tensor:
    """A (1, 1 + n*n, D) position embedding resized to the model's patch grid (bicubic, the
    [CLS] position kept), as BLIP does when a 224-px checkpoint meets 384-px images."""
    wanted = embeddings.position_embedding.shape[1]
    if pos.ndim != 3 or pos.shape[1] == wanted:
        return pos
    old, new = math.isqrt(pos.shape[1] - 1), math.isqrt(wanted - 1)
    if old * old != pos.shape[1] - 1 or new * new != wanted - 1:
        return pos  # not square grids: left to the shape check
    grid = pos[:, 1:].reshape(1, old, old, -1).permute(0, 3, 1, 2).float()
    grid = nn.functional.interpolate(grid, size=(new, new), mode="bicubic", align_corners=False)
    grid = grid.permute(0, 2, 3, 1).reshape(1, new * new, -1).to(pos.dtype)
    return torch.cat([pos[:, :1], grid], dim=1)


def load_blip_checkpoint(model: BlipCIRModel, path: Path) -> None:
    """Load a checkpoint file (any layout :func:`map_blip_state_dict` knows) into ``model``;
    every model weight must be in it (``logit_scale`` may be absent: BLIP's 0.07)."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise BackboneError(f"{path}: cannot read checkpoint ({exc})") from exc
    state = map_blip_state_dict(unwrap_state_dict(checkpoint, str(path)), model, str(path))
    expected = model.state_dict()
    missing = [k for k in expected if k not in state and k != "logit_scale"]
    unexpected = [k for k in state if k not in expected]
    mismatched = [
        f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(expected[k].shape)}"
        for k, v in state.items()
        if k in expected and v.shape != expected[k].shape
    ]
    if missing or unexpected or mismatched:
        raise BackboneError(
            f"{path}: checkpoint does not match the architecture: "
            f"{len(missing)} missing keys (e.g. {missing[:3]}), "
            f"{len(unexpected)} unexpected keys (e.g. {unexpected[:3]}), "
            f"{len(mismatched)} shape mismatches (e.g. {mismatched[:2]})"
        )
    model.load_state_dict(state, strict=False)


# ----------------------------------------------------------------------------- loader


def _download(tag: str) -> Path:
    url = BLIP_URLS[tag]
    target = Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[1]
    if not target.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            torch.hub.download_url_to_file(url, str(target), progress=True)
        except Exception as exc:  # network errors come in many types
            raise BackboneError(
                f"cannot download BLIP weights {tag!r} from {url} ({type(exc).__name__}: "
                f"{exc}); offline, download the file elsewhere and pass its path as "
                "`pretrained`"
            ) from exc
    return target


def _from_transformers(name: str, pretrained: str | None) -> tuple[BlipCIRModel, BertTokenize]:
    """Config, tokenizer and (for ``pretrained`` None / "hf") weights of a transformers
    ``BlipForImageTextRetrieval`` id or folder."""
    from transformers import BlipConfig, BlipForImageTextRetrieval

    if name.startswith(("/", ".", "~")) and not Path(name).expanduser().is_dir():
        raise BackboneError(f"{name}: BLIP model folder not found")
    tokenizer = bert_tokenizer(name, CONTEXT_LENGTH)
    try:
        if pretrained in (None, "", "hf"):
            hf = BlipForImageTextRetrieval.from_pretrained(name)
            model = BlipCIRModel(hf.config)
            state = {k: v for k, v in hf.state_dict().items() if not k.startswith("itm_head.")}
            result = model.load_state_dict(state, strict=False)
            if result.unexpected_keys or set(result.missing_keys) - {"logit_scale"}:
                raise BackboneError(
                    f"{name}: not a BLIP retrieval model with a cross-attention text encoder "
                    f"(missing {result.missing_keys[:3]}, unexpected {result.unexpected_keys[:3]})"
                )
        else:
            model = BlipCIRModel(BlipConfig.from_pretrained(name))
    except BackboneError:
        raise
    except Exception as exc:  # network and file errors come in many types
        raise BackboneError(
            f"cannot load BLIP model {name!r} with transformers ({type(exc).__name__}: {exc}); "
            "offline, pass a local folder with the model files (config.json, weights, "
            "tokenizer) or use hf-blip:tiny / hf-blip:base with a checkpoint file"
        ) from exc
    return model, tokenizer


def load(
    name: str, pretrained: str | Path | None, seed: int, target_pad_ratio: float | None
) -> Backbone:
    """The ``hf-blip`` family loader (see the module docstring)."""
    arch = f"{FAMILY}:{name}"
    source = None if pretrained is None else str(pretrained)
    torch.manual_seed(seed)
    if name in ("tiny", "base"):
        tokenizer = bert_tokenizer(TINY if name == "tiny" else "bert-base-uncased", CONTEXT_LENGTH)
        config = tiny_config(tokenizer) if name == "tiny" else base_config(tokenizer)
        model = BlipCIRModel(config)
        if source in _RANDOM:
            source = "random"
    else:
        model, tokenizer = _from_transformers(name, source)
        source = "hf" if source in (None, "", "hf") else source
    if source == "random":
        weights = f"{arch}:random:seed={seed}"
    elif source == "hf":
        weights = f"{arch}:hf"
    else:
        path = _download(source) if source in BLIP_URLS else Path(source).expanduser()
        if not path.is_file():
            raise BackboneError(
                f"{path}: BLIP checkpoint file not found (pretrained tags: "
                f"{', '.join(BLIP_URLS)}; or random)"
            )
        load_blip_checkpoint(model, path)
        weights = f"{arch}:file:{file_digest(path)}"
    text_vocab = model.config.text_config.vocab_size
    enc = tokenizer.token_id("[ENC]")
    if tokenizer.vocab_size > text_vocab or enc in (None, tokenizer.token_id("[UNK]")):
        raise BackboneError(
            f"{arch}: tokenizer ({tokenizer.vocab_size} tokens, [ENC] id {enc}) does not fit "
            f"the text encoder's vocabulary of {text_vocab}"
        )
    model.eval()
    return Backbone(
        arch=arch,
        weights=weights,
        model=model,
        tokenizer=tokenizer,
        transform=TargetPadTransform(size=model.image_size, ratio=target_pad_ratio),
        embed_dim=model.embed_dim,
        context_length=CONTEXT_LENGTH,
    )
