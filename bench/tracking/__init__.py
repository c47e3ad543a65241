"""MLflow tracking for every train / evaluate / pre-train run: the store and its naming
rules (:mod:`~bench.tracking.store`), the tags every run carries
(:mod:`~bench.tracking.tags`) and the run context manager (:mod:`~bench.tracking.run`)."""

from bench.tracking.run import TrackedRun
from bench.tracking.store import (
    UI_ENV,
    TrackingError,
    client,
    default_tracking_uri,
    find_runs,
    metric_key,
    ui_command,
    with_lock_retry,
)

__all__ = [
    "UI_ENV",
    "TrackedRun",
    "TrackingError",
    "client",
    "default_tracking_uri",
    "find_runs",
    "metric_key",
    "ui_command",
    "with_lock_retry",
]
