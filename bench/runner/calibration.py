"""Calibration suites: Optuna studies that find each method's scale-dependent numbers
(learning rates, epochs, the bank stage's tau) on the synthetic benchmark.

Per method and dataset, two studies run one after the other in the storage of
:mod:`bench.runner.storage` (names from :func:`~bench.runner.storage.calibration_study_name`):

1. ``stage1``: the suite's stage-1 keys (e.g. ``train.lr``, ``train.epochs``), objective
   the val metric of the stage-1 run (composition ``none``);
2. ``stage2``: the stage-2 keys (e.g. ``spn.negatives.lr`` / ``tau`` / ``epochs``) on the
   suite's stage-2 composition, every trial continuing from the best stage 1 of study 1
   (its keys fixed), so trials with the same stage 1 share its run.

Every trial runs in the synthetic world of ``calibration.synthetic_seed`` (its own images,
splits and pre-trained backbones; the tables report the world of seed 0: the suite's
specs carry it, see :meth:`SuiteRun.spec`), on the profile's seeds (objective: the mean
over them). The trial budget is exact and a rerun continues where it stopped (the same
lock-and-count as the study suites); finished trials' runs are reused by digest. The
chosen values are then written by hand into ``experiments/methods/<name>.yaml``
``synthetic:`` with a comment naming the study; ``cirbench report calibration`` shows the
studies (:mod:`bench.report.calibration`).
"""

from __future__ import annotations

import os
import socket
import statistics
import time
from typing import Any

import optuna

from bench.config.merge import dotted
from bench.runner.grid import SweepError, SweepResult, run_point
from bench.runner.parents import parent_run
from bench.runner.storage import (
    calibration_study_name,
    open_storage,
    safe_url,
    storage_url,
    study_lock,
)
from bench.runner.study import fail_dead_trials, live_states, slot_seed
from bench.runner.suites import CalibrationStage, Point, SearchRange, SuiteRun

#: The two studies of a calibration, in order.
STAGES = ("stage1", "stage2")


def calibration_sampler(sampler_seed: int, study_name: str, slot: int) -> Any:
    """The TPE sampler for the trial asked in ``slot`` of ``study_name``: seeded from all
    three, so studies of different methods draw different start-up trials, and a resumed
    study draws what an uninterrupted one would have (not its first draws again)."""
    return optuna.samplers.TPESampler(seed=slot_seed(sampler_seed, study_name, slot))


def searched_high(key: str, space: SearchRange, max_epochs: int | None) -> float:
    """The top of ``key``'s range: at most the profile's ``max_epochs`` for an integer
    ``...epochs`` key (the quick profile's cap holds for the searched epochs too)."""
    if space.integer and max_epochs is not None and key.endswith("epochs"):
        return min(space.high, max_epochs)
    return space.high


def suggest(trial: Any, key: str, space: SearchRange, max_epochs: int | None) -> float | int:
    """One value of ``key`` from its range (see :func:`searched_high`)."""
    high = searched_high(key, space, max_epochs)
    if space.integer:
        return trial.suggest_int(key, min(int(space.low), int(high)), int(high), log=space.log)
    return trial.suggest_float(key, space.low, high, log=space.log)


def incumbent(
    run: SuiteRun, method: str, dataset: str, stage: CalibrationStage, fixed: tuple[str, ...]
) -> dict[str, float | int]:
    """The values the synthetic profile uses now for ``stage``'s keys (each clamped into
    its range): a study's first trial, so that with a small budget the chosen values are
    the current ones unless a trial beats them on the calibration world's val split."""
    data = run.spec(Point(method, dataset, stage.composition, run.seeds[0]), fixed).model_dump()
    values: dict[str, float | int] = {}
    for key, space in stage.parameters.items():
        value = dotted(data, key)
        if value is None:
            raise SweepError(
                f"suite {run.suite.suite}: calibrated key {key!r} is not a field of "
                f"{method}'s {dataset} spec"
            )
        high = searched_high(key, space, run.profile.max_epochs)
        value = min(max(float(value), space.low), high)
        values[key] = round(value) if space.integer else value
    return values


def assignments(values: dict[str, Any]) -> tuple[str, ...]:
    """``KEY=VALUE`` overrides of a trial's (or a best trial's) values."""
    return tuple(f"{k}={v}" for k, v in sorted(values.items()))


def _objective(
    run: SuiteRun,
    method: str,
    dataset: str,
    stage: CalibrationStage,
    fixed: tuple[str, ...],
    values: dict[str, Any],
    parent_id: str | None,
    trial: int,
) -> tuple[float, list[str]]:
    """Mean val objective over the profile's seeds, and the trial's MLflow run ids."""
    assert run.suite.calibration is not None
    key = run.suite.calibration.objective
    overrides = (*fixed, *assignments(values))
    scores, run_ids = [], []
    for seed in run.seeds:
        point = Point(method, dataset, stage.composition, seed)
        outcome = run_point(run, point, parent_id, False, overrides=overrides, trial=trial)
        if key not in outcome.metrics:
            raise SweepError(
                f"suite {run.suite.suite}: calibration objective {key!r} is not a metric of "
                f"{dataset} (it has {sorted(outcome.metrics)})"
            )
        scores.append(outcome.metrics[key])
        run_ids.append(outcome.run_id)
    return statistics.fmean(scores), run_ids


def run_stage(
    run: SuiteRun,
    method: str,
    dataset: str,
    stage_name: str,
    fixed: tuple[str, ...],
    n_trials: int,
    url: str,
    parent_id: str | None,
) -> optuna.Study:
    """Run (or continue) one study until it holds ``n_trials`` live trials."""
    calibration = run.suite.calibration
    assert calibration is not None
    stage: CalibrationStage = getattr(calibration, stage_name)
    name = calibration_study_name(run, method, dataset, stage_name)
    with study_lock(url, name):
        study = optuna.create_study(
            study_name=name,
            storage=open_storage(url),
            direction="maximize",
            sampler=calibration_sampler(calibration.sampler_seed, name, 0),
            load_if_exists=True,
        )
        for key, value in {
            "n_trials": n_trials,
            "suite": run.suite.suite,
            "method": method,
            "dataset": dataset,
            "stage": stage_name,
            "composition": stage.composition,
            "fixed": list(fixed),
            "synthetic_seed": calibration.synthetic_seed,
            "objective": f"maximize val {calibration.objective}",
        }.items():
            study.set_user_attr(key, value)
        fail_dead_trials(study)
        measured = [t for t in study.trials if t.user_attrs.get("incumbent")]
        if not any(t.state in live_states() for t in measured):  # new, or its trial died
            study.enqueue_trial(
                incumbent(run, method, dataset, stage, fixed), user_attrs={"incumbent": True}
            )
    while True:
        with study_lock(url, name):
            live = study.get_trials(deepcopy=False, states=live_states())
            waiting = any(t.state == optuna.trial.TrialState.WAITING for t in live)
            if len(live) >= n_trials and not waiting:  # the incumbent runs within any budget
                return study
            study.sampler = calibration_sampler(calibration.sampler_seed, name, len(live))
            trial = study.ask()
            trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
        cap = run.profile.max_epochs
        values = {k: suggest(trial, k, space, cap) for k, space in stage.parameters.items()}
        try:
            value, run_ids = _objective(
                run, method, dataset, stage, fixed, values, parent_id, trial.number
            )
        except Exception:
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            raise
        trial.set_user_attr("mlflow_run_ids", run_ids)
        study.tell(trial, value)


def run_calibration(
    run: SuiteRun,
    *,
    storage: str | None = None,
    n_trials: int | None = None,
    stage1_trials: int | None = None,
    progress: bool = True,
) -> SweepResult:
    """Every method's and dataset's two studies (see the module docstring); ``n_trials``
    per study (default: the suite's budget), ``stage1_trials`` for the stage-1 studies
    (default: ``n_trials``; 1 runs only the incumbent, the profile's stage 1)."""
    if run.suite.calibration is None:
        raise SweepError(f"suite {run.suite.suite} is not a calibration")
    if run.real:
        raise SweepError(
            f"suite {run.suite.suite}: calibration finds the synthetic profile's numbers; on "
            "real data the `real` profile keeps the paper's (run it without --data-root)"
        )
    url = storage_url(storage)
    trials = run.suite.calibration.trials(run.profile, n_trials)
    budget = {"stage1": stage1_trials or trials, "stage2": trials}
    start = time.perf_counter()
    with parent_run(run, "calibration") as parent:
        parent.set_tags({"cirbench.optuna_storage": safe_url(url)})
        best: dict[str, Any] = {}
        for dataset in run.suite.datasets:
            for method in run.methods:
                fixed: tuple[str, ...] = ()
                for stage_name in STAGES:
                    if progress:
                        print(
                            f"[cirbench calibration] {method} {dataset} {stage_name}: "
                            f"{budget[stage_name]} trials",
                            flush=True,
                        )
                    study = run_stage(
                        run,
                        method,
                        dataset,
                        stage_name,
                        fixed,
                        budget[stage_name],
                        url,
                        parent.run_id,
                    )
                    chosen = study.best_params
                    best[f"{method}.{dataset}.{stage_name}"] = chosen
                    parent.log_metrics({f"best.{method}.{dataset}.{stage_name}": study.best_value})
                    fixed = (*fixed, *assignments(chosen))
        seconds = time.perf_counter() - start
        parent.log_metrics({"seconds": seconds})
        parent.set_tags({"cirbench.best_params": str(best)})
    return SweepResult(run.suite.suite, seconds=seconds, storage=url)
