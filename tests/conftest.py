"""Shared fixtures: where the real annotation files live."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("CIRBENCH_SHARED_DATA", REPO.parent / "shared" / "data"))


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
