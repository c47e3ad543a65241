"""``cirbench sweep SUITE``: run a suite's grid points or its Optuna study, tracked in MLflow.

* **Grid**: every point is one :func:`bench.engine.train` call with ``resume=True``: a
  point whose resolved spec (and seed) already finished is returned from its run folder,
  nothing recomputed and no new MLflow run; an interrupted point continues from its last
  epoch in its own MLflow run. With ``--workers N`` points run in N processes, grouped by
  their stage 1 (the engine locks each run folder, so a shared stage 1 trains once).
* **Study**: an Optuna study over one spec key (e.g. the negative-bank size), in a
  storage given by URL: the default is a journal file under ``CIRBENCH_HOME``
  (``optuna/journal.log``), ``postgresql://...`` / ``sqlite:///...`` an RDB and
  ``journal:PATH`` a journal file elsewhere, so several processes or machines can join
  one study. The trial budget is exact across workers: a worker asks for a trial only
  under a lock (a file lock; a PostgreSQL advisory lock for ``postgresql://``) after
  counting the study's live trials. Trials of dead workers (same host) are marked failed
  and redone on the next run.
* **MLflow**: one parent run per suite (reused when a suite is run again), one nested
  child run per point or trial and seed, tagged ``cirbench.suite`` and
  ``cirbench.trial`` so that the UI's compare view lines them up.
"""

from __future__ import annotations

import contextlib
import os
import socket
import statistics
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from tqdm import tqdm

from bench.config import SpecError
from bench.core.errors import CirbenchError
from bench.report import build_report
from bench.runner.profiles import get_profile
from bench.runner.storage import open_storage, safe_url, storage_url, study_lock, study_name_for
from bench.runner.suites import Point, SuiteRun, list_suites, load_suite, suite_file

log_prefix = "[cirbench sweep]"


class SweepError(CirbenchError):
    """A sweep cannot run (failed points; a bad storage URL raises
    :class:`bench.runner.storage.StorageError`)."""


# ----------------------------------------------------------------------------- MLflow parent


def suite_tags(run: SuiteRun) -> dict[str, str]:
    return {
        "cirbench.kind": "suite",
        "cirbench.suite": run.suite.suite,
        "cirbench.profile": "real" if run.real else run.profile.name,
    }


def find_parent_run(run: SuiteRun) -> str | None:
    """The MLflow run id of this suite's parent run, if one exists."""
    from bench.tracking import find_runs

    tags = suite_tags(run)
    query = " and ".join(f"tags.`{k}` = '{v}'" for k, v in tags.items())
    runs = find_runs(run.experiment, query)
    return runs[0].info.run_id if runs else None


@contextlib.contextmanager
def parent_run(run: SuiteRun, kind: str) -> Iterator[Any]:
    """The suite's parent MLflow run (reused across invocations), open while sweeping."""
    from bench.tracking import TrackedRun

    params = {
        "suite": run.suite.suite,
        "title": run.suite.title,
        "kind": kind,
        "profile": "real" if run.real else run.profile.name,
        "seeds": list(run.seeds),
        "data_root": str(run.data_root) if run.data_root else "synthetic",
    }
    with TrackedRun(
        run.experiment,
        f"suite:{run.suite.suite}",
        params=params,
        tags=suite_tags(run),
        run_id=find_parent_run(run),
    ) as parent:
        yield parent


def tag_shared_run(run_id: str | None, suite: str) -> None:
    """Mark a run (possibly created by another suite) as a member of ``suite``."""
    if not run_id:
        return
    from mlflow.exceptions import MlflowException

    from bench.tracking import client, default_tracking_uri, with_lock_retry

    store = client(default_tracking_uri())
    key = f"cirbench.in_suite.{suite}"
    try:
        with_lock_retry(store.set_tag, run_id, key, "true")
    except MlflowException:
        # two study workers that drew the same value share one run and tag it at the same
        # moment; MLflow's SQL store inserts a new tag without a lock, so the second
        # insert fails on the (key, run) constraint: fine when the tag is there now
        if store.get_run(run_id).data.tags.get(key) != "true":
            raise


# ----------------------------------------------------------------------------- grids


@dataclass
class PointOutcome:
    point: Point
    digest: str
    run_id: str | None
    metrics: dict[str, float]
    seconds: float
    reused: bool


@dataclass
class SweepResult:
    suite: str
    outcomes: list[PointOutcome] = field(default_factory=list)
    seconds: float = 0.0
    study_name: str | None = None
    storage: str | None = None

    @property
    def trained(self) -> int:
        return sum(not o.reused for o in self.outcomes)


def run_point(
    run: SuiteRun,
    point: Point,
    parent_id: str | None,
    progress: bool,
    overrides: tuple[str, ...] = (),
    trial: int | None = None,
    on_epoch: Any = None,
) -> PointOutcome:
    """Train (or reuse) one point; returns its metrics and MLflow run id."""
    from bench.engine import TrainResult, run_dir_for, train

    spec = run.spec(point, overrides)
    reused = TrainResult.load(run_dir_for(spec)) is not None
    tags = {"cirbench.suite": run.suite.suite, "cirbench.point": point.label()}
    if trial is not None:
        tags["cirbench.trial"] = str(trial)
    start = time.perf_counter()
    result = train(
        spec,
        resume=True,
        progress=progress,
        parent_run_id=parent_id,
        tags=tags,
        on_epoch=on_epoch,
    )
    tag_shared_run(result.mlflow_run_id, run.suite.suite)
    return PointOutcome(
        point,
        spec.digest(),
        result.mlflow_run_id,
        result.metrics,
        time.perf_counter() - start,
        reused,
    )


def _stage1_groups(points: list[Point]) -> list[list[Point]]:
    groups: dict[tuple[str, str, int], list[Point]] = {}
    for p in points:
        groups.setdefault((p.method, p.dataset, p.seed), []).append(p)
    return list(groups.values())


def prepare_shared_inputs(run: SuiteRun, points: list[Point], progress: bool) -> None:
    """Build what every point of ``points`` reads and none owns (the synthetic data and a
    synthetic pre-trained backbone) here, with all this process's threads, before workers
    start: a worker limited to its share of the threads would otherwise build it while the
    others wait on its lock. Only points whose stage 1 is still to train need them (a
    finished stage 1 had both; later stages start from its checkpoint)."""
    from bench.data.experiment import dataset_root
    from bench.engine import TrainResult, resolve_pretrained, run_dir_for

    built: set[tuple[Any, ...]] = set()
    for point in points:
        spec = run.spec(point)
        data = spec.dataset
        key = (data.root, data.synthetic_size, data.synthetic_seed, spec.backbone.arch)
        stage1 = spec if spec.is_stage1 else spec.stage1_spec()
        if key in built or TrainResult.load(run_dir_for(stage1)) is not None:
            continue
        built.add(key)
        dataset_root(data, progress=progress)
        resolve_pretrained(spec, progress)


def _grid_worker(args: tuple[Any, ...]) -> list[PointOutcome]:
    run, group, parent_id, threads = args
    _limit_threads(threads)
    return [run_point(run, p, parent_id, progress=False) for p in group]


def run_grid(run: SuiteRun, *, workers: int = 1, progress: bool = True) -> SweepResult:
    """Run every point of a grid suite (see the module docstring)."""
    points = run.points()
    result = SweepResult(run.suite.suite)
    start = time.perf_counter()
    with parent_run(run, "grid") as parent:
        if workers <= 1:
            bar = tqdm(points, desc=f"{run.suite.suite}", disable=not progress, unit="point")
            for point in bar:
                bar.set_postfix_str(point.label())
                result.outcomes.append(run_point(run, point, parent.run_id, progress))
        else:
            prepare_shared_inputs(run, points, progress)
            groups = _stage1_groups(points)
            threads = max(1, (os.cpu_count() or 1) // workers)
            jobs = [(run, g, parent.run_id, threads) for g in groups]
            with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
                bar = tqdm(total=len(points), desc=run.suite.suite, disable=not progress)
                for outcomes in pool.map(_grid_worker, jobs):
                    result.outcomes.extend(outcomes)
                    bar.update(len(outcomes))
        result.seconds = time.perf_counter() - start
        parent.log_metrics(
            {"points": len(points), "points_trained": result.trained, "seconds": result.seconds}
        )
    return result


def _limit_threads(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


# ----------------------------------------------------------------------------- studies


def _live_states() -> tuple[Any, ...]:
    from optuna.trial import TrialState

    return (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING, TrialState.WAITING)


def fail_dead_trials(study: Any) -> int:
    """Mark RUNNING trials whose worker process (on this host) is gone as FAIL."""
    from optuna.trial import TrialState

    host = socket.gethostname()
    failed = 0
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker = trial.user_attrs.get("worker", "")
        worker_host, _, pid = worker.rpartition(":")
        if worker_host == host and pid.isdigit() and not _alive(int(pid)):
            study.tell(trial.number, state=TrialState.FAIL)
            failed += 1
    return failed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def bank_size_of(run: SuiteRun, point: Point) -> int:
    """Rows of the negative bank (every training image) of ``point``'s data."""
    from bench.engine import build_session

    session = build_session(run.spec(point), progress=False, pretrained=False)
    return len(session.pool_names)


@dataclass
class StudyContext:
    run: SuiteRun
    study_name: str
    storage: str
    n_trials: int
    parent_id: str | None
    progress: bool


def _study_worker(ctx: StudyContext, threads: int | None = None) -> int:
    """Run trials until the study holds ``n_trials`` live trials; returns trials run."""
    import optuna

    if threads:
        _limit_threads(threads)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    spec = ctx.run.suite.study
    assert spec is not None
    study = optuna.load_study(study_name=ctx.study_name, storage=open_storage(ctx.storage))
    bank = int(study.user_attrs["bank_size"])
    high = bank - 1 if spec.high == "bank" else int(spec.high)
    ran = 0
    while True:
        with study_lock(ctx.storage, ctx.study_name):
            live = study.get_trials(deepcopy=False, states=_live_states())
            if len(live) >= ctx.n_trials:
                return ran
            trial = study.ask()
            trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
        value = trial.suggest_int(spec.parameter, spec.low, high, log=spec.log)
        try:
            objective = _run_trial(ctx, trial, value)
        except optuna.TrialPruned:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        except Exception:
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            raise
        else:
            study.tell(trial, objective)
        ran += 1


def _run_trial(ctx: StudyContext, trial: Any, value: int) -> float:
    """Train every seed at ``value``; the objective is the mean over seeds."""
    import optuna

    run, spec = ctx.run, ctx.run.suite.study
    assert spec is not None
    values, run_ids = [], []
    for index, seed in enumerate(run.seeds):
        point = Point(run.methods[0], run.suite.datasets[0], spec.composition, seed)

        def report(phase: str, epoch: int, metrics: dict[str, float], first: bool = index == 0):
            if not first or spec.pruner == "none":
                return
            trial.report(metrics[spec.objective], epoch)
            if trial.should_prune():
                raise optuna.TrialPruned(f"epoch {epoch}: {metrics[spec.objective]:.2f}")

        outcome = run_point(
            run,
            point,
            ctx.parent_id,
            progress=False,
            overrides=(f"{spec.parameter}={value}",),
            trial=trial.number,
            on_epoch=report,
        )
        values.append(outcome.metrics[spec.objective])
        run_ids.append(outcome.run_id)
        trial.set_user_attr(f"seed{seed}", outcome.metrics[spec.objective])
    trial.set_user_attr("mlflow_run_ids", run_ids)
    trial.set_user_attr("std", statistics.stdev(values) if len(values) > 1 else 0.0)
    return statistics.fmean(values)


def _study_process(args: tuple[StudyContext, int]) -> int:
    ctx, threads = args
    return _study_worker(ctx, threads)


def run_study(
    run: SuiteRun,
    *,
    storage: str | None = None,
    workers: int = 1,
    n_trials: int | None = None,
    progress: bool = True,
) -> SweepResult:
    """Run (or continue) a suite's Optuna study (see the module docstring)."""
    import optuna

    spec = run.suite.study
    if spec is None:
        raise SweepError(f"suite {run.suite.suite} is not a study")
    url = storage_url(storage)
    name = study_name_for(run)
    n_trials = n_trials or run.profile.n_trials
    pruner: Any = (
        optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1)
        if spec.pruner == "median"
        else optuna.pruners.NopPruner()
    )
    start = time.perf_counter()
    with study_lock(url, name):
        study = optuna.create_study(
            study_name=name,
            storage=open_storage(url),
            direction=spec.direction,
            sampler=optuna.samplers.TPESampler(seed=spec.sampler_seed),
            pruner=pruner,
            load_if_exists=True,
        )
        if "bank_size" not in study.user_attrs:
            first = Point(run.methods[0], run.suite.datasets[0], "none", run.seeds[0])
            bank = bank_size_of(run, first)
            study.set_user_attr("bank_size", bank)
            if spec.high == "bank":  # always measure the whole bank (the paper's setting)
                study.enqueue_trial({spec.parameter: bank - 1})
            study.set_user_attr("suite", run.suite.suite)
            study.set_user_attr("objective", f"{spec.direction} val {spec.objective}")
        fail_dead_trials(study)
    # stage 1 once, before workers start, so they do not queue on its lock
    for seed in run.seeds:
        point = Point(run.methods[0], run.suite.datasets[0], "none", seed)
        run_point(run, point, None, progress)
    with parent_run(run, "study") as parent:
        parent.set_tags({"cirbench.optuna_study": name, "cirbench.optuna_storage": safe_url(url)})
        ctx = StudyContext(run, name, url, n_trials, parent.run_id, progress)
        if workers <= 1:
            _study_worker(ctx)
        else:
            threads = max(1, (os.cpu_count() or 1) // workers)
            with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
                list(pool.map(_study_process, [(ctx, threads)] * workers))
        seconds = time.perf_counter() - start
        done = optuna.load_study(study_name=name, storage=open_storage(url))
        complete = [t for t in done.trials if t.state == optuna.trial.TrialState.COMPLETE]
        parent.log_metrics({"trials": len(done.trials), "seconds": seconds})
        if complete:
            parent.log_metrics({f"best.{spec.objective}": done.best_value})
            parent.set_tags({"cirbench.best_params": str(done.best_params)})
    return SweepResult(run.suite.suite, seconds=seconds, study_name=name, storage=url)


# ----------------------------------------------------------------------------- entry point


def sweep(
    suite_name: str,
    *,
    profile: str = "default",
    data_root: str | Path | None = None,
    seeds: tuple[int, ...] | None = None,
    methods: tuple[str, ...] | None = None,
    workers: int = 1,
    storage: str | None = None,
    n_trials: int | None = None,
    overrides: tuple[str, ...] = (),
    progress: bool = True,
) -> SweepResult:
    """Run one suite (grid or study) under a profile."""
    from bench.core import distributed

    if distributed.is_distributed():
        raise SweepError(
            "a sweep runs its points in its own worker processes (--workers) and Optuna "
            "workers; launch it without torchrun (torchrun is for `cirbench train`)"
        )
    run = SuiteRun(
        load_suite(suite_name),
        get_profile(profile),
        Path(data_root).expanduser().resolve() if data_root else None,
        seeds_override=seeds,
        extra_overrides=overrides,
        storage=storage,
        methods_override=methods,
    )
    if run.suite.kind == "study":
        return run_study(
            run, storage=storage, workers=workers, n_trials=n_trials, progress=progress
        )
    return run_grid(run, workers=workers, progress=progress)


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
    Raises :class:`SpecError` on a name that is neither a suite nor a group, before anything
    runs (an ablation of several hours must not fail at its last suite)."""
    out: list[str] = []
    for name in names:
        for suite in SUITE_GROUPS.get(name, (name,)):
            if not suite_file(suite).is_file():
                groups = "; ".join(f"{g}: {', '.join(m)}" for g, m in SUITE_GROUPS.items())
                raise SpecError(
                    f"unknown suite {suite!r}; known suites: {', '.join(list_suites())}; "
                    f"groups: {groups}"
                )
            if suite not in out:
                out.append(suite)
    return tuple(out)


def ablate(
    *,
    profile: str = "default",
    suites: tuple[str, ...] = ABLATE_SUITES,
    data_root: str | Path | None = None,
    methods: tuple[str, ...] | None = None,
    seeds: tuple[int, ...] | None = None,
    workers: int = 1,
    storage: str | None = None,
    out: str | Path = "reports",
    progress: bool = True,
) -> dict[str, float]:
    """Every suite swept, then reported; returns seconds per suite (and ``total``).
    ``ablation_spn`` goes first: Tables 2 and 3 reuse its none and P+N points."""
    suites = expand_suite_names(suites)
    for name in suites:  # every suite file parses before the first one runs
        load_suite(name)
    seconds: dict[str, float] = {}
    start = time.perf_counter()
    for name in suites:
        t0 = time.perf_counter()
        print(f"{log_prefix} {name} ({profile})", flush=True)
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
        report = build_report(
            name,
            profile=profile,
            data_root=data_root,
            seeds=seeds,
            methods=methods,
            storage=storage,
            out=out,
        )
        seconds[name] = time.perf_counter() - t0
        print(f"{log_prefix} {name}: {seconds[name]:.0f} s -> {report.folder}", flush=True)
    seconds["total"] = time.perf_counter() - start
    return seconds
