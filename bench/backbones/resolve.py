"""The one resolver of ``pretrained`` sources: ``synthetic`` becomes the cached pre-trained
backbone of the synthetic benchmark a dataset belongs to; anything else passes through to
the backbone family (an open_clip tag, a checkpoint file, ``random``, ``hf``, ...)."""

from __future__ import annotations

import json
from pathlib import Path

from bench.backbones.pretrain import ensure_synthetic_backbone

#: ``pretrained`` value that selects the synthetic world's pre-trained backbone.
SYNTHETIC_WEIGHTS = "synthetic"


def resolve_weights(
    arch: str,
    pretrained: str | None,
    *,
    synthetic_size: str,
    synthetic_seed: int,
    progress: bool = True,
) -> str | None:
    """``pretrained`` as the family loaders take it (see the module docstring)."""
    if pretrained != SYNTHETIC_WEIGHTS:
        return pretrained
    path = ensure_synthetic_backbone(
        arch, size=synthetic_size, seed=synthetic_seed, progress=progress
    )
    return str(path)


def synthetic_world_of(dataset_root: Path) -> tuple[str, int]:
    """(size, seed) of the synthetic benchmark a dataset folder belongs to, read from its
    ``synthetic.json``; an error when the folder is not part of one."""
    summary = Path(dataset_root).resolve().parent / "synthetic.json"
    if not summary.is_file():
        raise FileNotFoundError(
            f"{summary}: backbone.pretrained 'synthetic' needs the dataset to be part of the "
            "synthetic benchmark; give a checkpoint path or an open_clip tag instead"
        )
    info = json.loads(summary.read_text(encoding="utf-8"))
    return info["size"], int(info["seed"])
