"""``cirbench sweep SUITE`` and ``cirbench ablate``: one suite (grid or study) under a
profile, and every suite of a group swept then reported (``nox -s ablate``)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from bench.core import distributed
from bench.core.errors import UnknownNameError
from bench.report import Report, build_report
from bench.runner.calibration import run_calibration
from bench.runner.dryrun import study_points
from bench.runner.grid import SweepError, SweepResult, run_grid
from bench.runner.publish import describe_experiment, publish_report
from bench.runner.reproduce import reproduce
from bench.runner.study import run_study
from bench.runner.suites import (
    DataRoots,
    SuiteRun,
    list_suites,
    load_suite,
    suite_file,
)
from bench.tracking.store import experiment_url, find_experiment_id, ui_url
from bench.train.preflight import preflight
from methods import list_methods

log_prefix = "[cirbench ablate]"


def sweep(
    suite_name: str,
    *,
    profile: str = "default",
    data_root: DataRoots = None,
    seeds: tuple[int, ...] | None = None,
    methods: tuple[str, ...] | None = None,
    workers: int = 1,
    storage: str | None = None,
    n_trials: int | None = None,
    overrides: tuple[str, ...] = (),
    progress: bool = True,
    stage1_trials: int | None = None,
) -> SweepResult:
    """Run one suite (grid or study) under a profile."""
    if distributed.is_distributed():
        raise SweepError(
            "a sweep runs its points in its own worker processes (--workers) and Optuna "
            "workers; launch it without torchrun (torchrun is for `cirbench train`)"
        )
    run = SuiteRun.open(
        suite_name,
        profile,
        data_root,
        seeds=seeds,
        methods=methods,
        overrides=overrides,
        storage=storage,
    )
    if run.suite.released:
        raise SweepError(
            f"suite {suite_name} starts from released checkpoints: run it with `cirbench "
            "reproduce --data-root DIR --checkpoints DIR` (or `cirbench ablate --checkpoints DIR`)"
        )
    run.check()
    check_suite(run)
    if run.suite.kind == "calibration":
        return run_calibration(
            run,
            storage=storage,
            n_trials=n_trials,
            stage1_trials=stage1_trials,
            progress=progress,
        )
    if run.suite.kind == "study":
        result = run_study(
            run, storage=storage, workers=workers, n_trials=n_trials, progress=progress
        )
    else:
        result = run_grid(run, workers=workers, progress=progress)
    describe_experiment(run)
    return result


def report(suite_name: str, **options: Any) -> Report:
    """``cirbench report SUITE``: the suite's report in ``<out>/<suite>/`` (``options``
    as :func:`~bench.report.build_report` takes them) and on its MLflow parent run
    (:func:`bench.runner.publish.publish_report`)."""
    built = build_report(suite_name, **options)
    opened = {k: options[k] for k in ("seeds", "methods", "storage") if k in options}
    run = SuiteRun.open(
        suite_name, options.get("profile", "default"), options.get("data_root"), **opened
    )
    publish_report(run, built)
    return built


def check_suite(run: SuiteRun) -> None:
    """Every point's whole spec before any work (:func:`bench.train.preflight.preflight`):
    the suite's methods first, then each resolved spec."""
    for method in run.methods:
        if method not in list_methods():
            raise UnknownNameError("method", method, list_methods())
    points = run.points() if run.suite.study is None else study_points(run)
    for point in points:
        preflight(run.spec(point), f"suite {run.suite.suite}, point {point.label()}")


#: The suites ``cirbench ablate`` (``nox -s ablate``) runs, in order.
ABLATE_SUITES = (
    "ablation_spn",
    "table2_fashioniq",
    "table3_cirr",
    "bank_size",
    "positives_count",
    "zero_shot",
)

#: Suites that ask why a modifier helps or not (``cirbench ablate --suites diagnostics``):
#: P against its continuation control, the bank stage's tau and lr, captioner noise and
#: the rank window. They share stage 1 (and the recipe's own points) with ``ablation_spn``.
DIAGNOSTIC_SUITES = (
    "positives_control",
    "negatives_tau",
    "negatives_lr",
    "positives_noise",
    "positives_window",
    "bank_size_tuned_lr",
)

#: Names that ``--suites`` expands to a group of suites.
SUITE_GROUPS = {"paper": ABLATE_SUITES, "diagnostics": DIAGNOSTIC_SUITES}


def expand_suite_names(names: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """Suite names with group names (``paper``, ``diagnostics``) expanded, in order, once.
    Raises :class:`UnknownNameError` on a name that is neither a suite nor a group, before anything
    runs (an ablation of several hours must not fail at its last suite)."""
    out: list[str] = []
    for name in names:
        for suite in SUITE_GROUPS.get(name, (name,)):
            if not suite_file(suite).is_file():
                raise UnknownNameError("suite", suite, [*list_suites(), *SUITE_GROUPS])
            if suite not in out:
                out.append(suite)
    return tuple(out)


#: Worker processes of ``cirbench ablate`` unless ``--workers`` says otherwise: two, each
#: with one torch thread (:data:`bench.runner.grid.WORKER_THREADS`), the 2-core machine's
#: fastest setting.
ABLATE_WORKERS = 2


def ablate(
    *,
    profile: str = "default",
    suites: tuple[str, ...] = ABLATE_SUITES,
    data_root: DataRoots = None,
    methods: tuple[str, ...] | None = None,
    seeds: tuple[int, ...] | None = None,
    workers: int = ABLATE_WORKERS,
    storage: str | None = None,
    out: str | Path = "reports",
    progress: bool = True,
    checkpoints: str | Path | None = None,
) -> dict[str, float]:
    """Every suite swept, then reported; returns seconds per suite (and ``total``).
    ``ablation_spn`` goes first: Tables 2 and 3 reuse its none and P+N points. A suite of
    released checkpoints (``reproduce``) runs :func:`bench.runner.reproduce.reproduce` on
    ``checkpoints``."""
    suites = expand_suite_names(suites)
    for name in suites:  # every suite and name resolves before the first one runs
        SuiteRun.open(name, profile, data_root, seeds=seeds, methods=methods).check()
    seconds: dict[str, float] = {}
    start = time.perf_counter()
    for index, name in enumerate(suites, 1):
        t0 = time.perf_counter()
        print(f"{log_prefix} suite {index}/{len(suites)}: {name} ({profile})", flush=True)
        if load_suite(name).released:
            if checkpoints is None:
                raise SweepError(f"suite {name} needs the released checkpoints: --checkpoints DIR")
            done = reproduce(
                data_root, checkpoints, methods=methods, seeds=seeds, out=out, progress=progress
            )
            seconds[name] = time.perf_counter() - t0
            print(f"{log_prefix} {name}: {seconds[name]:.0f} s -> {done.folder}", flush=True)
            continue
        sweep(
            name,
            profile=profile,
            data_root=data_root,
            seeds=seeds,
            methods=methods,
            workers=workers,
            storage=storage,
            progress=progress,
        )
        built = report(
            name,
            profile=profile,
            data_root=data_root,
            seeds=seeds,
            methods=methods,
            storage=storage,
            out=out,
        )
        seconds[name] = time.perf_counter() - t0
        print(f"{log_prefix} {name}: {seconds[name]:.0f} s -> {built.folder}", flush=True)
    seconds["total"] = time.perf_counter() - start
    return seconds


def _duration(seconds: float) -> str:
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest:02d} s" if minutes else f"{rest} s"


def closing_summary(
    seconds: dict[str, float], *, profile: str, out: str | Path, real: bool = False
) -> str:
    """The lines ``cirbench ablate`` ends with: the time per suite and in all, where each
    report is, and how to open the MLflow UI and optuna-dashboard on the runs."""
    out = Path(out)
    suites = [name for name in seconds if name != "total"]
    width = max(map(len, suites), default=0)
    experiment = f"cirbench-ablate-{'real' if real else profile}"
    experiment_id = find_experiment_id(experiment)
    lines = [f"cirbench ablate ({profile}): {len(suites)} suites in {_duration(seconds['total'])}"]
    lines += [
        f"  {name:{width}s}  {_duration(seconds[name]):>12s}  {out / name / 'index.md'}"
        for name in suites
    ]
    lines += [
        f"Reports: {out / 'index.md'} (each also on its MLflow parent run `suite:<name>`)",
        "Compare runs: nox -s ui  (MLflow UI "
        + (experiment_url(experiment_id) if experiment_id else ui_url())
        + f", experiment {experiment}; optuna-dashboard on the studies at the next port)",
    ]
    return "\n".join(lines)
