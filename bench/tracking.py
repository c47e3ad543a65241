"""MLflow tracking for every train / evaluate / pretrain run.

Where runs go
    :func:`default_tracking_uri`: ``$MLFLOW_TRACKING_URI`` if set, else the documented
    default SQLite store ``sqlite:///<cwd>/mlflow.db`` (never the legacy ``./mlruns``
    folder store). For a local SQLite store, experiments created here get an explicit
    artifact location ``<folder of the .db>/mlartifacts/<experiment>``: without it MLflow
    puts artifacts in ``./mlruns`` of whatever the current folder happens to be.

Browsing
    :func:`ui_command` gives the light-weight UI command line; run it with
    :data:`UI_ENV` added to the environment (``MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false``),
    which with ``--workers 1`` starts in seconds and ~0.5 GB instead of ~15 processes::

        env MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false \\
            mlflow ui --backend-store-uri sqlite:///$PWD/mlflow.db --workers 1

Runs
    :class:`TrackedRun` is a context manager around one MLflow run. It talks to the store
    through an ``MlflowClient`` (it does not become the ``mlflow.active_run()`` of the
    fluent API). The run ends FINISHED, FAILED (tag ``cirbench.error`` + artifact
    ``error.txt``) or KILLED (``KeyboardInterrupt``). Under ``torchrun`` only rank 0
    logs (:func:`is_main_process`).

Names
    Metric and param keys pass through :func:`metric_key`: MLflow accepts only
    alphanumerics and ``_ - . / space`` portably, so ``@`` becomes ``_at_``
    (``R@10`` -> ``R_at_10``, ``avg_R@50`` -> ``avg_R_at_50``) and any other character
    becomes ``_``.

Telemetry
    Importing this module sets ``MLFLOW_DISABLE_TELEMETRY=true`` unless it is already
    set (MLflow 3 otherwise phones home from a background thread).

Concurrency
    Several processes writing one SQLite file can hit "database is locked"; every store
    call is retried with a bounded exponential backoff (10 tries, ~5 s in all). Creating
    a fresh SQLite store is serialised across processes by a lock file next to it
    (``mlflow.db.init.lock``): MLflow's own table creation races and corrupts the file.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import json
import logging
import os
import posixpath
import random
import re
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar
from urllib.parse import unquote

import bench
from bench.errors import CirbenchError

log = logging.getLogger(__name__)

# MLflow 3 sends usage telemetry (HTTP, 1 s timeouts) unless told not to; the suite runs
# offline and on lent machines, so it is off unless the user set the variable.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

T = TypeVar("T")

#: Environment for :func:`ui_command`: the UI without the job-execution workers.
UI_ENV: dict[str, str] = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}

#: MLflow's limits (``mlflow.utils.validation``).
MAX_PARAM_VALUE_LENGTH = 6000
MAX_PARAMS_PER_BATCH = 100
MAX_METRICS_PER_BATCH = 1000
MAX_KEY_LENGTH = 250
MAX_ERROR_TAG_LENGTH = 5000

#: Retry of store calls that fail with "database is locked".
LOCK_RETRIES = 10
LOCK_FIRST_DELAY_S = 0.05
LOCK_MAX_DELAY_S = 0.8

_INVALID_KEY_CHARS = re.compile(r"[^A-Za-z0-9_\-./ ]")
_INVALID_PATH_CHARS = re.compile(r"[^A-Za-z0-9_.\-]")

#: Enabled runs open in this context, innermost last (parents of ``nested=True`` runs).
_ACTIVE: contextvars.ContextVar[tuple[TrackedRun, ...]] = contextvars.ContextVar(
    "cirbench_active_runs", default=()
)


class TrackingError(CirbenchError, RuntimeError):
    """The MLflow store could not be used as asked (deleted experiment, missing parent)."""


# --------------------------------------------------------------------------- store & names


def default_tracking_uri() -> str:
    """``$MLFLOW_TRACKING_URI`` if set, else ``sqlite:///<absolute cwd>/mlflow.db``."""
    env = os.environ.get("MLFLOW_TRACKING_URI", "").strip()
    if env:
        return env
    return f"sqlite:///{Path.cwd().resolve() / 'mlflow.db'}"


def ui_command(uri: str | None = None) -> list[str]:
    """The ``mlflow ui`` command line on store ``uri`` (default :func:`default_tracking_uri`).

    Run it with :data:`UI_ENV` in the environment
    (``MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false``); the UI then listens on
    http://127.0.0.1:5000 with one worker.
    """
    uri = uri or default_tracking_uri()
    return [
        "mlflow",
        "ui",
        "--backend-store-uri",
        uri,
        "--host",
        "127.0.0.1",
        "--port",
        "5000",
        "--workers",
        "1",
    ]


def sqlite_path(uri: str) -> Path | None:
    """The database file of a local ``sqlite:///`` URI (absolute), else ``None``."""
    if not uri.startswith("sqlite:///"):
        return None
    raw = unquote(uri[len("sqlite:///") :].split("?", 1)[0])
    if not raw or raw == ":memory:":
        return None
    return Path(raw).resolve()


def artifact_location_for(uri: str, experiment: str) -> str | None:
    """Artifact location (file URI) to give a new experiment on store ``uri``.

    ``<folder of the .db>/mlartifacts/<experiment>`` for a local SQLite store; ``None``
    (the store's own default) otherwise.
    """
    db = sqlite_path(uri)
    if db is None:
        return None
    folder = _INVALID_PATH_CHARS.sub("_", experiment) or "_"
    if folder.startswith("."):
        folder = "_" + folder
    return (db.parent / "mlartifacts" / folder).as_uri()


def metric_key(name: str) -> str:
    """An MLflow-safe metric / param key: ``@`` -> ``_at_``, other bad characters -> ``_``.

    MLflow accepts alphanumerics, ``_``, ``-``, ``.``, ``/`` and space (colon only off
    Windows, so it is replaced too); keys must also be normalised paths and at most
    250 characters. ``metric_key("R@10") == "R_at_10"``.
    """
    key = _INVALID_KEY_CHARS.sub("_", name.replace("@", "_at_"))
    if posixpath.normpath(key) != key or key.startswith(("/", "..")) or key in ("", "."):
        key = "_" + key.replace("/", "_") if key else "_"
    return key[:MAX_KEY_LENGTH]


def param_value(value: Any) -> str:
    """A param value as MLflow stores it: lists/dicts JSON, the rest ``str``; <= 6000 chars."""
    structured = isinstance(value, list | tuple | dict)
    text = json.dumps(value, default=str) if structured else str(value)
    if len(text) > MAX_PARAM_VALUE_LENGTH:
        log.warning("param value truncated to %d characters", MAX_PARAM_VALUE_LENGTH)
        text = text[:MAX_PARAM_VALUE_LENGTH]
    return text


def _is_locked(exc: BaseException) -> bool:
    return "database is locked" in str(exc)


def with_lock_retry(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Call ``fn``, retrying (bounded backoff) while SQLite says "database is locked"."""
    delay = LOCK_FIRST_DELAY_S
    for attempt in range(1, LOCK_RETRIES + 1):
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            if attempt == LOCK_RETRIES or not _is_locked(exc):
                raise
            log.debug("MLflow store locked (try %d/%d); retrying", attempt, LOCK_RETRIES)
            time.sleep(delay * (0.75 + random.random() / 2))
            delay = min(delay * 2, LOCK_MAX_DELAY_S)
    raise AssertionError("unreachable")  # pragma: no cover


@contextlib.contextmanager
def exclusive(lock_file: Path) -> Iterator[None]:
    """An inter-process lock (``flock``; a no-op where ``fcntl`` is missing)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    with open(lock_file, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


_READY: set[str] = set()


def _client(uri: str) -> Any:
    """An ``MlflowClient`` on ``uri``; the first one per process creates the store safely.

    MLflow builds a fresh SQLite store with alembic migrations that are not safe against
    a second process doing the same at once: the file ends up with half-migrated tables
    (``table _alembic_tmp_experiments already exists``) and is unusable. The first
    client per store and process is therefore built under a file lock next to the
    database (``<db>.init.lock``).
    """
    from mlflow import MlflowClient

    db = sqlite_path(uri)
    if uri in _READY or db is None:
        return with_lock_retry(MlflowClient, tracking_uri=uri)
    import mlflow.store.tracking.sqlalchemy_store  # noqa: F401  (slow import, outside the lock)

    db.parent.mkdir(parents=True, exist_ok=True)
    with exclusive(db.with_name(db.name + ".init.lock")):
        client = with_lock_retry(MlflowClient, tracking_uri=uri)
    _READY.add(uri)
    return client


def _batches(items: list[T], size: int) -> Iterable[list[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def get_or_create_experiment(client: Any, uri: str, name: str) -> str:
    """The id of experiment ``name``, created if missing; safe when processes race."""
    from mlflow.exceptions import MlflowException

    experiment = with_lock_retry(client.get_experiment_by_name, name)
    if experiment is None:
        try:
            return with_lock_retry(
                client.create_experiment, name, artifact_location=artifact_location_for(uri, name)
            )
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_ALREADY_EXISTS" and "already exists" not in str(exc):
                raise
            experiment = with_lock_retry(client.get_experiment_by_name, name)
            if experiment is None:
                raise
    if experiment.lifecycle_stage == "deleted":
        raise TrackingError(
            f"MLflow experiment {name!r} in {uri} is deleted; restore it "
            f"(mlflow experiments restore --experiment-id {experiment.experiment_id}) "
            "or use another experiment name"
        )
    return experiment.experiment_id


def find_runs(
    experiment: str, filter_string: str = "", tracking_uri: str | None = None
) -> list[Any]:
    """All runs (``mlflow.entities.Run``) of ``experiment`` matching ``filter_string``.

    Newest first; ``[]`` when the experiment does not exist.
    """
    uri = tracking_uri or default_tracking_uri()
    client = _client(uri)
    experiment_obj = with_lock_retry(client.get_experiment_by_name, experiment)
    if experiment_obj is None:
        return []
    runs: list[Any] = []
    token: str | None = None
    while True:
        page = with_lock_retry(
            client.search_runs,
            [experiment_obj.experiment_id],
            filter_string=filter_string,
            max_results=1000,
            order_by=["attributes.start_time DESC"],
            page_token=token,
        )
        runs.extend(page)
        token = page.token
        if not token:
            return runs


# --------------------------------------------------------------------------- tags


def is_main_process() -> bool:
    """False on ranks other than 0 under ``torchrun`` (``$RANK``); True otherwise."""
    rank = os.environ.get("RANK", "").strip()
    try:
        return int(rank or 0) == 0
    except ValueError:
        return True


def _git(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str] | None:
    try:
        return subprocess.run(
            ["git", "--no-optional-locks", *args],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None


def git_commit() -> str:
    """HEAD of the git repo holding the ``bench`` package (``-dirty`` with changes).

    Like ``git describe --dirty``, only changes to tracked files count (run outputs such
    as ``mlflow.db`` or ``mlartifacts/`` in the work tree do not). ``unknown`` when the
    package is not a tracked file of a git work tree (an installed copy, a venv inside
    some repo, no git at all).
    """
    package = Path(bench.__file__).resolve().parent
    tracked = _git(["ls-files", "--error-unmatch", "__init__.py"], package)
    if tracked is None or tracked.returncode != 0:
        return "unknown"
    head = _git(["rev-parse", "HEAD"], package)
    if head is None or head.returncode != 0 or not head.stdout.strip():
        return "unknown"
    commit = head.stdout.strip()
    status = _git(["status", "--porcelain", "--untracked-files=no"], package)
    if status is None or status.returncode != 0 or status.stdout.strip():
        commit += "-dirty"
    return commit


@functools.cache
def device_description() -> str:
    """The CUDA device name (or ``cpu``) with the torch (and CUDA) version."""
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency of every run
        return "cpu"
    if torch.cuda.is_available():
        name = torch.cuda.get_device_name(0)
        return f"{name} (torch {torch.__version__}, cuda {torch.version.cuda})"
    return f"cpu (torch {torch.__version__})"


def run_tags(extra: dict[str, Any] | None = None) -> dict[str, str]:
    """The tags every run carries, plus ``extra`` (e.g. ``cirbench.dataset_fingerprint``)."""
    tags = {
        "cirbench.git_commit": git_commit(),
        "cirbench.version": bench.__version__,
        "cirbench.device": device_description(),
        "mlflow.source.name": Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "python",
    }
    for key, value in (extra or {}).items():
        tags[key] = str(value)
    return tags


# --------------------------------------------------------------------------- runs


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
            self._client = _client(uri)
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
        for batch in _batches(items, MAX_PARAMS_PER_BATCH):
            with_lock_retry(self._client.log_batch, self._run_id, params=batch)

    def _set_tags_now(self, tags: dict[str, Any]) -> None:
        from mlflow.entities import RunTag

        items = [RunTag(k, str(v)) for k, v in tags.items()]
        for batch in _batches(items, MAX_PARAMS_PER_BATCH):
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
            items.append(Metric(metric_key(name), number, now, int(step or 0)))
        for batch in _batches(items, MAX_METRICS_PER_BATCH):
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
