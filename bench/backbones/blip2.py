"""BLIP-2 backbones from transformers: architectures ``hf-blip2:<name>``.

The model is transformers' ``Blip2ForImageTextRetrieval`` (ViT ``vision_model`` whose
``post_layernorm`` is LAVIS's ``ln_vision``, Q-Former ``qformer`` with its word/position
``embeddings``, ``query_tokens``, ``vision_projection``, ``text_projection``, ``itm_head``),
the model the BLIP-2 CIR methods (SPRC) are built on.

Architectures:

* ``hf-blip2:tiny``: a small random configuration built in code for tests and the
  synthetic benchmark (64 px images, patch 8, ViT width 128 x 2 layers; Q-Former width 128 x
  2 layers with cross-attention in every layer, 16 query tokens; 64-d projections; the
  vocabulary of :func:`bench.backbones.tokenizers.bert_tokenizer` ``("cirbench-bert-tiny")``);
* ``hf-blip2:<HF id or local folder>``, e.g. ``Salesforce/blip2-itm-vit-g`` (LAVIS's
  pre-trained BLIP-2 with the EVA ViT-g, the starting point of SPRC), whose tokenizer is
  loaded from the same place.

Weights (``pretrained``):

* ``None`` / ``"random"``: random initialisation (seeded). The query tokens are drawn from
  N(0, 0.02) as LAVIS's ``init_Qformer`` does (transformers initialises them to zeros,
  which leaves every query token identical and keeps them so under training);
* ``"hf"``: the transformers weights of ``<name>`` (``from_pretrained``: needs the hub or
  a local folder);
* a checkpoint file: LAVIS layout (LAVIS / SPRC / SPN releases, mapped by
  :mod:`bench.backbones.lavis_keys`, no LAVIS import) or transformers layout. Every parameter of the
  retrieval model must be present: a mismatch is an error naming the missing and the
  unexpected keys. Tensors of the checkpoint that are not part of the retrieval model
  (``temp``, SPRC's ``prompt_tokens``, SPN's stage-2 query copies) are kept in the
  model's ``cirbench_extras`` dict (:data:`EXTRAS_ATTR`) for the methods that use them.

The text length is 32 tokens, ``max_txt_len`` of LAVIS's BLIP-2 models and of SPRC.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from bench.backbones.base import Backbone, BackboneError
from bench.backbones.lavis_keys import (
    LavisKeyError,
    MappedState,
    hf_key_to_lavis,
    is_extra_name,
    lavis_to_hf,
    layout,
    unwrap_checkpoint,
)
from bench.backbones.tokenizers import TINY as TINY_TOKENIZER
from bench.backbones.tokenizers import bert_tokenizer
from bench.core.hashing import file_digest
from bench.images.transforms import TargetPadTransform

FAMILY = "hf-blip2"
TINY = "tiny"
#: ``pretrained`` value that loads the transformers weights of the architecture's name.
HF_WEIGHTS = "hf"
#: LAVIS BLIP-2's and SPRC's ``max_txt_len``.
CONTEXT_LENGTH = 32
#: Attribute of the returned model: checkpoint tensors that are not part of the model.
EXTRAS_ATTR = "cirbench_extras"

TINY_VISION: dict[str, Any] = {
    "hidden_size": 128,
    "intermediate_size": 512,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "image_size": 64,
    "patch_size": 8,
    "initializer_range": 0.02,  # transformers' vision default (1e-10) makes a constant ViT
}
TINY_QFORMER: dict[str, Any] = {
    "hidden_size": 128,
    "intermediate_size": 512,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "cross_attention_frequency": 1,
    "max_position_embeddings": 128,
    "use_qformer_text_input": True,  # the text feed-forward layers SPRC's text passes use
    # BERT's 0.02 suits width 768; at width 128 it leaves the image's share of the random
    # Q-Former's residual stream at ~5% and contrastive training collapses to one vector
    "initializer_range": 0.08,
}
TINY_NUM_QUERY_TOKENS = 16
TINY_EMBED_DIM = 64


def tiny_config(vocab_size: int) -> Any:
    """The ``Blip2Config`` of ``hf-blip2:tiny`` for a tokenizer of ``vocab_size`` tokens."""
    from transformers import Blip2Config, Blip2QFormerConfig, Blip2VisionConfig

    vision = Blip2VisionConfig(**TINY_VISION)
    qformer = Blip2QFormerConfig(
        vocab_size=vocab_size, encoder_hidden_size=vision.hidden_size, **TINY_QFORMER
    )
    return Blip2Config(
        vision_config=vision.to_dict(),
        qformer_config=qformer.to_dict(),
        num_query_tokens=TINY_NUM_QUERY_TOKENS,
        image_text_hidden_size=TINY_EMBED_DIM,
    )


def random_model(config: Any, seed: int) -> Any:
    """A seeded random ``Blip2ForImageTextRetrieval`` (query tokens ~ N(0, 0.02) as LAVIS)."""
    from transformers import Blip2ForImageTextRetrieval

    torch.manual_seed(seed)
    model = Blip2ForImageTextRetrieval(config)
    with torch.no_grad():
        model.query_tokens.normal_(0.0, config.qformer_config.initializer_range)
    return model


def _looks_local(name: str) -> bool:
    return name.startswith(("/", ".", "~")) or Path(name).expanduser().exists()


def _hub_error(name: str, what: str, exc: Exception) -> BackboneError:
    return BackboneError(
        f"hf-blip2:{name}: cannot load the {what} ({type(exc).__name__}: {exc}); offline, "
        "download the model elsewhere and pass its local folder as the name "
        "(hf-blip2:/path/to/folder), or use hf-blip2:tiny"
    )


def _check_local(name: str) -> None:
    if _looks_local(name) and not Path(name).expanduser().is_dir():
        raise BackboneError(f"hf-blip2:{name}: no such model folder")


def hf_config(name: str) -> Any:
    """The ``Blip2Config`` of an HF id or a local folder."""
    from transformers import Blip2Config

    _check_local(name)
    try:
        return Blip2Config.from_pretrained(name)
    except Exception as exc:  # network and file errors come in many types
        raise _hub_error(name, "config", exc) from exc


def hf_model(name: str) -> Any:
    """``Blip2ForImageTextRetrieval.from_pretrained(name)`` in float32 (the engine's
    autocast decides the compute precision)."""
    from transformers import Blip2ForImageTextRetrieval

    _check_local(name)
    try:
        return Blip2ForImageTextRetrieval.from_pretrained(name, dtype=torch.float32)
    except Exception as exc:
        raise _hub_error(name, "weights", exc) from exc


def _names(keys: list[str], sources: dict[str, str], lavis: bool, limit: int = 8) -> str:
    shown = []
    for key in keys[:limit]:
        if lavis:
            shown.append(sources.get(key) or " + ".join(hf_key_to_lavis(key)) or key)
        else:
            shown.append(key)
    more = f" and {len(keys) - limit} more" if len(keys) > limit else ""
    return ", ".join(shown) + more


def map_checkpoint_state(state: dict[str, torch.Tensor]) -> tuple[str, MappedState]:
    """(layout, mapped state) of a checkpoint's state dict: LAVIS keys are renamed, a
    transformers state dict is split into model keys and extras."""
    kind = layout(state)
    if kind == "lavis":
        return kind, lavis_to_hf(state)
    mapped = MappedState(model={})
    for key, value in state.items():
        target = mapped.extras if is_extra_name(key) else mapped.model
        target[key] = value
    return kind, mapped


def load_blip2_checkpoint(model: torch.nn.Module, path: Path) -> dict[str, torch.Tensor]:
    """Load a LAVIS- or transformers-layout checkpoint into ``model`` (strict); return the
    extras. Errors name the file and the missing / unexpected / mis-shaped keys."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise BackboneError(
            f"{path}: cannot read checkpoint ({type(exc).__name__}: {exc}); a file holding "
            "more than tensors (e.g. a LAVIS training config) must be re-saved as its state "
            "dict: torch.save(torch.load(path, weights_only=False)['model'], new_path)"
        ) from exc
    try:
        kind, mapped = map_checkpoint_state(unwrap_checkpoint(checkpoint))
    except LavisKeyError as exc:
        raise BackboneError(f"{path}: {exc}") from None
    lavis = kind == "lavis"
    expected = model.state_dict()
    missing = sorted(set(expected) - set(mapped.model))
    unexpected = sorted(set(mapped.model) - set(expected))
    if missing or unexpected or mapped.unknown:
        problems = []
        if missing:
            problems.append(
                f"{len(missing)} missing keys ({_names(missing, mapped.sources, lavis)})"
            )
        if unexpected or mapped.unknown:
            extra = [mapped.sources.get(k, k) for k in unexpected] + mapped.unknown
            problems.append(f"{len(extra)} unexpected keys ({_names(extra, {}, False)})")
        raise BackboneError(
            f"{path}: {kind} checkpoint does not match the BLIP-2 architecture: "
            + "; ".join(problems)
        )
    wrong = [
        f"{mapped.sources.get(k, k)}: {tuple(v.shape)} vs {tuple(expected[k].shape)}"
        for k, v in mapped.model.items()
        if v.shape != expected[k].shape
    ]
    if wrong:
        raise BackboneError(
            f"{path}: checkpoint shapes do not match the architecture (checkpoint vs model): "
            + "; ".join(wrong[:8])
        )
    model.load_state_dict(mapped.model, strict=True)
    return mapped.extras


def load(
    name: str, pretrained: str | Path | None, seed: int, target_pad_ratio: float | None
) -> Backbone:
    """The ``hf-blip2`` family loader (see the module docstring)."""
    if not name:
        raise BackboneError(
            "architecture 'hf-blip2:' needs a name: hf-blip2:tiny or hf-blip2:<HF id or folder>"
        )
    source = None if pretrained in (None, "", "random") else str(pretrained)
    tiny = name == TINY
    extras: dict[str, torch.Tensor] = {}
    if source == HF_WEIGHTS:
        if tiny:
            raise BackboneError(
                "hf-blip2:tiny has no published weights: use pretrained 'random' or a "
                "checkpoint file"
            )
        model = hf_model(name)
        weights = f"{FAMILY}:{name}:hf"
        tokenizer = bert_tokenizer(name, CONTEXT_LENGTH)
    else:
        tokenizer = bert_tokenizer(TINY_TOKENIZER if tiny else name, CONTEXT_LENGTH)
        config = tiny_config(tokenizer.vocab_size) if tiny else hf_config(name)
        model = random_model(config, seed)
        if source is None:
            weights = f"{FAMILY}:{name}:random:seed={seed}"
        else:
            path = Path(source).expanduser()
            if not path.is_file():
                raise BackboneError(
                    f"{path}: checkpoint file not found (pretrained for hf-blip2 is 'random', "
                    f"'{HF_WEIGHTS}' or a LAVIS / transformers checkpoint file)"
                )
            extras = load_blip2_checkpoint(model, path)
            weights = f"{FAMILY}:{name}:file:{file_digest(path)}"
    model.eval()
    setattr(model, EXTRAS_ATTR, extras)
    config = model.config
    size = config.vision_config.image_size
    return Backbone(
        arch=f"{FAMILY}:{name}",
        weights=weights,
        model=model,
        tokenizer=tokenizer,
        transform=TargetPadTransform(
            size=size if isinstance(size, int) else int(size[0]), ratio=target_pad_ratio
        ),
        embed_dim=config.image_text_hidden_size,
        context_length=CONTEXT_LENGTH,
    )


# ----------------------------------------------------------------------------- pre-training
#: LAVIS BLIP-2's initial ``temp`` and its clamp.
PRETRAIN_TEMP = 0.07
PRETRAIN_TEMP_RANGE = (0.001, 0.5)


class Blip2PairObjective(torch.nn.Module):
    """BLIP-2's Q-Former pre-training objectives on image-text pairs (LAVIS
    ``Blip2Qformer.forward``), for the synthetic world's ``pretrained: synthetic``:

    * ITC: the image's ``n`` query outputs ``normalize(vision_proj(.))`` against the text's
      ``normalize(text_proj([CLS]))``, the best query token scoring a pair (``sim.max``),
      divided by the learnable ``temp``; symmetric cross-entropy, identical descriptions in
      the batch being positives of each other (soft targets);
    * ITM: the Q-Former's fusion pass (queries and text together, the queries
      cross-attending to the image) and ``itm_head`` averaged over the query outputs, on
      the positive pairs and one hard negative text per image and one hard negative image
      per text, drawn from the ITC similarities (pairs with the same description never
      count as negatives);
    * ITG (image-grounded text generation) is not trained: ``Blip2ForImageTextRetrieval``
      has no language-model head, and none of the CIR methods uses one.

    Unlike BLIP-2, whose ViT is a frozen pre-trained EVA-CLIP, the tiny ViT trains here too:
    the synthetic world has no other pre-trained image encoder to freeze (SPRC then
    freezes it, as published). ``temp`` is saved as the LAVIS extra ``temp``.
    """

    def __init__(self, model: Any, pad_id: int) -> None:
        super().__init__()
        self.model = model
        self.pad_id = pad_id
        self.temp = torch.nn.Parameter(torch.tensor(PRETRAIN_TEMP))

    @property
    def module(self) -> torch.nn.Module:
        """What trains and is checkpointed while pre-training: the model and ``temp``."""
        return self

    def _trim(self, tokens: torch.Tensor) -> torch.Tensor:
        used = (tokens != self.pad_id).any(0).nonzero()
        return tokens[:, : int(used.max()) + 1] if len(used) else tokens[:, :1]

    def loss(self, images: torch.Tensor, tokens: torch.Tensor, same: torch.Tensor) -> torch.Tensor:
        """ITC + ITM of one batch; ``same[i, j]``: pair i's and pair j's descriptions are
        identical."""
        import torch.nn.functional as F

        model = self.model
        tokens = self._trim(tokens)
        mask = (tokens != self.pad_id).long()
        embeds = model.vision_model(pixel_values=images).last_hidden_state  # ln_vision(ViT)
        queries = model.query_tokens.expand(images.shape[0], -1, -1)
        image_states = model.qformer(query_embeds=queries, encoder_hidden_states=embeds)
        image_f = F.normalize(model.vision_projection(image_states.last_hidden_state), dim=-1)
        text_states = model.qformer(
            query_embeds=model.embeddings(input_ids=tokens), query_length=0, attention_mask=mask
        )
        text_f = F.normalize(model.text_projection(text_states.last_hidden_state[:, 0]), dim=-1)
        sim = torch.einsum("iqd,td->itq", image_f, text_f).amax(-1).float()  # (B img, B text)
        logits = sim / self.temp.clamp(*PRETRAIN_TEMP_RANGE)
        target = same.float() / same.float().sum(1, keepdim=True)
        itc = (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target)) / 2
        return itc + self._itm(embeds, tokens, mask, logits.detach(), same)

    def _itm(
        self,
        embeds: torch.Tensor,
        tokens: torch.Tensor,
        mask: torch.Tensor,
        logits: torch.Tensor,
        same: torch.Tensor,
    ) -> torch.Tensor:
        """Matching loss on positives and ITC-sampled hard negatives (both directions)."""
        import torch.nn.functional as F

        batch = embeds.shape[0]
        other = ~same
        if not bool(other.any(1).all()):  # a pair without a different description
            return logits.new_zeros(())
        floor = other.float() * 1e-8  # softmax underflow must not leave a row without mass
        negative_text = torch.multinomial(logits.softmax(1) * other + floor, 1).squeeze(1)
        negative_image = torch.multinomial(logits.t().softmax(1) * other + floor, 1).squeeze(1)
        pair_images = torch.cat([embeds, embeds, embeds[negative_image]])
        pair_tokens = torch.cat([tokens, tokens[negative_text], tokens])
        pair_mask = torch.cat([mask, mask[negative_text], mask])
        model = self.model
        n = model.query_tokens.shape[1]
        queries = model.query_tokens.expand(pair_tokens.shape[0], -1, -1)
        states = model.qformer(
            query_embeds=model.embeddings(input_ids=pair_tokens, query_embeds=queries),
            query_length=n,
            attention_mask=torch.cat([pair_mask[:, :1].new_ones(len(pair_mask), n), pair_mask], 1),
            encoder_hidden_states=pair_images,
        ).last_hidden_state[:, :n]
        scores = model.itm_head(states).mean(1).float()
        labels = torch.cat([torch.ones(batch), torch.zeros(2 * batch)]).long().to(scores.device)
        return F.cross_entropy(scores, labels)

    def after_step(self) -> None:
        with torch.no_grad():
            self.temp.clamp_(*PRETRAIN_TEMP_RANGE)

    def weights(self) -> dict[str, torch.Tensor]:
        """The cached checkpoint: the model's transformers state dict plus LAVIS's ``temp``."""
        return {**self.model.state_dict(), "temp": self.temp.detach().clone()}
