"""One MLflow run as a context manager (:class:`TrackedRun`).

It talks to the store through an ``MlflowClient`` (it does not become the
``mlflow.active_run()`` of the fluent API). The run ends FINISHED, FAILED (tag
``cirbench.error`` + artifact ``error.txt``) or KILLED (``KeyboardInterrupt``; the CLI
turns SIGTERM into one). Under ``torchrun`` only rank 0 logs
(:func:`~bench.tracking.tags.is_main_process`). A resumed run replaces rather than repeats
the metric points it logged before the interruption: a point at a (key, step) the run
already holds is not logged again (a resume redoes an epoch bit for bit; a differing value
is logged beside the old one, with a warning).
"""

from __future__ import annotations

import contextvars
import logging
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

from bench.tracking.store import (
    MAX_ERROR_TAG_LENGTH,
    MAX_METRICS_PER_BATCH,
    MAX_PARAMS_PER_BATCH,
    TrackingError,
    batches,
    client,
    default_tracking_uri,
    get_or_create_experiment,
    metric_key,
    param_value,
    with_lock_retry,
)
from bench.tracking.tags import is_main_process, run_tags

log = logging.getLogger(__name__)

#: Enabled runs open in this context, innermost last (parents of ``nested=True`` runs).
_ACTIVE: contextvars.ContextVar[tuple[TrackedRun, ...]] = contextvars.ContextVar(
    "cirbench_active_runs", default=()
)


class TrackedRun:
    """One MLflow run as a context manager; every method is a no-op when disabled.

    ``enabled=None`` (default) or ``True`` logs only on the main process
    (:func:`is_main_process`), so ranks != 0 under ``torchrun`` never open runs;
    ``False`` disables tracking. ``nested=True`` without ``parent_run_id`` nests under
    the innermost enclosing :class:`TrackedRun` (or the fluent active run). ``run_id``
    continues an existing run (resume): params already logged are kept, new ones added;
    if that run is gone from the store a new run is started.
    """

    def __init__(
        self,
        experiment: str,
        run_name: str,
        *,
        params: dict[str, Any],
        tags: dict[str, Any] | None = None,
        nested: bool = False,
        parent_run_id: str | None = None,
        tracking_uri: str | None = None,
        enabled: bool | None = None,
        run_id: str | None = None,
    ) -> None:
        self.experiment = experiment
        self.run_name = run_name
        self.params = dict(params)
        self.tags = dict(tags or {})
        self.nested = nested
        self.parent_run_id = parent_run_id
        self.tracking_uri = tracking_uri
        self.enabled = (True if enabled is None else enabled) and is_main_process()
        self._resume_id = run_id
        self._run_id: str | None = None
        self._client: Any = None
        self._token: contextvars.Token[tuple[TrackedRun, ...]] | None = None
        self._previous_uri: str | None = None
        #: (metric key, step) -> value of what a resumed run had logged
        self._logged: dict[tuple[str, int], float] = {}

    @property
    def run_id(self) -> str | None:
        """The MLflow run id (``None`` when disabled or not entered)."""
        return self._run_id

    # ----------------------------------------------------------------- lifecycle

    def __enter__(self) -> TrackedRun:
        if not self.enabled:
            return self
        import mlflow

        uri = self.tracking_uri or default_tracking_uri()
        self.tracking_uri = uri
        self._previous_uri = mlflow.get_tracking_uri()
        mlflow.set_tracking_uri(uri)
        try:
            self._client = client(uri)
            self._run_id = self._resume() or self._create()
            self._log_params(self.params)
        except BaseException:
            if self._run_id is not None:
                self._safe(self._client.set_terminated, self._run_id, "FAILED")
            mlflow.set_tracking_uri(self._previous_uri)
            raise
        self._token = _ACTIVE.set((*_ACTIVE.get(), self))
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if not self.enabled or self._run_id is None:
            return
        import mlflow

        if self._token is not None:
            try:
                _ACTIVE.reset(self._token)
            except ValueError:  # exited in another context than entered
                _ACTIVE.set(tuple(r for r in _ACTIVE.get() if r is not self))
            self._token = None
        try:
            if exc_type is None or (
                issubclass(exc_type, SystemExit) and exc is not None and exc.code in (0, None)
            ):
                with_lock_retry(self._client.set_terminated, self._run_id, "FINISHED")
            elif exc_type.__name__ == "TrialPruned":  # an Optuna study stopped this trial
                self._safe(self._client.set_tag, self._run_id, "cirbench.pruned", "true")
                self._safe(self._client.set_terminated, self._run_id, "KILLED")
            elif issubclass(exc_type, Exception):
                self._record_failure(exc_type, exc, tb)
            else:  # KeyboardInterrupt and other BaseExceptions
                self._safe(self._client.set_terminated, self._run_id, "KILLED")
        finally:
            if self._previous_uri is not None:
                mlflow.set_tracking_uri(self._previous_uri)

    def _resume(self) -> str | None:
        if not self._resume_id:
            return None
        from mlflow.exceptions import MlflowException

        try:
            run = with_lock_retry(self._client.get_run, self._resume_id)
        except MlflowException as exc:
            log.warning(
                "cannot resume MLflow run %s (%s); starting a new run", self._resume_id, exc
            )
            return None
        if run.info.lifecycle_stage == "deleted":
            log.warning("MLflow run %s is deleted; starting a new run", self._resume_id)
            return None
        with_lock_retry(self._client.update_run, run.info.run_id, status="RUNNING")
        logged = run.data.params
        changed = [
            k
            for k, v in self.params.items()
            if metric_key(k) in logged and logged[metric_key(k)] != param_value(v)
        ]
        if changed:
            log.warning(
                "resumed run %s: params changed since it started: %s", run.info.run_id, changed
            )
        self.params = {k: v for k, v in self.params.items() if metric_key(k) not in logged}
        for key in run.data.metrics:
            history = with_lock_retry(self._client.get_metric_history, run.info.run_id, key)
            self._logged.update({(key, m.step): m.value for m in history})
        self._run_id = run.info.run_id
        self._set_tags_now(run_tags(self.tags))
        return self._run_id

    def _create(self) -> str:
        experiment_id = get_or_create_experiment(self._client, self.tracking_uri, self.experiment)
        tags = run_tags(self.tags)
        parent = self._parent_id()
        if parent is not None:
            tags["mlflow.parentRunId"] = parent
        run = with_lock_retry(
            self._client.create_run, experiment_id, run_name=self.run_name, tags=tags
        )
        return run.info.run_id

    def _parent_id(self) -> str | None:
        if self.parent_run_id is not None:
            return self.parent_run_id
        if not self.nested:
            return None
        active = _ACTIVE.get()
        if active:
            return active[-1].run_id
        import mlflow

        fluent = mlflow.active_run()
        if fluent is not None:
            return fluent.info.run_id
        raise TrackingError(
            f"run {self.run_name!r}: nested=True but no enclosing run; open the parent "
            "TrackedRun first or pass parent_run_id"
        )

    def _record_failure(
        self, exc_type: type[BaseException], exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        message = f"{exc_type.__name__}: {exc}"[:MAX_ERROR_TAG_LENGTH]
        text = "".join(traceback.format_exception(exc_type, exc, tb))
        self._safe(self._client.set_tag, self._run_id, "cirbench.error", message)
        self._safe(self._client.log_text, self._run_id, text, "error.txt")
        self._safe(self._client.set_terminated, self._run_id, "FAILED")

    def _safe(self, fn: Callable[..., Any], *args: Any) -> None:
        """Best effort while another exception is propagating: never mask it."""
        try:
            with_lock_retry(fn, *args)
        except Exception as exc:
            log.warning("MLflow: %s failed while ending run %s: %s", fn.__name__, self._run_id, exc)

    # ----------------------------------------------------------------- logging

    def _log_params(self, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(metric_key(k), param_value(v)) for k, v in params.items()]
        for batch in batches(items, MAX_PARAMS_PER_BATCH):
            with_lock_retry(self._client.log_batch, self._run_id, params=batch)

    def _set_tags_now(self, tags: dict[str, Any]) -> None:
        from mlflow.entities import RunTag

        items = [RunTag(k, str(v)) for k, v in tags.items()]
        for batch in batches(items, MAX_PARAMS_PER_BATCH):
            with_lock_retry(self._client.log_batch, self._run_id, tags=batch)

    def log_params(self, params: dict[str, Any]) -> None:
        """Log more params (values stringified, lists/dicts as JSON)."""
        if self.enabled and self._run_id is not None:
            self._log_params(params)

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        """Log metrics at ``step`` (0 if ``None``); keys pass through :func:`metric_key`."""
        if not self.enabled or self._run_id is None or not metrics:
            return
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = []
        for name, value in metrics.items():
            try:
                number = float(value)
            except (TypeError, ValueError):
                raise TypeError(f"metric {name!r}: {value!r} is not a number") from None
            point = (metric_key(name), int(step or 0))
            if point in self._logged:
                if self._logged[point] == number:
                    continue  # logged before the interruption: replaced, not repeated
                log.warning(
                    "resumed run %s: %s at step %d was %r, now %r",
                    self._run_id,
                    point[0],
                    point[1],
                    self._logged[point],
                    number,
                )
            items.append(Metric(point[0], number, now, point[1]))
        for batch in batches(items, MAX_METRICS_PER_BATCH):
            with_lock_retry(self._client.log_batch, self._run_id, metrics=batch)

    def set_tags(self, tags: dict[str, Any]) -> None:
        """Set run tags (values stringified)."""
        if self.enabled and self._run_id is not None and tags:
            self._set_tags_now(tags)

    def log_dict(self, obj: Any, artifact_file: str) -> None:
        """Store ``obj`` as a JSON (or ``.yaml``/``.yml``) artifact."""
        if self.enabled and self._run_id is not None:
            with_lock_retry(self._client.log_dict, self._run_id, obj, artifact_file)

    def log_text(self, text: str, artifact_file: str) -> None:
        """Store ``text`` as an artifact file."""
        if self.enabled and self._run_id is not None:
            with_lock_retry(self._client.log_text, self._run_id, text, artifact_file)

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        """Copy a local file (or a folder's contents) into the run's artifacts."""
        if not self.enabled or self._run_id is None:
            return
        path = Path(path)
        if path.is_dir():
            with_lock_retry(self._client.log_artifacts, self._run_id, str(path), artifact_path)
        else:
            with_lock_retry(self._client.log_artifact, self._run_id, str(path), artifact_path)
