"""Where cirbench keeps generated data, caches and runs (all under ``CIRBENCH_HOME``, default
the current directory): ``data/`` synthetic datasets, ``cache/`` pixels, features and
pre-trained backbones, ``runs/`` checkpoints and run records."""

from __future__ import annotations

import os
from pathlib import Path


def home() -> Path:
    return Path(os.environ.get("CIRBENCH_HOME", ".")).resolve()


def data_dir() -> Path:
    return home() / "data"


def cache_dir() -> Path:
    return home() / "cache"


def runs_dir() -> Path:
    return home() / "runs"


def synthetic_root(size: str = "default", seed: int = 0) -> Path:
    """Folder of the synthetic benchmark of a given size and seed."""
    return data_dir() / f"synthetic-{size}-seed{seed}"
