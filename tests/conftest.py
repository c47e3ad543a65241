"""Shared fixtures: where the real annotation files live."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("CIRBENCH_SHARED_DATA", REPO.parent / "shared" / "data"))


def cirbench_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Body of a module-scoped fixture: data, caches, runs and the MLflow store of a test
    module live in a fresh temp folder (``CIRBENCH_HOME``, ``MLFLOW_TRACKING_URI``, cwd)."""
    import mlflow

    home = tmp_path_factory.mktemp("home")
    uri = f"sqlite:///{home}/mlflow.db"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CIRBENCH_HOME", str(home))
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        mp.chdir(home)
        # a tracked run restores the URI it found, which may be an earlier module's store
        mlflow.set_tracking_uri(uri)
        yield home


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
