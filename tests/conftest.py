"""Shared fixtures: where the real annotation files live."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Generator, Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("CIRBENCH_SHARED_DATA", REPO.parent / "shared" / "data"))


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist (``-n``, on by default in pyproject.toml) each worker process is
    entitled to its share of the cores: its torch threads, and those of the processes its
    tests start (``OMP_NUM_THREADS``), follow, so that the workers do not oversubscribe the
    machine (two 2-thread processes on 2 cores run several times slower than 1-thread ones)."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1 and "PYTEST_XDIST_WORKER" in os.environ:
        from bench.core.runtime import default_workers, set_core_share

        share = max(1, default_workers() // workers)
        set_core_share(share)
        os.environ["OMP_NUM_THREADS"] = str(share)


#: Tests failed so far in this session (for :func:`cirbench_home`'s clean-up).
_failures = 0


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    global _failures
    report = yield
    if report.failed:
        _failures += 1
    return report


def cirbench_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Body of a module-scoped fixture: data, caches, runs and the MLflow store of a test
    module live in a fresh temp folder (``CIRBENCH_HOME``, ``MLFLOW_TRACKING_URI``, cwd).
    The folder (checkpoints: up to GBs) is deleted after the module unless a test failed
    meanwhile, so that a whole run never holds every module's runs on disk at once."""
    import mlflow

    home = tmp_path_factory.mktemp("home")
    failures_before = _failures
    uri = f"sqlite:///{home}/mlflow.db"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CIRBENCH_HOME", str(home))
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        mp.chdir(home)
        # a tracked run restores the URI it found, which may be an earlier module's store
        mlflow.set_tracking_uri(uri)
        yield home
    if _failures == failures_before:
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real FashionIQ / CIRR / CIRCO annotations (``../shared/data``).

    CI always has them, so there a missing folder is a failure, not a skip.
    """
    if not (SHARED_DATA / "fashioniq").is_dir():
        message = f"real annotation files not found at {SHARED_DATA} (set CIRBENCH_SHARED_DATA)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return SHARED_DATA


def run_processes_at_once(
    script: str, n: int, env: dict[str, str], cwd: Path | None = None
) -> None:
    """Run ``python -c script i`` for ``i`` in ``range(n)`` side by side; fail with every
    process's output unless all of them exit 0."""
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(i)],
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in range(n)
    ]
    outputs = [p.communicate(timeout=180)[0] for p in procs]
    assert [p.returncode for p in procs] == [0] * n, outputs
