"""The MLflow store: where runs go, how keys are named, safe concurrent access.

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

import json
import logging
import os
import posixpath
import random
import re
import socket
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import unquote

from bench.core.atomic import process_alive
from bench.core.errors import CirbenchError
from bench.core.locks import exclusive

log = logging.getLogger(__name__)

# MLflow 3 sends usage telemetry (HTTP, 1 s timeouts) unless told not to; the suite runs
# offline and on lent machines, so it is off unless the user set the variable.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
# "Creating initial MLflow database tables..." and alembic's migration steps, on a new
# store: bookkeeping that is not news to the user of a sweep
for _name in ("mlflow.store.db.utils", "alembic.runtime.migration"):
    logging.getLogger(_name).setLevel(logging.WARNING)

T = TypeVar("T")

#: Environment for :func:`ui_command`: the UI without the job-execution workers.
UI_ENV: dict[str, str] = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}

#: Where the MLflow UI of :func:`ui_command` listens (``$CIRBENCH_MLFLOW_UI`` overrides it):
#: the base of the run links written into reports and Optuna trials.
DEFAULT_UI_URL = "http://127.0.0.1:5000"

#: The experiment tag MLflow 3's UI reads to choose an experiment's first page; "custom
#: model development" opens it on its runs (without the tag MLflow 3 opens the GenAI
#: "Traces" page). The values are the UI's ``ExperimentKind`` enum.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
#: The experiment (and run) tag the UI shows as its description (Markdown).
DESCRIPTION_TAG = "mlflow.note.content"
#: Prefix of the experiment tags holding a saved view of the runs page (the UI's
#: ``viewStateShareKey``: ``#/experiments/<id>/runs?viewStateShareKey=<key>``).
SHARED_VIEW_TAG = "mlflow.sharedViewState."
#: The URL parameter of MLflow 3's UI that shows the "Model training" side (runs).
ML_WORKFLOW = "workflowType=machine_learning"

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


def ui_url() -> str:
    """Base URL of the MLflow UI (``$CIRBENCH_MLFLOW_UI``, else :data:`DEFAULT_UI_URL`)."""
    return os.environ.get("CIRBENCH_MLFLOW_UI", "").strip().rstrip("/") or DEFAULT_UI_URL


def run_url(experiment_id: str, run_id: str) -> str:
    """The UI page of one run (on the "Model training" side of MLflow 3's UI)."""
    return f"{ui_url()}/#/experiments/{experiment_id}/runs/{run_id}?{ML_WORKFLOW}"


def experiment_url(experiment_id: str, view: str | None = None) -> str:
    """The UI's runs page of an experiment, opened on saved view ``view`` when given.

    MLflow 3.17's UI chooses an experiment's first page by its own "GenAI / Model
    training" toggle (stored in the browser, GenAI by default) rather than by the
    experiment's :data:`EXPERIMENT_KIND_TAG`; the link's ``workflowType`` selects the
    runs side, so it opens on the runs whatever the browser remembers."""
    url = f"{ui_url()}/#/experiments/{experiment_id}/runs?{ML_WORKFLOW}"
    return f"{url}&viewStateShareKey={view}" if view else url


def run_name(base: str, composition: str, swept: dict[str, Any] | None = None) -> str:
    """A training run's name: ``base`` (method-dataset-seed), then in brackets the
    composition (left out for ``none`` alone) and the swept values:
    ``clip4cir-fashioniq-s0[P+N K=300]``, ``clip4cir-fashioniq-s0[N neg_num=45]``."""
    inside = [composition] if composition != "none" or swept else []
    inside += [f"{k}={v}" for k, v in (swept or {}).items()]
    return f"{base}[{' '.join(inside)}]" if inside else base


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


_READY: set[str] = set()


def client(uri: str) -> Any:
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
        made = with_lock_retry(MlflowClient, tracking_uri=uri)
    _READY.add(uri)
    return made


def batches(items: list[T], size: int) -> Iterable[list[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def get_or_create_experiment(mlflow_client: Any, uri: str, name: str) -> str:
    """The id of experiment ``name``, created if missing; safe when processes race."""
    from mlflow.exceptions import MlflowException

    experiment = with_lock_retry(mlflow_client.get_experiment_by_name, name)
    if experiment is None:
        try:
            return with_lock_retry(
                mlflow_client.create_experiment,
                name,
                artifact_location=artifact_location_for(uri, name),
                tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND},
            )
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_ALREADY_EXISTS" and "already exists" not in str(exc):
                raise
            experiment = with_lock_retry(mlflow_client.get_experiment_by_name, name)
            if experiment is None:
                raise
    if experiment.lifecycle_stage == "deleted":
        raise TrackingError(
            f"MLflow experiment {name!r} in {uri} is deleted; restore it "
            f"(mlflow experiments restore --experiment-id {experiment.experiment_id}) "
            "or use another experiment name"
        )
    if EXPERIMENT_KIND_TAG not in experiment.tags:  # made by an older cirbench
        with_lock_retry(
            mlflow_client.set_experiment_tag,
            experiment.experiment_id,
            EXPERIMENT_KIND_TAG,
            EXPERIMENT_KIND,
        )
    return experiment.experiment_id


def find_experiment_id(experiment: str, tracking_uri: str | None = None) -> str | None:
    """The id of experiment ``experiment``, ``None`` when it does not exist."""
    uri = tracking_uri or default_tracking_uri()
    found = with_lock_retry(client(uri).get_experiment_by_name, experiment)
    return found.experiment_id if found is not None else None


def find_runs(
    experiment: str, filter_string: str = "", tracking_uri: str | None = None
) -> list[Any]:
    """All runs (``mlflow.entities.Run``) of ``experiment`` matching ``filter_string``.

    Newest first; ``[]`` when the experiment does not exist.
    """
    uri = tracking_uri or default_tracking_uri()
    mlflow_client = client(uri)
    experiment_obj = with_lock_retry(mlflow_client.get_experiment_by_name, experiment)
    if experiment_obj is None:
        return []
    runs: list[Any] = []
    token: str | None = None
    while True:
        page = with_lock_retry(
            mlflow_client.search_runs,
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


#: Tag of a run: the ``host:pid`` of the process that (last) ran it.
PROCESS_TAG = "cirbench.process"
#: Tag of a run: the run folder it trains (locked while a process trains it).
RUN_DIR_TAG = "cirbench.run_dir"


def this_process() -> str:
    """``host:pid`` of this process (the value of :data:`PROCESS_TAG`)."""
    return f"{socket.gethostname()}:{os.getpid()}"


def _process_dead(value: str) -> bool:
    host, _, pid = value.rpartition(":")
    return host == socket.gethostname() and pid.isdigit() and not process_alive(int(pid))


def end_dead_runs(
    experiment: str,
    spec_digest: str,
    run_dir: str,
    *,
    keep: str | None = None,
    tracking_uri: str | None = None,
) -> list[str]:
    """End KILLED every RUNNING run of ``experiment`` with this spec digest (other than
    ``keep``) whose process is dead: it trains ``run_dir``, whose lock the caller holds,
    or its process (:data:`PROCESS_TAG`) is gone from this host. Returns their ids; each
    gets the tag ``cirbench.ended_by``."""
    uri = tracking_uri or default_tracking_uri()
    mlflow_client = client(uri)
    ended = []
    query = f"tags.`cirbench.spec_digest` = '{spec_digest}' and attributes.status = 'RUNNING'"
    for run in find_runs(experiment, query, uri):
        tags = run.data.tags
        if run.info.run_id == keep:
            continue
        if tags.get(RUN_DIR_TAG) != run_dir and not _process_dead(tags.get(PROCESS_TAG, "")):
            continue
        note = f"{this_process()}: its process died; a new run of the spec started"
        with_lock_retry(mlflow_client.set_tag, run.info.run_id, "cirbench.ended_by", note)
        with_lock_retry(mlflow_client.set_terminated, run.info.run_id, "KILLED")
        ended.append(run.info.run_id)
    return ended
