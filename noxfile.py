"""nox sessions. They run in the environment of the README's set-up (``pip install -e .[dev]``),
so the heavy dependencies (torch) are installed once, not once per session."""

from __future__ import annotations

from pathlib import Path

import nox

nox.options.sessions = ["lint", "tests"]
nox.options.default_venv_backend = "none"


@nox.session
def tests(session: nox.Session) -> None:
    """The test suite (what ``.ci/run`` runs)."""
    session.run("python", "-m", "pytest", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff (lint and formatting check) and the import-layers contract."""
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    session.run("python", "tests/import_layers.py")


@nox.session
def bench(session: nox.Session) -> None:
    """Performance benchmarks (timings reported as ratios against naive implementations).

    ``benchmarks/bench_pipeline.py`` writes a FashionIQ rehearsal folder (1000 images here;
    ``python benchmarks/bench_pipeline.py --images 0`` for all 74,381) under the temp folder
    and measures the input pipeline, the evaluation and the bank stage at real sizes.
    The ones that train or encode on the synthetic benchmark run with ``-- all``:
    ``benchmarks/bench_feature_cache.py``, ``benchmarks/bench_spn_stages.py`` and
    ``benchmarks/bench_data_parallel.py`` (torchrun against one process). Then
    ``benchmarks/bench_suites.py``: each suite's wall time of the last ``nox -s ablate``
    (``-- --quick`` / ``--full`` for that profile's) and its share in pre-training, stage 1,
    P and N, from the runs' recorded timings.
    """
    session.run("python", "benchmarks/bench_metrics.py")
    session.run("python", "benchmarks/bench_matching.py")
    session.run("python", "benchmarks/bench_pipeline.py", "--images", "1000")
    if "all" in session.posargs:
        session.run("python", "benchmarks/bench_feature_cache.py")
        session.run("python", "benchmarks/bench_spn_stages.py")
        session.run("python", "benchmarks/bench_data_parallel.py")
    profile = _profile(session)[1]
    session.run("python", "benchmarks/bench_suites.py", "--profile", profile)


@nox.session
def synth(session: nox.Session) -> None:
    """Generate the default synthetic benchmark into data/synthetic and print its statistics."""
    session.run("cirbench", "data", "synth", "--out", "data/synthetic", *session.posargs)


def _profile(session: nox.Session) -> list[str]:
    """``--quick`` / ``--small`` / ``--full`` in posargs select the profile; the rest
    passes through."""
    args = list(session.posargs)
    profile = "default"
    for flag in ("--quick", "--small", "--full"):
        if flag in args:
            args.remove(flag)
            profile = flag[2:]
    return ["--profile", profile, *args]


@nox.session
def ablate(session: nox.Session) -> None:
    """The default reproduction end to end: synthetic data, backbone, every suite, reports.

    ``nox -s ablate`` (default profile), ``nox -s ablate -- --quick`` (CI-sized),
    ``nox -s ablate -- --small`` (the world an earlier calibration ran on),
    ``nox -s ablate -- --full``,
    ``nox -s ablate -- --data-root /data/fashionIQ_dataset``.
    Interrupt it at any time: rerunning resumes, nothing finished is recomputed.
    """
    session.run("cirbench", "ablate", *_profile(session))


@nox.session
def sweep(session: nox.Session) -> None:
    """One suite: ``nox -s sweep -- bank_size [--workers 2] [--storage URL] [--quick]``."""
    if not session.posargs:
        session.error("name a suite: nox -s sweep -- SUITE [options]; see `cirbench suites`")
    session.run("cirbench", "sweep", *_profile(session))


@nox.session
def report(session: nox.Session) -> None:
    """One suite's tables and plots: ``nox -s report -- SUITE [--quick]``."""
    if not session.posargs:
        session.error("name a suite: nox -s report -- SUITE [options]")
    session.run("cirbench", "report", *_profile(session))


@nox.session
def ui(session: nox.Session) -> None:
    """The MLflow UI and optuna-dashboard on 127.0.0.1, both URLs printed:
    ``nox -s ui [-- --port 5000] [--storage URL]``. MLflow on the suites' store (``mlflow.db``
    here, or ``$MLFLOW_TRACKING_URI``) at the port, optuna-dashboard on the studies'
    storage (default: the journal file ``optuna/journal.log`` under ``CIRBENCH_HOME``) at
    the port + 1. Stop both with Ctrl-C."""
    import shutil
    import signal
    import subprocess

    from bench.runner.storage import storage_url
    from bench.tracking import UI_ENV, default_tracking_uri, ui_command

    args = list(session.posargs)
    port = int(args[args.index("--port") + 1]) if "--port" in args else 5000
    storage = storage_url(args[args.index("--storage") + 1] if "--storage" in args else None)
    target = storage.removeprefix("journal:")
    dashboard = None
    if not shutil.which("optuna-dashboard"):
        session.log("optuna-dashboard is not installed (pip install -e .[dev]); MLflow UI only")
    elif storage.startswith("journal:") and not Path(target).is_file():
        session.log(f"no Optuna study yet ({target}: run a study suite first); MLflow UI only")
    else:
        dashboard = subprocess.Popen(
            ["optuna-dashboard", "--host", "127.0.0.1", "--port", str(port + 1), target]
        )

    def stop(signum: int, frame: object) -> None:  # a SIGTERM stops both, like Ctrl-C
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    command = ui_command()
    command[command.index("--port") + 1] = str(port)
    session.log(f"MLflow UI:        http://127.0.0.1:{port}  (store {default_tracking_uri()})")
    if dashboard is not None:
        session.log(f"optuna-dashboard: http://127.0.0.1:{port + 1}  (studies {storage})")
    try:
        session.run(*command, env=dict(UI_ENV))
    finally:
        if dashboard is not None:
            dashboard.terminate()
