"""TG-CIR's released layouts (``methods/tgcir.py`` is the architecture they load into).

``tgcir``: the stage-1 file SPN4CIR starts from (``data/tgcir/<data>_stage1.pt``, loaded by
``tgcir/models.py`` ``load_ckpt(..., is_origin=True)``): ``{"state_dict":
VCG_CIR.state_dict()}`` of the original TG-CIR (iLearn-Lab/MM23-TG-CIR ``model.py``; its
``train.py`` pickles the whole model, the state dict is what SPN's loader reads). Keys
(``B`` = ``backbone``)::

    B.clip.<OpenAI CLIP keys>                      clip.<same>
    B.image_backbone.<visual keys>                 (B.clip.visual's tensors: checked, dropped)
    B.tokenlearn.tokenizers.{s}.conv.0.weight (1, D, 1)
                                                   image_heads.token_learner.attention.weight[s]
    B.tokenlearn.tokenizers.{s}.conv.0.bias (1)    image_heads.token_learner.attention.bias[s]
    B.fc.{weight,bias}                                image_heads.projection.*
    B.text_fc.{weight,bias}                           text_heads.projection.*
    B.masks.weight (G, D)                             image_heads.masks
    loss_T (1,)                                       loss_scale ()
    local_weight (G + L)                           token_weights          (loss: original)
    s_remain_map.{0,2}.*                           gate.{0,2}.*
    t_remain_map / t_replace_map.{0,2}.*           teacher.remain / .replace  (loss: original)

The Conv1d attentions (kernel 1, one output channel each) are rows of the one
``Linear(D, S)`` here. The original shares one set of masks and token learner between the
modalities, so the file has no text copies: ``text_heads.masks`` / ``.token_learner`` are
set to copies of the image heads' and ``heads_shared`` to true (SPN deep-copies them the
same way when its stage 2 starts). With ``loss: infonce`` (SPN's variant) the teacher
branch and the token weights are not part of the model and those keys are dropped.

``spn_tgcir``: SPN4CIR's stage-2 ``{"epoch", "state_dict": CIRPlus.state_dict()}``
(``tgcir/utils.py`` ``save_model``): the keys above without ``loss_T`` (SPN's stage 2 uses
a fixed ``tau``: ``loss_scale`` keeps the method's initial value, it does not affect
rankings) and with the text copies ``B.tokenlearn_text.*`` -> ``text_heads.token_learner``,
``B.masks_text.weight`` -> ``text_heads.masks`` (``heads_shared`` false).
"""

from __future__ import annotations

import re
from typing import Any

import torch

from bench.checkpoints.base import (
    CheckpointFormat,
    CheckpointFormatError,
    State,
    container,
    register_format,
)
from bench.checkpoints.clip4cir import CLIP_HYPERPARAMETERS
from methods.base import CIRMethod

_TOKENIZER = re.compile(
    r"^backbone\.(tokenlearn|tokenlearn_text)\.tokenizers\.(\d+)\.conv\.0\.(weight|bias)$"
)
#: released prefix -> method prefix (plain renames).
_RENAMES = (
    ("backbone.fc.", "image_heads.projection."),
    ("backbone.text_fc.", "text_heads.projection."),
    ("s_remain_map.", "gate."),
    ("t_remain_map.", "teacher.remain."),
    ("t_replace_map.", "teacher.replace."),
)
_MASKS = {
    "backbone.masks.weight": "image_heads.masks",
    "backbone.masks_text.weight": "text_heads.masks",
}
_LEARNER = {"tokenlearn": "image_heads", "tokenlearn_text": "text_heads"}
_ORIGINAL_ONLY = ("teacher.", "token_weights")


def _learner(rows: dict[str, dict[int, dict[str, torch.Tensor]]], where: str) -> State:
    """Stack the Conv1d(D, 1, 1) attentions into the heads' Linear(D, S) weight and bias."""
    out: State = {}
    for name, by_index in rows.items():
        indices = sorted(by_index)
        if indices != list(range(len(indices))):
            raise CheckpointFormatError(f"{where}: backbone.{name}.tokenizers: indices {indices}")
        for index in indices:
            if set(by_index[index]) != {"weight", "bias"}:
                raise CheckpointFormatError(
                    f"{where}: backbone.{name}.tokenizers.{index}.conv.0 lacks weight or bias"
                )
        weight = torch.stack([by_index[i]["weight"].reshape(-1) for i in indices])
        bias = torch.cat([by_index[i]["bias"].reshape(-1) for i in indices])
        prefix = f"{_LEARNER[name]}.token_learner.attention."
        out[prefix + "weight"], out[prefix + "bias"] = weight, bias
    return out


def map_tgcir_state(state: State, method: CIRMethod, where: str, stage1: bool) -> State:
    """A VCG_CIR / CIRPlus state dict in the method's key names (module docstring)."""
    out: State = {}
    rows: dict[str, dict[int, dict[str, torch.Tensor]]] = {}
    visual_copy: State = {}
    unknown: list[str] = []
    for key, value in state.items():
        if key.startswith("backbone.clip."):
            name = key.removeprefix("backbone.clip.")
            if name not in CLIP_HYPERPARAMETERS:
                out["clip." + name] = value
        elif key.startswith("backbone.image_backbone."):
            visual_copy[key.removeprefix("backbone.image_backbone.")] = value
        elif match := _TOKENIZER.fullmatch(key):
            rows.setdefault(match[1], {}).setdefault(int(match[2]), {})[match[3]] = value
        elif key in _MASKS:
            out[_MASKS[key]] = value
        elif key == "loss_T":
            out["loss_scale"] = value.reshape(())
        elif key == "local_weight":
            out["token_weights"] = value
        else:
            for old, new in _RENAMES:
                if key.startswith(old):
                    out[new + key[len(old) :]] = value
                    break
            else:
                unknown.append(key)
    if unknown:
        raise CheckpointFormatError(f"{where}: keys of no TG-CIR module: {unknown[:5]}")
    for name, value in visual_copy.items():
        twin = out.get(f"clip.visual.{name}")
        if twin is None or not torch.equal(twin, value):
            raise CheckpointFormatError(
                f"{where}: backbone.image_backbone.{name} is not the same tensor as "
                f"backbone.clip.visual.{name} (the two names of one module in the original)"
            )
    out |= _learner(rows, where)
    own = method.state_dict()
    if stage1:
        if "text_heads.masks" in out or "text_heads.token_learner.attention.weight" in out:
            raise CheckpointFormatError(
                f"{where}: holds text copies of the masks / token learner (backbone.masks_text, "
                "backbone.tokenlearn_text): an SPN stage-2 file, read it as format spn_tgcir"
            )
        for name in ("masks", "token_learner.attention.weight", "token_learner.attention.bias"):
            if f"image_heads.{name}" in out:  # (absent: reported as missing by the check)
                out[f"text_heads.{name}"] = out[f"image_heads.{name}"].clone()
        out["heads_shared"] = torch.tensor(True)
    else:
        out.setdefault("loss_scale", own["loss_scale"].clone())
        out["heads_shared"] = torch.tensor(False)
    if not any(k.startswith(_ORIGINAL_ONLY) for k in own):  # loss: infonce
        out = {k: v for k, v in out.items() if not k.startswith(_ORIGINAL_ONLY)}
    return out


def export_tgcir_state(method: CIRMethod, stage1: bool) -> State:
    """The method's weights as VCG_CIR (``stage1``) / CIRPlus key names."""
    own = {k: v.detach().clone() for k, v in method.state_dict().items()}
    out: State = {}
    for key, value in own.items():
        if key.startswith("clip."):
            out["backbone." + key] = value
            if key.startswith("clip.visual."):
                out["backbone.image_backbone." + key.removeprefix("clip.visual.")] = value
    for old, new in _RENAMES:
        for key, value in own.items():
            if key.startswith(new):
                out[old + key[len(new) :]] = value
    heads = {"tokenlearn": "image_heads"} if stage1 else _LEARNER
    for name, head in heads.items():
        weight = own[f"{head}.token_learner.attention.weight"]
        bias = own[f"{head}.token_learner.attention.bias"]
        for s in range(weight.shape[0]):
            prefix = f"backbone.{name}.tokenizers.{s}.conv.0."
            out[prefix + "weight"] = weight[s].reshape(1, -1, 1).clone()
            out[prefix + "bias"] = bias[s : s + 1].clone()
    out["backbone.masks.weight"] = own["image_heads.masks"]
    if not stage1:
        out["backbone.masks_text.weight"] = own["text_heads.masks"]
    if stage1:
        out["loss_T"] = own["loss_scale"].reshape(1)
    if "token_weights" in own:
        out["local_weight"] = own["token_weights"]
    return out


def _import(stage1: bool) -> Any:
    def run(payloads: list[Any], method: CIRMethod) -> State:
        state = container(payloads[0], "state_dict", "file 1")
        return map_tgcir_state(state, method, "file 1", stage1)

    return run


def _export(stage1: bool) -> Any:
    def run(method: CIRMethod) -> list[Any]:
        record: dict[str, Any] = {"state_dict": export_tgcir_state(method, stage1)}
        if not stage1:
            record = {"epoch": 0, **record}
        return [record]

    return run


TGCIR = register_format(
    CheckpointFormat(
        name="tgcir",
        method="tgcir",
        stage="stage1",
        source="iLearn-Lab/MM23-TG-CIR VCG_CIR state dict, as SPN4CIR reads it "
        "(data/tgcir/<data>_stage1.pt)",
        parts=("state_dict",),
        to_method=_import(True),
        from_method=_export(True),
        not_carried={
            "text_heads.masks / text_heads.token_learner": "copies of the image heads'",
            "heads_shared": "true",
        },
    )
)
SPN_TGCIR = register_format(
    CheckpointFormat(
        name="spn_tgcir",
        method="tgcir",
        stage="stage2",
        source="BUAADreamer/SPN4CIR tgcir/utils.py save_model (checkpoints/<data>_tg/best.pt)",
        parts=("state_dict",),
        to_method=_import(False),
        from_method=_export(False),
        not_carried={"loss_scale": "the method's initial value", "heads_shared": "false"},
    )
)
