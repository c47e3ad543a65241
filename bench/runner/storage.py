"""Optuna storages by URL, the lock every worker of a study shares, and study names.

Owns what both ``cirbench sweep`` (which runs studies) and ``cirbench report`` (which reads
them back) need to find a study:

* **URLs**: the default is a journal file under ``CIRBENCH_HOME``
  (``optuna/journal.log``), ``postgresql://...`` / ``sqlite:///...`` an RDB and
  ``journal:PATH`` a journal file elsewhere, so several processes or machines can join
  one study (:func:`storage_url`, :func:`open_storage`); :func:`safe_url` hides a URL's
  password for tags and logs.
* **Lock**: a worker asks for a trial only under :func:`study_lock` (a file lock; a
  PostgreSQL advisory lock for ``postgresql://``), which keeps the trial budget exact
  across workers.
* **Names**: :func:`study_name_for` names a suite's study per profile.
"""

from __future__ import annotations

import contextlib
import hashlib
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.core.errors import CirbenchError
from bench.core.locks import exclusive
from bench.core.paths import home
from bench.runner.suites import SuiteRun


class StorageError(CirbenchError):
    """An Optuna storage cannot be used (bad storage URL, driver missing, server down)."""


def storage_url(storage: str | None) -> str:
    """Normalise a storage argument (``None`` -> the default journal file)."""
    if storage is None:
        path = home() / "optuna" / "journal.log"
        return f"journal:{path}"
    if storage.startswith(("postgresql", "sqlite:", "mysql", "journal:")):
        return storage
    if storage.endswith((".log", ".journal")):
        return f"journal:{Path(storage).resolve()}"
    raise StorageError(
        f"--storage {storage!r}: expected postgresql://..., sqlite:///..., journal:PATH "
        "or a *.log journal file"
    )


def open_storage(url: str) -> Any:
    """An Optuna storage object for ``url``."""
    import optuna
    from optuna.storages import JournalStorage, RDBStorage
    from optuna.storages.journal import JournalFileBackend

    if url.startswith("journal:"):
        path = Path(url.removeprefix("journal:"))
        path.parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(path)))
    if url.startswith("sqlite:"):
        db = Path(url.removeprefix("sqlite:///"))
        db.parent.mkdir(parents=True, exist_ok=True)
    try:
        with warnings.catch_warnings():  # heartbeats are "experimental" in Optuna 5
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return RDBStorage(url, heartbeat_interval=30, grace_period=120)
    except Exception as exc:  # driver missing, server down, bad credentials
        raise StorageError(
            f"cannot open Optuna storage {url}: {type(exc).__name__}: {exc}"
        ) from exc
    finally:
        optuna.logging.set_verbosity(optuna.logging.WARNING)


@contextlib.contextmanager
def study_lock(url: str, study_name: str) -> Iterator[None]:
    """An exclusive lock shared by every worker of one study (see the module docstring)."""
    if url.startswith("postgresql"):
        import sqlalchemy

        key = int(hashlib.sha256(study_name.encode()).hexdigest()[:15], 16)
        engine = sqlalchemy.create_engine(url)
        try:
            with engine.connect() as conn:
                conn.execute(sqlalchemy.text("SELECT pg_advisory_lock(:k)"), {"k": key})
                try:
                    yield
                finally:
                    conn.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:k)"), {"k": key})
        finally:
            engine.dispose()
        return

    if url.startswith("journal:"):
        path = Path(url.removeprefix("journal:"))
    elif url.startswith("sqlite:"):
        path = Path(url.removeprefix("sqlite:///"))
    else:  # other RDBs: one machine only
        path = home() / "optuna" / f"{study_name}.db"
    path.parent.mkdir(parents=True, exist_ok=True)
    with exclusive(path.with_name(path.name + f".{study_name}.lock")):
        yield


def study_name_for(run: SuiteRun) -> str:
    profile = "real" if run.real else run.profile.name
    return f"{run.suite.suite}-{profile}"


def safe_url(url: str) -> str:
    """A storage URL without its password (for tags and logs)."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        credentials, host = rest.rsplit("@", 1)
        user = credentials.split(":", 1)[0]
        return f"{scheme}://{user}:***@{host}"
    return url


def calibration_study_name(run: SuiteRun, method: str, dataset: str, stage: str) -> str:
    """The Optuna study of one calibration stage of ``method`` on ``dataset``."""
    return f"{study_name_for(run)}-{method}-{dataset}-{stage}"
