"""Study suites: an Optuna study over one spec key (e.g. the negative-bank size).

The study lives in a storage given by URL (:mod:`bench.runner.storage`): the default is a
journal file under ``CIRBENCH_HOME`` (``optuna/journal.log``), ``postgresql://...`` /
``sqlite:///...`` an RDB and ``journal:PATH`` a journal file elsewhere, so several
processes or machines can join one study. The trial budget is exact across workers: a
worker asks for a trial only under a lock (a file lock; a PostgreSQL advisory lock for
``postgresql://``) after counting the study's live trials. Trials of dead workers (same
host) are marked failed and redone on the next run. The objective is the mean over seeds;
pruning reads the first seed's per-epoch metric.

**Anchors** (the whole bank when ``high: bank``, and every value of the suite's
``enqueue``) are enqueued when the study is created and again whenever none of their
trials is complete, waiting or running (a killed anchor trial is redone on the next run);
they are never pruned, and a study that ends without a complete trial per anchor raises
:class:`~bench.runner.grid.SweepError` instead of writing a table without them.

**Samplers and pruners**: every worker loads the study with the suite's declared pruner
and, for each trial it asks, a fresh sampler of the declared kind seeded from
``sampler_seed`` and the trial's *slot* (how many live trials the study held when it was
asked, under the study lock). What is reproducible: a trial sampled at random (every
``random`` trial, TPE's first 10) draws a value that depends on the seed and its slot
only, so the same values come whatever the number of workers, and a trial killed and
redone gets its slot, hence its value, back; TPE's later trials depend on the trials
complete when they are asked, hence reproducible with one worker and not across worker
counts.
"""

from __future__ import annotations

import hashlib
import os
import socket
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from typing import Any

import optuna
from optuna.trial import TrialState

from bench.core.atomic import process_alive
from bench.core.faults import reached
from bench.runner.grid import (
    WORKER_THREADS,
    SweepError,
    SweepResult,
    limit_threads,
    run_point,
)
from bench.runner.parents import parent_run
from bench.runner.storage import open_storage, safe_url, storage_url, study_lock, study_name_for
from bench.runner.suites import Point, StudySpec, SuiteRun
from bench.tracking.store import find_experiment_id, run_url
from bench.train.session import build_session


def live_states() -> tuple[Any, ...]:
    return (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING, TrialState.WAITING)


def slot_seed(*parts: object) -> int:
    """A sampler seed from ``parts`` (the base seed, the trial's slot, ...): a sampler made
    afresh for each ask draws the same values however often a study was resumed."""
    digest = hashlib.sha256(":".join(str(p) for p in parts).encode()).hexdigest()
    return int(digest[:8], 16)


def sampler_for(spec: StudySpec, slot: int) -> Any:
    """The declared sampler of a study, seeded for the trial asked in ``slot``."""
    seed = slot_seed(spec.sampler_seed, slot)
    if spec.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed)


def pruner_for(spec: StudySpec) -> Any:
    """The declared pruner of a study (``none``: never pruned)."""
    if spec.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1)
    return optuna.pruners.NopPruner()


def anchor_values(spec: StudySpec, bank: int) -> list[int]:
    """The values a study always measures (see the module docstring)."""
    values = [bank - 1] if spec.high == "bank" else []
    for value in spec.enqueue:
        resolved = bank - 1 if value == "bank" else int(value)
        if resolved not in values:
            values.append(resolved)
    return values


def _trial_value(trial: Any, parameter: str) -> Any:
    """A trial's value of ``parameter``: its param, or the fixed one of a waiting trial."""
    if parameter in trial.params:
        return trial.params[parameter]
    return trial.system_attrs.get("fixed_params", {}).get(parameter)


def anchors_in(study: Any, spec: StudySpec, states: tuple[Any, ...]) -> set[int]:
    """The study's anchors that have a trial in one of ``states``."""
    anchors = set(study.user_attrs.get("anchors", []))
    trials = study.get_trials(deepcopy=False, states=states)
    return {v for v in (_trial_value(t, spec.parameter) for t in trials) if v in anchors}


def enqueue_missing_anchors(study: Any, spec: StudySpec) -> list[int]:
    """Enqueue every anchor without a complete, waiting or running trial; returns them."""
    present = anchors_in(study, spec, (TrialState.COMPLETE, TrialState.RUNNING, TrialState.WAITING))
    missing = [v for v in study.user_attrs.get("anchors", []) if v not in present]
    for value in missing:
        study.enqueue_trial({spec.parameter: value}, user_attrs={"anchor": True})
    return missing


def require_anchors(study: Any, spec: StudySpec) -> None:
    """Raise :class:`SweepError` unless every anchor of ``study`` has a complete trial."""
    complete = anchors_in(study, spec, (TrialState.COMPLETE,))
    missing = [v for v in study.user_attrs.get("anchors", []) if v not in complete]
    if missing:
        raise SweepError(
            f"study {study.study_name} ended without its anchor trial(s) "
            + ", ".join(f"{spec.parameter}={v}" for v in missing)
            + " (none completed); run the sweep again to redo them"
        )


def fail_dead_trials(study: Any) -> int:
    """Mark RUNNING trials whose worker process (on this host) is gone as FAIL."""
    host = socket.gethostname()
    failed = 0
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker = trial.user_attrs.get("worker", "")
        worker_host, _, pid = worker.rpartition(":")
        if worker_host == host and pid.isdigit() and not process_alive(int(pid)):
            study.tell(trial.number, state=TrialState.FAIL)
            failed += 1
    return failed


def bank_size_of(run: SuiteRun, point: Point) -> int:
    """Rows of the negative bank of ``point`` (a point of the study's composition: its
    bank holds the images of its training triplets, duplicates merged)."""
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
    """Run trials until the study holds ``n_trials`` live trials and no waiting one;
    returns trials run."""

    if threads:
        limit_threads(threads)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    spec = ctx.run.suite.study
    assert spec is not None
    study = optuna.load_study(
        study_name=ctx.study_name,
        storage=open_storage(ctx.storage),
        sampler=sampler_for(spec, 0),
        pruner=pruner_for(spec),
    )
    bank = int(study.user_attrs["bank_size"])
    high = bank - 1 if spec.high == "bank" else int(spec.high)
    anchors = set(study.user_attrs.get("anchors", []))
    ran = 0
    while True:
        with study_lock(ctx.storage, ctx.study_name):
            trial, value = ask_trial(study, spec, ctx.n_trials, high)
        if trial is None:
            return ran
        try:
            objective = _run_trial(ctx, trial, value, prune=value not in anchors)
        except optuna.TrialPruned:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        except Exception:
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            raise
        else:
            study.tell(trial, objective)
        ran += 1


def ask_trial(study: Any, spec: StudySpec, n_trials: int, high: int) -> tuple[Any, int]:
    """Under the study lock: the next trial and its value, or ``(None, 0)`` when the study
    holds ``n_trials`` live trials and none waits (a re-enqueued anchor always runs)."""
    live = study.get_trials(deepcopy=False, states=live_states())
    waiting = any(t.state == TrialState.WAITING for t in live)
    if len(live) >= n_trials and not waiting:
        return None, 0
    study.sampler = sampler_for(spec, len(live))
    trial = study.ask()
    trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
    trial.set_user_attr("slot", len(live))
    return trial, trial.suggest_int(spec.parameter, spec.low, high, log=spec.log)


def mlflow_run_url(run: SuiteRun, run_id: str) -> str:
    """The MLflow UI page of a trial's run (the UI of ``nox -s ui``)."""
    experiment = find_experiment_id(run.experiment)
    return run_url(experiment, run_id) if experiment else run_id


def _run_trial(ctx: StudyContext, trial: Any, value: int, prune: bool = True) -> float:
    """Train every seed at ``value``; the objective is the mean over seeds (``prune``:
    the first seed's epochs may prune the trial)."""

    run, spec = ctx.run, ctx.run.suite.study
    assert spec is not None
    reached("study.trial")
    values, run_ids = [], []
    for index, seed in enumerate(run.seeds):
        point = Point(run.methods[0], run.suite.datasets[0], spec.composition, seed)

        def report(phase: str, epoch: int, metrics: dict[str, float], first: bool = index == 0):
            if not first or not prune or spec.pruner == "none":
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
        if outcome.run_id:  # optuna-dashboard shows user attributes: a link per seed
            trial.set_user_attr(f"mlflow_seed{seed}", mlflow_run_url(run, outcome.run_id))
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

    spec = run.suite.study
    if spec is None:
        raise SweepError(f"suite {run.suite.suite} is not a study")
    url = storage_url(storage)
    name = study_name_for(run)
    n_trials = n_trials or run.profile.n_trials
    start = time.perf_counter()
    with study_lock(url, name):
        study = optuna.create_study(
            study_name=name,
            storage=open_storage(url),
            direction=spec.direction,
            sampler=sampler_for(spec, 0),
            pruner=pruner_for(spec),
            load_if_exists=True,
        )
        if study.metric_names is None:  # optuna-dashboard's axis label ("Objective 0")
            study.set_metric_names([spec.objective])
        if "bank_size" not in study.user_attrs:
            first = Point(run.methods[0], run.suite.datasets[0], spec.composition, run.seeds[0])
            bank = bank_size_of(run, first)
            study.set_user_attr("bank_size", bank)
            study.set_user_attr("suite", run.suite.suite)
            study.set_user_attr("objective", f"{spec.direction} val {spec.objective}")
        # the whole bank (the paper's setting) and the suite's declared values; an anchor
        # the suite file gained since the study began is added (and measured next)
        declared = anchor_values(spec, int(study.user_attrs["bank_size"]))
        anchors = list(study.user_attrs.get("anchors", []))
        if any(v not in anchors for v in declared):
            study.set_user_attr("anchors", anchors + [v for v in declared if v not in anchors])
        fail_dead_trials(study)
        enqueue_missing_anchors(study, spec)
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
            with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
                list(pool.map(_study_process, [(ctx, WORKER_THREADS)] * workers))
        seconds = time.perf_counter() - start
        done = optuna.load_study(study_name=name, storage=open_storage(url))
        complete = [t for t in done.trials if t.state == optuna.trial.TrialState.COMPLETE]
        parent.log_metrics({"trials": len(done.trials), "seconds": seconds})
        if complete:
            parent.log_metrics({f"best.{spec.objective}": done.best_value})
            parent.set_tags({"cirbench.best_params": str(done.best_params)})
        require_anchors(done, spec)
    return SweepResult(run.suite.suite, seconds=seconds, study_name=name, storage=url)


# ----------------------------------------------------------------------------- entry point
