"""BLIP4CIR+Bi's and SPRC's released layouts; the backbone-level key mappings they use live
with their backbone families (:func:`bench.backbones.blip.map_blip_state_dict`,
:mod:`bench.backbones.lavis_keys`), which also read these files as ``pretrained``.

``blip4cir``: Candidate-Reranking-CIR stage I (``src/utils.py`` ``save_model``:
``{"epoch", "BLIP_Retrieval": sd}``, SPN4CIR ``data/blip4cir/<data>_stage1.pt``, read by
``blip4cir/models.py`` ``load_ckpt(is_origin=True)``): BLIP's own keys
(``visual_encoder.*``, ``text_encoder.*``, ``vision_proj``, ``text_proj``, ``temp``, plus the
ITM head, momentum encoders and queues CIR does not use) -> ``blip.<BlipCIRModel keys>``.

``spn_blip4cir``: SPN4CIR's stage 2 ``{"epoch", "state_dict": CIRPlus.state_dict()}``
(``blip4cir/utils.py``): the same keys under ``blip.``, and ``tau`` (its bank temperature,
dropped).

``sprc``: SPRC (chunmeifeng/SPRC ``src/utils.py`` ``save_model``: ``{"epoch",
"Blip2QformerCirAlignPrompt": sd}``) in LAVIS names -> ``blip2.<transformers names>``,
``prompt_tokens``, ``temp`` -> ``temperature``; the Q-Former's LM head and the
position-id buffers dropped. ``query_offset`` (the text pass's own copy of the Q-Former,
as an offset) is not carried: zero, i.e. the shared Q-Former, as SPRC's text pass uses.

``spn_sprc``: SPN4CIR's stage 2 ``{"epoch", "state_dict": CIRPlus.state_dict()}``
(``blip24cir/utils.py``): the LAVIS keys under ``blip_model.``, plus SPN's query copies
``Qformer_query.bert.*`` (-> ``query_offset`` = copy - shared) and ``text_proj_q`` (SPN's
inference projects the query with it -> ``blip2.text_projection``).
"""

from __future__ import annotations

from typing import Any

import torch

from bench.backbones.blip import blip_released_state, map_blip_state_dict
from bench.backbones.lavis_keys import LavisKeyError, hf_to_lavis, lavis_to_hf
from bench.checkpoints.base import (
    CheckpointFormat,
    CheckpointFormatError,
    State,
    add_prefix,
    container,
    register_format,
    strip_prefix,
)
from bench.core.errors import CirbenchError
from methods.base import CIRMethod
from methods.sprc import extras_state

#: SPN4CIR's BLIP4CIR stage-2 temperature (a parameter of CIRPlus, not of BLIP).
SPN_BLIP_TAU = "tau"


def _blip_model(state: State, method: CIRMethod, where: str) -> State:
    try:
        mapped = map_blip_state_dict(state, method.blip, where)  # type: ignore[attr-defined]
    except CirbenchError as exc:
        raise CheckpointFormatError(str(exc)) from None
    return add_prefix(mapped, "blip.")


def _import_blip4cir(payloads: list[Any], method: CIRMethod) -> State:
    return _blip_model(container(payloads[0], "BLIP_Retrieval", "file 1"), method, "file 1")


def _import_spn_blip4cir(payloads: list[Any], method: CIRMethod) -> State:
    state = container(payloads[0], "state_dict", "file 1")
    state.pop(SPN_BLIP_TAU, None)
    return _blip_model(strip_prefix(state, "blip.", "file 1"), method, "file 1")


def _blip_state(method: CIRMethod) -> State:
    own = {k: v for k, v in method.state_dict().items() if k.startswith("blip.")}
    return blip_released_state(strip_prefix(own, "blip.", "model"))


def _export_blip4cir(method: CIRMethod) -> list[Any]:
    return [{"epoch": 0, "BLIP_Retrieval": _blip_state(method)}]


def _export_spn_blip4cir(method: CIRMethod) -> list[Any]:
    state = add_prefix(_blip_state(method), "blip.")
    state[SPN_BLIP_TAU] = torch.tensor(0.03)
    return [{"epoch": 0, "state_dict": state}]


def _sprc_state(state: State, method: CIRMethod, where: str) -> State:
    try:
        mapped = lavis_to_hf(state)
    except LavisKeyError as exc:
        raise CheckpointFormatError(f"{where}: {exc}") from None
    if mapped.unknown:
        raise CheckpointFormatError(f"{where}: keys of no BLIP-2 module: {mapped.unknown[:5]}")
    own = method.state_dict()
    out = add_prefix(mapped.model, "blip2.")
    # query_offset needs the checkpoint's shared Q-Former, not the model's current one
    try:
        out |= extras_state(mapped.extras, own | out)
    except ValueError as exc:
        raise CheckpointFormatError(f"{where}: {exc}") from None
    for key in own:
        if key.startswith("query_offset.") and key not in out:
            out[key] = torch.zeros_like(own[key])
    return out


def _import_sprc(payloads: list[Any], method: CIRMethod) -> State:
    return _sprc_state(
        container(payloads[0], "Blip2QformerCirAlignPrompt", "file 1"), method, "file 1"
    )


def _import_spn_sprc(payloads: list[Any], method: CIRMethod) -> State:
    state = strip_prefix(container(payloads[0], "state_dict", "file 1"), "blip_model.", "file 1")
    return _sprc_state(state, method, "file 1")


def _sprc_lavis(method: CIRMethod, stage2: bool) -> State:
    own = {k: v.detach().clone() for k, v in method.state_dict().items()}
    model = strip_prefix({k: v for k, v in own.items() if k.startswith("blip2.")}, "blip2.", "")
    extras = {"prompt_tokens": own["prompt_tokens"], "temp": own["temperature"].reshape(())}
    if stage2:
        for key, value in own.items():
            if key.startswith("query_offset."):
                name = key.removeprefix("query_offset.")
                extras[f"qformer_query.{name}"] = model[name] + value
        for param in ("weight", "bias"):
            extras[f"text_projection_query.{param}"] = model[f"text_projection.{param}"]
    return hf_to_lavis(model, extras)


def _export_sprc(method: CIRMethod) -> list[Any]:
    return [{"epoch": 0, "Blip2QformerCirAlignPrompt": _sprc_lavis(method, stage2=False)}]


def _export_spn_sprc(method: CIRMethod) -> list[Any]:
    state = add_prefix(_sprc_lavis(method, stage2=True), "blip_model.")
    return [{"epoch": 0, "state_dict": state}]


BLIP4CIR = register_format(
    CheckpointFormat(
        name="blip4cir",
        method="blip4cir_bi",
        stage="stage1",
        source="Candidate-Reranking-CIR src/utils.py save_model (BLIP_Retrieval), stage I",
        parts=("BLIP_Retrieval",),
        to_method=_import_blip4cir,
        from_method=_export_blip4cir,
    )
)
SPN_BLIP4CIR = register_format(
    CheckpointFormat(
        name="spn_blip4cir",
        method="blip4cir_bi",
        stage="stage2",
        source="BUAADreamer/SPN4CIR blip4cir/utils.py save_model (checkpoints/<data>_blip/best.pt)",
        parts=("state_dict",),
        to_method=_import_spn_blip4cir,
        from_method=_export_spn_blip4cir,
    )
)
SPRC = register_format(
    CheckpointFormat(
        name="sprc",
        method="sprc",
        stage="stage1",
        source="chunmeifeng/SPRC src/utils.py save_model (Blip2QformerCirAlignPrompt)",
        parts=("Blip2QformerCirAlignPrompt",),
        to_method=_import_sprc,
        from_method=_export_sprc,
        not_carried={"query_offset": "zero (the text pass uses the shared Q-Former)"},
    )
)
SPN_SPRC = register_format(
    CheckpointFormat(
        name="spn_sprc",
        method="sprc",
        stage="stage2",
        source="BUAADreamer/SPN4CIR blip24cir/utils.py save_model "
        "(checkpoints/<data>_blip2/best.pt)",
        parts=("state_dict",),
        to_method=_import_spn_sprc,
        from_method=_export_spn_sprc,
    )
)
