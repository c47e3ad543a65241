"""nox sessions. They run in the environment of the README's set-up (``pip install -e .[dev]``),
so the heavy dependencies (torch) are installed once, not once per session."""

from __future__ import annotations

import nox

nox.options.sessions = ["lint", "tests"]
nox.options.default_venv_backend = "none"


@nox.session
def tests(session: nox.Session) -> None:
    """The test suite (what ``.ci/run`` runs)."""
    session.run("python", "-m", "pytest", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff: lint and formatting check."""
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def bench(session: nox.Session) -> None:
    """Performance benchmarks (timings reported as ratios against naive implementations).

    The ones that train or encode on the synthetic benchmark run with ``-- all``:
    ``benchmarks/bench_feature_cache.py`` and ``benchmarks/bench_spn_stages.py``.
    """
    session.run("python", "benchmarks/bench_metrics.py")
    session.run("python", "benchmarks/bench_matching.py")
    if "all" in session.posargs:
        session.run("python", "benchmarks/bench_feature_cache.py")
        session.run("python", "benchmarks/bench_spn_stages.py")


@nox.session
def synth(session: nox.Session) -> None:
    """Generate the default synthetic benchmark into data/synthetic and print its statistics."""
    session.run("cirbench", "data", "synth", "--out", "data/synthetic", *session.posargs)
