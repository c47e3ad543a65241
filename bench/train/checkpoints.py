"""A run's state on disk: progress (``last.pt``'s ``state``), the best checkpoint and the
result record of a finished run.

``runs/<name>-<digest>/`` holds ``spec.yaml``, ``best.pt`` (the best epoch of the last
phase: weights, phase, metrics, spec), ``last.pt`` (a resume record, see
:mod:`bench.core.checkpoints`; deleted once the run finishes, as it only serves resuming)
and ``result.json`` (final metrics, per-epoch history, seconds, cache statistics, the
MLflow run id): its presence marks a finished run.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.core import distributed
from bench.core.atomic import save_torch_atomic, write_json_atomic
from bench.core.errors import CirbenchError


class RunStateError(CirbenchError):
    """A run folder holds state that conflicts with the request (e.g. resume without it)."""


def save_main(obj: Any, path: Path) -> None:
    """:func:`save_torch_atomic` on rank 0 only (every rank holds the same weights)."""
    if distributed.is_main():
        save_torch_atomic(obj, path)


@dataclass
class TrainState:
    """Progress of a run; saved in ``last.pt`` so that a resumed run continues exactly."""

    phase_index: int = 0
    epochs_done: int = 0  # completed epochs of the current phase
    global_epoch: int = 0  # completed epochs over all phases (the MLflow step)
    best_value: float = -math.inf
    best_epoch: int = -1
    best_metrics: dict[str, float] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    mlflow_run_id: str | None = None
    #: seconds this invocation spent building the session (data, weights, generated
    #: triplets, bank features; a first run includes a one-off pre-training)
    setup_seconds: float = 0.0

    def start_phase(self, phase_index: int) -> None:
        """Enter a phase from its start (a phase selects its own best epoch)."""
        self.phase_index, self.epochs_done = phase_index, 0
        self.best_value, self.best_epoch, self.best_metrics = -math.inf, -1, {}


@dataclass
class TrainResult:
    run_dir: Path
    metrics: dict[str, float]
    history: list[dict[str, Any]]
    seconds: float
    cache: dict[str, float]
    mlflow_run_id: str | None
    #: seconds building the session before training (0 in older results)
    setup_seconds: float = 0.0

    @property
    def best_checkpoint(self) -> Path:
        return self.run_dir / "best.pt"

    def save(self) -> None:
        record = {
            "metrics": self.metrics,
            "history": self.history,
            "seconds": self.seconds,
            "cache": self.cache,
            "mlflow_run_id": self.mlflow_run_id,
            "setup_seconds": self.setup_seconds,
        }
        write_json_atomic(self.run_dir / "result.json", record)

    @classmethod
    def load(cls, run_dir: Path) -> TrainResult | None:
        """The result of a finished run, ``None`` if the run never finished."""
        path = run_dir / "result.json"
        if not path.is_file():
            return None
        record = json.loads(path.read_text())
        return cls(run_dir=run_dir, **record)
