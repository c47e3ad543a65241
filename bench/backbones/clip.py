"""CLIP backbones from open_clip: an architecture name plus a weights source.

Weights sources (``pretrained``):

* an open_clip pretrained tag (``"openai"``, ``"laion2b_s34b_b79k"``, ...), downloaded
  and cached by open_clip on machines that can reach its hub;
* a path to a local checkpoint file (an open_clip / OpenAI state dict, or a cirbench
  backbone checkpoint written by ``cirbench backbone pretrain``);
* ``None`` / ``"random"``: random initialisation (seeded), for tests and smoke runs.

cirbench ships its own small architecture configs in ``model_configs/`` (e.g.
``cirbench-tiny``, the synthetic world's CLIP); they are registered with open_clip on
first use, so they load through exactly the same code path as ViT-B-16 or RN50x4.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from bench.backbones.base import Backbone, BackboneError
from bench.core.hashing import file_digest
from bench.images.transforms import TargetPadTransform

MODEL_CONFIG_DIR = Path(__file__).parent / "model_configs"
_configs_registered = False


def register_model_configs() -> None:
    """Make cirbench's own architecture configs known to open_clip (idempotent)."""
    global _configs_registered
    if not _configs_registered:
        import open_clip

        open_clip.add_model_config(MODEL_CONFIG_DIR)
        _configs_registered = True


def list_architectures() -> list[str]:
    register_model_configs()
    import open_clip

    return open_clip.list_models()


def _model_cfg(arch: str) -> dict[str, Any]:
    import open_clip

    cfg = open_clip.get_model_config(arch)
    if cfg is None:
        raise BackboneError(
            f"unknown open_clip architecture {arch!r}; see `open_clip.list_models()` "
            f"or add a JSON config to {MODEL_CONFIG_DIR}"
        )
    return cfg


@contextlib.contextmanager
def _quiet_random_init_warning() -> Iterator[None]:
    """Drop open_clip's "No pretrained weights loaded ... initialized randomly" warning
    (logged on the root logger), which is wrong where a checkpoint file is loaded next."""

    def keep(record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("No pretrained weights loaded")

    root = logging.getLogger()
    root.addFilter(keep)
    try:
        yield
    finally:
        root.removeFilter(keep)


def load(
    arch: str, pretrained: str | Path | None, seed: int, target_pad_ratio: float | None
) -> Backbone:
    """The open_clip family loader (see the module docstring for the weights sources)."""
    register_model_configs()
    import open_clip

    cfg = _model_cfg(arch)
    source = None if pretrained in (None, "", "random") else str(pretrained)
    torch.manual_seed(seed)
    if source is None:  # random weights asked for: open_clip's warning says what we know
        with _quiet_random_init_warning():
            model = open_clip.create_model(arch, pretrained=None)
        weights = f"{arch}:random:seed={seed}"
    elif Path(source).expanduser().exists() or "/" in source or source.endswith((".pt", ".bin")):
        path = Path(source).expanduser()
        if not path.is_file():
            raise BackboneError(f"{path}: backbone checkpoint file not found")
        with _quiet_random_init_warning():  # the weights come from the file next
            model = open_clip.create_model(arch, pretrained=None)
        load_checkpoint(model, path)
        weights = f"{arch}:file:{file_digest(path)}"
    else:
        tags = open_clip.list_pretrained_tags_by_model(arch)
        if source not in tags:
            raise BackboneError(
                f"open_clip has no pretrained tag {source!r} for {arch!r} "
                f"(known: {', '.join(tags) or 'none'}); pass a local checkpoint path instead"
            )
        try:
            model = open_clip.create_model(arch, pretrained=source)
        except Exception as exc:  # network errors come in many types
            raise BackboneError(
                f"cannot get pretrained weights {arch}/{source} ({type(exc).__name__}: {exc}); "
                "on a machine without internet, download them elsewhere and pass the "
                "checkpoint file's path as `pretrained`"
            ) from exc
        weights = f"{arch}:{source}"
    model.eval()
    image_size = cfg["vision_cfg"]["image_size"]
    context_length = cfg["text_cfg"].get("context_length", 77)
    return Backbone(
        arch=arch,
        weights=weights,
        model=model,
        tokenizer=open_clip.get_tokenizer(arch, context_length=context_length),
        transform=TargetPadTransform(size=image_size, ratio=target_pad_ratio),
        embed_dim=cfg["embed_dim"],
        context_length=context_length,
    )


def load_checkpoint(model: torch.nn.Module, path: Path) -> None:
    """Load a state dict saved by open_clip, OpenAI CLIP or cirbench into ``model``.

    Accepts a raw state dict, ``{"state_dict": ...}`` (open_clip training checkpoints,
    with an optional ``module.`` prefix from DDP) or ``{"model": ...}`` (cirbench).
    """
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise BackboneError(f"{path}: cannot read checkpoint ({exc})") from exc
    if isinstance(checkpoint, torch.jit.ScriptModule):  # pragma: no cover - OpenAI JIT files
        checkpoint = checkpoint.state_dict()
    state = checkpoint
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
    if not isinstance(state, dict):
        raise BackboneError(f"{path}: expected a state dict, got {type(state).__name__}")
    state = {k.removeprefix("module."): v for k, v in state.items()}
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shape mismatches
        first = str(exc).split("\n\t")[1:2] or [str(exc)]
        raise BackboneError(
            f"{path}: checkpoint does not match the architecture: {first[0].strip()}"
        ) from None
    if result.missing_keys or result.unexpected_keys:
        raise BackboneError(
            f"{path}: checkpoint does not match the architecture: "
            f"{len(result.missing_keys)} missing keys (e.g. {result.missing_keys[:3]}), "
            f"{len(result.unexpected_keys)} unexpected keys (e.g. {result.unexpected_keys[:3]})"
        )
