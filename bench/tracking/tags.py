"""The tags every tracked run carries: code version, device, entry point."""

from __future__ import annotations

import functools
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import bench


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
