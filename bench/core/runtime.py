"""Where and how a computation runs: the device, seeding, RNG state, mixed precision."""

from __future__ import annotations

import os
import random
from typing import Any

import numpy as np
import torch

from bench.core import distributed
from bench.core.errors import CirbenchError


def select_device(name: str = "auto") -> torch.device:
    """``auto``: CUDA when available, else the CPU; under torchrun, this rank's GPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise CirbenchError(f"device {name!r} requested but CUDA is not available")
    return distributed.device(name)


#: cores this process may use when it is one of several workers (``set_core_share``)
_core_share: int | None = None


def set_core_share(cores: int) -> None:
    """Declare this process one worker of a pool, entitled to ``cores`` cores: its torch
    threads and its default image-decoding workers (``train.num_workers: 0``) follow."""
    global _core_share
    _core_share = max(1, int(cores))
    torch.set_num_threads(_core_share)


def default_workers() -> int:
    """The machine's cores available to this process (its share, in a worker pool)."""
    if _core_share is not None:
        return _core_share
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def resolve_workers(workers: int | None) -> int:
    """A worker-process count as settings give it (``train.num_workers``): ``None`` or 0
    mean the machine's cores, 1 this process alone."""
    return default_workers() if not workers else int(workers)


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    """The global RNG states (saved in resume checkpoints: dropout continues exactly)."""
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def autocast(device: torch.device) -> torch.autocast:
    """Mixed precision on CUDA (bfloat16 when supported, else float16); off on CPU."""
    if device.type == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast("cuda", dtype=dtype)
    return torch.autocast("cpu", enabled=False)


def grad_scaler(device: torch.device) -> torch.amp.GradScaler:
    """A loss scaler, active only for float16 autocast (CUDA without bfloat16)."""
    return torch.amp.GradScaler(
        "cuda", enabled=device.type == "cuda" and not torch.cuda.is_bf16_supported()
    )
