"""LAVIS BLIP-2 checkpoints <-> transformers ``Blip2ForImageTextRetrieval`` state dicts.

SPRC and the SPN authors release BLIP-2 checkpoints in the layout of Salesforce LAVIS
(``lavis/models/blip2_models/blip2_qformer.py``, ``Qformer.py`` and ``lavis/models/eva_vit.py``;
SPRC's copy adds ``prompt_tokens``, SPN's stage-2 model ``Qformer_query`` / ``text_proj_q``).
This module maps those keys to transformers' BLIP-2 retrieval model without importing LAVIS
(not a dependency, and its Q-Former does not load under transformers 5).

Renames (LAVIS on the left; ``{i}`` a layer index, ``{p}`` ``weight``/``bias``; ``V`` is
``visual_encoder.blocks.{i}``, ``L`` is ``vision_model.encoder.layers.{i}``)::

    visual_encoder.cls_token                 vision_model.embeddings.class_embedding
    visual_encoder.pos_embed                 vision_model.embeddings.position_embedding
    visual_encoder.patch_embed.proj.{p}      vision_model.embeddings.patch_embedding.{p}
    V.norm1.{p} / V.norm2.{p}                L.layer_norm1.{p} / L.layer_norm2.{p}
    V.attn.qkv.weight                        L.self_attn.qkv.weight
    V.attn.q_bias + V.attn.v_bias            L.self_attn.qkv.bias
    V.attn.proj.{p}                          L.self_attn.projection.{p}
    V.mlp.fc1.{p} / V.mlp.fc2.{p}            L.mlp.fc1.{p} / L.mlp.fc2.{p}
    ln_vision.{p}                            vision_model.post_layernorm.{p}
    Qformer.bert.embeddings.word_embeddings.weight      embeddings.word_embeddings.weight
    Qformer.bert.embeddings.position_embeddings.weight  embeddings.position_embeddings.weight
    Qformer.bert.embeddings.LayerNorm.{p}               qformer.layernorm.{p}
    Qformer.bert.encoder.layer.{i}.{attention,crossattention}.self.{query,key,value}.{p}
                                 qformer.encoder.layer.{i}.{...}.attention.{query,key,value}.{p}
    Qformer.bert.encoder.layer.{i}.{attention,crossattention}.output.{dense,LayerNorm}.{p}
    Qformer.bert.encoder.layer.{i}.{intermediate,intermediate_query}.dense.{p}
    Qformer.bert.encoder.layer.{i}.{output,output_query}.{dense,LayerNorm}.{p}
                                 (the same names under qformer.encoder.layer.{i})
    query_tokens                             query_tokens
    vision_proj.{p} / text_proj.{p}          vision_projection.{p} / text_projection.{p}
    itm_head.{p}                             itm_head.{p}

The EVA ViT keeps separate ``q_bias`` and ``v_bias`` (no key bias); transformers fuses them
into one ``qkv.bias`` = ``cat(q_bias, 0, v_bias)``; the weight ``qkv.weight`` is fused in
both layouts (rows q, k, v). The inverse splits the bias again (its key third must be 0).

Not part of the retrieval model (returned as *extras*, for the methods that use them):
``temp`` -> ``temp`` (the learnable temperature), ``prompt_tokens`` -> ``prompt_tokens``
(SPRC), ``Qformer_query.bert.<k>`` -> ``qformer_query.<renamed k>`` and ``text_proj_q.{p}``
-> ``text_projection_query.{p}`` (SPN's stage-2 query copies). Ignored: the Q-Former's
language-model head ``Qformer.cls.*`` (and ``Qformer_query.cls.*``) and the
``position_ids`` buffers, which the retrieval model does not have.

Checkpoint containers: a raw state dict, LAVIS's ``{"model": ...}``, SPRC's
``{"epoch": e, "Blip2QformerCirAlignPrompt": ...}``, SPN's ``{"state_dict": ...}`` (keys
prefixed ``blip_model.``), optionally with DDP's ``module.`` prefix.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

#: Placeholders of the rename templates and what they match.
_SLOTS = {
    "i": r"\d+",
    "p": r"weight|bias",
    "fc": r"fc1|fc2",
    "a": r"attention|crossattention",
    "qkv": r"query|key|value",
    "n": r"dense|LayerNorm",
    "ff": r"intermediate|intermediate_query",
    "out": r"output|output_query",
}

#: (LAVIS name, transformers name) of the image side and the heads.
MODEL_RENAMES: tuple[tuple[str, str], ...] = (
    ("visual_encoder.cls_token", "vision_model.embeddings.class_embedding"),
    ("visual_encoder.pos_embed", "vision_model.embeddings.position_embedding"),
    ("visual_encoder.patch_embed.proj.{p}", "vision_model.embeddings.patch_embedding.{p}"),
    ("visual_encoder.blocks.{i}.norm1.{p}", "vision_model.encoder.layers.{i}.layer_norm1.{p}"),
    ("visual_encoder.blocks.{i}.norm2.{p}", "vision_model.encoder.layers.{i}.layer_norm2.{p}"),
    (
        "visual_encoder.blocks.{i}.attn.qkv.weight",
        "vision_model.encoder.layers.{i}.self_attn.qkv.weight",
    ),
    (
        "visual_encoder.blocks.{i}.attn.proj.{p}",
        "vision_model.encoder.layers.{i}.self_attn.projection.{p}",
    ),
    ("visual_encoder.blocks.{i}.mlp.{fc}.{p}", "vision_model.encoder.layers.{i}.mlp.{fc}.{p}"),
    ("ln_vision.{p}", "vision_model.post_layernorm.{p}"),
    ("query_tokens", "query_tokens"),
    ("vision_proj.{p}", "vision_projection.{p}"),
    ("text_proj.{p}", "text_projection.{p}"),
    ("itm_head.{p}", "itm_head.{p}"),
)

#: (LAVIS name below ``Qformer.bert.``, transformers name) of the Q-Former.
QFORMER_RENAMES: tuple[tuple[str, str], ...] = (
    ("embeddings.word_embeddings.weight", "embeddings.word_embeddings.weight"),
    ("embeddings.position_embeddings.weight", "embeddings.position_embeddings.weight"),
    ("embeddings.LayerNorm.{p}", "qformer.layernorm.{p}"),
    ("encoder.layer.{i}.{a}.self.{qkv}.{p}", "qformer.encoder.layer.{i}.{a}.attention.{qkv}.{p}"),
    ("encoder.layer.{i}.{a}.output.{n}.{p}", "qformer.encoder.layer.{i}.{a}.output.{n}.{p}"),
    ("encoder.layer.{i}.{ff}.dense.{p}", "qformer.encoder.layer.{i}.{ff}.dense.{p}"),
    ("encoder.layer.{i}.{out}.{n}.{p}", "qformer.encoder.layer.{i}.{out}.{n}.{p}"),
)

LAVIS_QFORMER = "Qformer.bert."
LAVIS_QFORMER_QUERY = "Qformer_query.bert."
#: Extras key prefix of SPN's stage-2 query copy of the Q-Former (transformers names follow).
EXTRA_QFORMER_QUERY = "qformer_query."
#: (LAVIS name, extras name) of the keys that are not part of the retrieval model.
EXTRA_RENAMES: tuple[tuple[str, str], ...] = (
    ("temp", "temp"),
    ("prompt_tokens", "prompt_tokens"),
    ("text_proj_q.{p}", "text_projection_query.{p}"),
)
#: LAVIS keys dropped on the way in (the Q-Former's LM head, position-id buffers).
IGNORED = re.compile(r"^(Qformer|Qformer_query)\.cls\.|(^|\.)position_ids$")

_Q_BIAS = re.compile(r"^visual_encoder\.blocks\.(\d+)\.attn\.(q|v)_bias$")
_QKV_BIAS = re.compile(r"^vision_model\.encoder\.layers\.(\d+)\.self_attn\.qkv\.bias$")
#: Key prefixes that identify a layout.
LAVIS_MARKERS = ("visual_encoder.", "Qformer.", "ln_vision.", "Qformer_query.")
HF_MARKERS = ("vision_model.", "qformer.", "vision_projection.")
#: Container keys of released checkpoints, in the order they are tried.
CONTAINER_KEYS = ("model", "state_dict")
#: Prefixes stripped from keys (DDP; SPN's ``CIRPlus`` wrapper).
STRIPPED_PREFIXES = ("module.", "blip_model.")


class LavisKeyError(ValueError):
    """A state dict that does not map (names the offending keys)."""


@dataclass(frozen=True)
class _Rule:
    source: re.Pattern[str]
    target: str

    def apply(self, key: str) -> str | None:
        match = self.source.fullmatch(key)
        return None if match is None else self.target.format(**match.groupdict())


def _pattern(template: str) -> re.Pattern[str]:
    parts = re.split(r"\{(\w+)\}", template)
    regex = "".join(
        re.escape(part) if i % 2 == 0 else f"(?P<{part}>{_SLOTS[part]})"
        for i, part in enumerate(parts)
    )
    return re.compile(regex)


def _rules(pairs: tuple[tuple[str, str], ...], reverse: bool = False) -> list[_Rule]:
    return [_Rule(_pattern(b), a) if reverse else _Rule(_pattern(a), b) for a, b in pairs]


_TO_HF = _rules(MODEL_RENAMES)
_TO_LAVIS = _rules(MODEL_RENAMES, reverse=True)
_QF_TO_HF = _rules(QFORMER_RENAMES)
_QF_TO_LAVIS = _rules(QFORMER_RENAMES, reverse=True)
_EXTRA_TO_HF = _rules(EXTRA_RENAMES)
_EXTRA_TO_LAVIS = _rules(EXTRA_RENAMES, reverse=True)


def _first(rules: list[_Rule], key: str) -> str | None:
    for rule in rules:
        if (out := rule.apply(key)) is not None:
            return out
    return None


def qformer_key_to_hf(key: str) -> str | None:
    """A LAVIS Q-Former key below ``Qformer.bert.`` -> its transformers name (or None)."""
    return _first(_QF_TO_HF, key)


def lavis_key_to_hf(key: str) -> str | None:
    """The transformers name of a LAVIS key of the retrieval model (None if it is not one;
    ``q_bias`` / ``v_bias`` map to the fused ``qkv.bias``)."""
    if match := _Q_BIAS.fullmatch(key):
        return f"vision_model.encoder.layers.{match.group(1)}.self_attn.qkv.bias"
    if key.startswith(LAVIS_QFORMER):
        return qformer_key_to_hf(key[len(LAVIS_QFORMER) :])
    return _first(_TO_HF, key)


def hf_key_to_lavis(key: str) -> list[str]:
    """The LAVIS name(s) of a transformers key (two for a fused ``qkv.bias``; [] if none)."""
    if match := _QKV_BIAS.fullmatch(key):
        block = f"visual_encoder.blocks.{match.group(1)}.attn"
        return [f"{block}.q_bias", f"{block}.v_bias"]
    if (name := _first(_QF_TO_LAVIS, key)) is not None:
        return [LAVIS_QFORMER + name]
    return [name] if (name := _first(_TO_LAVIS, key)) is not None else []


@dataclass
class MappedState:
    """A LAVIS state dict mapped to transformers names."""

    model: dict[str, torch.Tensor]
    extras: dict[str, torch.Tensor] = field(default_factory=dict)
    ignored: list[str] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)
    #: transformers / extras name -> the LAVIS name(s) it came from (for error messages)
    sources: dict[str, str] = field(default_factory=dict)


def lavis_to_hf(state: Mapping[str, torch.Tensor]) -> MappedState:
    """Map a LAVIS-layout state dict (see the module docstring); keys that match no rule
    are listed in ``unknown``, not dropped silently."""
    out = MappedState(model={})
    biases: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        if IGNORED.search(key):
            out.ignored.append(key)
        elif match := _Q_BIAS.fullmatch(key):
            biases.setdefault(match.group(1), {})[match.group(2)] = value
        elif key.startswith(LAVIS_QFORMER_QUERY):
            name = qformer_key_to_hf(key[len(LAVIS_QFORMER_QUERY) :])
            if name is None:
                out.unknown.append(key)
            else:
                out.extras[EXTRA_QFORMER_QUERY + name] = value
                out.sources[EXTRA_QFORMER_QUERY + name] = key
        elif (name := lavis_key_to_hf(key)) is not None:
            out.model[name] = value
            out.sources[name] = key
        elif (name := _first(_EXTRA_TO_HF, key)) is not None:
            out.extras[name] = value
            out.sources[name] = key
        else:
            out.unknown.append(key)
    for block, parts in sorted(biases.items(), key=lambda kv: int(kv[0])):
        prefix = f"visual_encoder.blocks.{block}.attn"
        if set(parts) != {"q", "v"}:
            missing = "v_bias" if "q" in parts else "q_bias"
            raise LavisKeyError(f"{prefix}.{missing} is missing (q_bias and v_bias come in pairs)")
        q, v = parts["q"], parts["v"]
        name = f"vision_model.encoder.layers.{block}.self_attn.qkv.bias"
        out.model[name] = torch.cat((q, torch.zeros_like(q), v))
        out.sources[name] = f"{prefix}.q_bias + {prefix}.v_bias"
    return out


def hf_to_lavis(
    state: Mapping[str, torch.Tensor], extras: Mapping[str, torch.Tensor] | None = None
) -> dict[str, torch.Tensor]:
    """The inverse of :func:`lavis_to_hf`: a transformers state dict (and extras) in LAVIS
    layout, the fused ``qkv.bias`` split into ``q_bias`` / ``v_bias``."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        names = hf_key_to_lavis(key)
        if not names:
            raise LavisKeyError(f"{key}: no LAVIS name for this transformers key")
        if len(names) == 2:
            q, k, v = value.chunk(3)
            if torch.any(k != 0):
                raise LavisKeyError(
                    f"{key}: the key third of the bias is not zero (LAVIS has none)"
                )
            out[names[0]], out[names[1]] = q, v
        else:
            out[names[0]] = value
    for key, value in (extras or {}).items():
        if key.startswith(EXTRA_QFORMER_QUERY):
            name = _first(_QF_TO_LAVIS, key[len(EXTRA_QFORMER_QUERY) :])
            lavis = None if name is None else LAVIS_QFORMER_QUERY + name
        else:
            lavis = _first(_EXTRA_TO_LAVIS, key)
        if lavis is None:
            raise LavisKeyError(f"{key}: no LAVIS name for this extra")
        out[lavis] = value
    return out


def unwrap_checkpoint(checkpoint: Any) -> dict[str, torch.Tensor]:
    """The state dict inside a released checkpoint (see the module docstring for the
    containers), with ``module.`` / ``blip_model.`` prefixes removed."""
    state = checkpoint
    if isinstance(state, Mapping) and not _is_tensor_dict(state):
        for key in CONTAINER_KEYS:
            if isinstance(state.get(key), Mapping):
                state = state[key]
                break
        else:  # SPRC: {"epoch": ..., "<model class name>": state_dict}
            inner = [v for v in state.values() if isinstance(v, Mapping) and _is_tensor_dict(v)]
            if len(inner) == 1:
                state = inner[0]
    if not isinstance(state, Mapping) or not _is_tensor_dict(state):
        keys = list(checkpoint)[:5] if isinstance(checkpoint, Mapping) else []
        raise LavisKeyError(
            "expected a state dict (or one under 'model', 'state_dict' or a model class name), "
            f"got {type(checkpoint).__name__} with keys {keys}"
        )
    out = {}
    for key, value in state.items():
        for prefix in STRIPPED_PREFIXES:
            key = key.removeprefix(prefix)
        out[key] = value
    return out


def is_extra_name(key: str) -> bool:
    """Whether a (transformers-side) name is one of the extras (see the module docstring)."""
    return key.startswith(EXTRA_QFORMER_QUERY) or _first(_EXTRA_TO_LAVIS, key) is not None


def layout(state: Mapping[str, Any]) -> str:
    """``"lavis"`` or ``"transformers"``, from the key prefixes."""
    if any(k.startswith(LAVIS_MARKERS) for k in state):
        return "lavis"
    if any(k.startswith(HF_MARKERS) for k in state):
        return "transformers"
    raise LavisKeyError(
        f"neither a LAVIS BLIP-2 state dict (keys starting {', '.join(LAVIS_MARKERS)}) nor a "
        f"transformers one (keys starting {', '.join(HF_MARKERS)}); first keys: {list(state)[:5]}"
    )


def _is_tensor_dict(state: Mapping[Any, Any]) -> bool:
    return bool(state) and all(isinstance(v, torch.Tensor) for v in state.values())
