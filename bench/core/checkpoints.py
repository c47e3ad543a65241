"""The one checkpoint format of every training loop (the engine's phases, the synthetic
backbone pre-training).

A *resume record* holds everything needed to continue exactly: ``model``, ``optimizer``,
``schedule`` and ``rng`` (the global RNG states), plus the loop's own ``state`` (progress,
history) and optional extras (a loss scaler, a learnable objective). It is written
atomically, so a kill during the write leaves the previous record.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from bench.core.atomic import save_torch_atomic
from bench.core.errors import CirbenchError
from bench.core.runtime import rng_state, set_rng_state


def load_checkpoint_file(path: Path) -> dict[str, Any]:
    """A checkpoint written by :func:`save_torch_atomic`, with an error naming the file."""
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except FileNotFoundError:
        raise CirbenchError(f"{path}: checkpoint not found") from None
    except Exception as exc:
        raise CirbenchError(f"{path}: cannot read checkpoint ({exc})") from exc


def save_resume_record(
    path: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    schedule: torch.optim.lr_scheduler.LRScheduler,
    state: dict[str, Any],
    **extras: Any,
) -> None:
    """Write a resume record (see the module docstring)."""
    record = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "schedule": schedule.state_dict(),
        "state": state,
        "rng": rng_state(),
        **extras,
    }
    save_torch_atomic(record, path)


def restore_resume_record(
    record: dict[str, Any],
    optimizer: torch.optim.Optimizer,
    schedule: torch.optim.lr_scheduler.LRScheduler,
) -> None:
    """Load the optimiser and schedule states of a record (the model is loaded by the
    caller, often before the optimiser exists); the RNG states are restored by
    :func:`restore_rng`."""
    optimizer.load_state_dict(record["optimizer"])
    schedule.load_state_dict(record["schedule"])


def restore_rng(record: dict[str, Any]) -> None:
    """The global RNG states of a resume record."""
    set_rng_state(record["rng"])
