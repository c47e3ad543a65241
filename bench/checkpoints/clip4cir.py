"""CLIP4CIR's released layouts.

``clip4cir`` (ABaldrati/CLIP4Cir ``src/utils.py`` ``save_model``: ``torch.save({"epoch": e,
model.__class__.__name__: model.state_dict()})``), two files:

* the fine-tuned CLIP (``clip_fine_tune.py``: ``tuned_clip_best.pt``):
  ``{"epoch", "CLIP": <OpenAI CLIP state dict>}``; OpenAI's key names are open_clip's
  (``visual.*``, ``transformer.*``, ``token_embedding.weight``, ``positional_embedding``,
  ``ln_final.*``, ``text_projection``, ``logit_scale``) -> ``clip.<same>``. The training
  script casts CLIP to float32 before fine-tuning, a CLIP saved straight from
  ``clip.load`` on a GPU is float16: either dtype is read and cast to the model's;
* the Combiner (``combiner_train.py``: ``combiner.pt``): ``{"epoch", "Combiner": ...}``
  with ``text_projection_layer``, ``image_projection_layer``, ``combiner_layer``,
  ``output_layer``, ``dynamic_scalar.0`` / ``.3`` (the gate's two Linear layers) ->
  ``combiner.{text_projection, image_projection, combiner_layer, output_layer,
  gate_hidden, gate_output}``.

The Combiner file is optional only for a method without a Combiner
(``method.params.use_combiner: false``): SPN's bank stage uses the CLIP file alone.

``spn_clip4cir`` (BUAADreamer/SPN4CIR ``clip4cir/utils.py`` ``save_model``:
``{"epoch", "state_dict": CIRPlus.state_dict()}``): ``clip.<OpenAI CLIP keys>`` in
float32 (``CIRPlus`` holds the CLIP under ``.clip``; ``tau`` is a plain float, not saved).
It has no Combiner either (SPN's CLIP4CIR scores with the element-wise sum).
"""

from __future__ import annotations

from typing import Any

from bench.checkpoints.base import (
    CheckpointFormat,
    CheckpointFormatError,
    State,
    add_prefix,
    container,
    register_format,
    strip_prefix,
)
from methods.base import CIRMethod

#: CLIP4Cir Combiner key -> cirbench Combiner key (below ``combiner.``).
COMBINER_KEYS = {
    "text_projection_layer": "text_projection",
    "image_projection_layer": "image_projection",
    "combiner_layer": "combiner_layer",
    "output_layer": "output_layer",
    "dynamic_scalar.0": "gate_hidden",
    "dynamic_scalar.3": "gate_output",
}
#: OpenAI CLIP state-dict keys that are hyperparameters, not weights (JIT archives).
CLIP_HYPERPARAMETERS = ("input_resolution", "context_length", "vocab_size")


def clip_state(state: State, where: str) -> State:
    """An OpenAI / open_clip CLIP state dict as the method's ``clip.*`` keys."""
    return add_prefix({k: v for k, v in state.items() if k not in CLIP_HYPERPARAMETERS}, "clip.")


def combiner_state(state: State, where: str) -> State:
    out: State = {}
    for key, value in state.items():
        module, _, param = key.rpartition(".")
        if module not in COMBINER_KEYS:
            raise CheckpointFormatError(
                f"{where}: Combiner key {key!r} is not one of CLIP4Cir's "
                f"({', '.join(COMBINER_KEYS)})"
            )
        out[f"combiner.{COMBINER_KEYS[module]}.{param}"] = value
    return out


def _import_clip4cir(payloads: list[Any], method: CIRMethod) -> State:
    state = clip_state(container(payloads[0], "CLIP", "file 1 (CLIP)"), "file 1")
    if len(payloads) > 1:
        state |= combiner_state(container(payloads[1], "Combiner", "file 2 (Combiner)"), "file 2")
    return state


def _export_clip4cir(method: CIRMethod, half: bool = False) -> list[Any]:
    own = method.state_dict()
    clip = strip_prefix({k: v for k, v in own.items() if k.startswith("clip.")}, "clip.", "")
    if half:
        clip = {k: v.half() if v.is_floating_point() else v for k, v in clip.items()}
    files: list[Any] = [{"epoch": 0, "CLIP": clip}]
    inverse = {v: k for k, v in COMBINER_KEYS.items()}
    combiner = {k: v for k, v in own.items() if k.startswith("combiner.")}
    if combiner:
        renamed = {}
        for key, value in combiner.items():
            module, _, param = key.removeprefix("combiner.").rpartition(".")
            renamed[f"{inverse[module]}.{param}"] = value
        files.append({"epoch": 0, "Combiner": renamed})
    return files


def export_clip4cir_half(method: CIRMethod) -> list[Any]:
    """The CLIP file in float16, as a CLIP saved from ``clip.load``'s GPU model."""
    return _export_clip4cir(method, half=True)


def _import_spn(payloads: list[Any], method: CIRMethod) -> State:
    return container(payloads[0], "state_dict", "file 1")


def _export_spn(method: CIRMethod) -> list[Any]:
    own = method.state_dict()
    return [{"epoch": 0, "state_dict": {k: v for k, v in own.items() if k.startswith("clip.")}}]


CLIP4CIR = register_format(
    CheckpointFormat(
        name="clip4cir",
        method="clip4cir",
        stage="stage1",
        source="ABaldrati/CLIP4Cir src/utils.py save_model (tuned_clip_best.pt + combiner.pt)",
        parts=("CLIP", "Combiner"),
        optional=("Combiner",),
        to_method=_import_clip4cir,
        from_method=_export_clip4cir,
    )
)
SPN_CLIP4CIR = register_format(
    CheckpointFormat(
        name="spn_clip4cir",
        method="clip4cir",
        stage="stage2",
        source="BUAADreamer/SPN4CIR clip4cir/utils.py save_model (checkpoints/<data>_clip/best.pt)",
        parts=("state_dict",),
        to_method=_import_spn,
        from_method=_export_spn,
    )
)
