"""The report of a calibration suite: per method and dataset, the best values of its two
Optuna studies beside the values the synthetic profile uses now, and every trial.

The studies' record is their Optuna storage (each trial's values, state, objective and
the MLflow runs it trained, under ``mlflow_run_ids``); see :mod:`bench.runner.calibration`.
"""

from __future__ import annotations

import math
from typing import Any

from bench.config.merge import dotted
from bench.report.tables import Table, synthetic_note
from bench.runner.storage import calibration_study_name, open_storage, storage_url
from bench.runner.suites import Point, SuiteRun

#: The studies of a calibration, in the order they run (bench.runner.calibration.STAGES).
STAGE_NAMES = ("stage1", "stage2")


def _number(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def _load(run: SuiteRun, method: str, dataset: str, stage: str) -> Any:
    import optuna

    try:
        return optuna.load_study(
            study_name=calibration_study_name(run, method, dataset, stage),
            storage=open_storage(storage_url(run.storage)),
        )
    except KeyError:  # optuna: no such study
        return None


def calibration_tables(run: SuiteRun) -> tuple[list[Table], list[str]]:
    """(the summary table and one trial table per method and dataset, what is missing)."""
    calibration = run.suite.calibration
    assert calibration is not None
    objective = calibration.objective
    summary_rows, summary_raw, tables, missing = [], [], [], []
    budgets: dict[str, set[Any]] = {}
    for dataset in run.suite.datasets:
        for method in run.methods:
            rows, raw = [], []
            best_cells: list[str] = []
            record: dict[str, Any] = {"method": method, "dataset": dataset}
            for stage_name in STAGE_NAMES:
                stage = getattr(calibration, stage_name)
                keys = list(stage.parameters)
                current = run.spec(Point(method, dataset, stage.composition, 0)).model_dump()
                now = ", ".join(
                    f"{k.rsplit('.', 1)[-1]} {_number(dotted(current, k))}" for k in keys
                )
                study = _load(run, method, dataset, stage_name)
                done = [t for t in study.trials if t.value is not None] if study else []
                if not done:
                    missing.append(f"{method} {dataset} {stage_name}: no finished trial")
                    best_cells += ["–", "–", "0", now]
                    continue
                best = max(done, key=lambda t: t.value)
                chosen = ", ".join(
                    f"{k.rsplit('.', 1)[-1]} {_number(best.params.get(k))}" for k in keys
                )
                best_cells += [chosen, f"{best.value:.2f}", str(len(done)), now]
                budgets.setdefault(stage_name, set()).add(study.user_attrs.get("n_trials"))
                record[f"{stage_name} trials"] = len(done)
                record |= {f"{stage_name} best {k}": best.params.get(k) for k in keys}
                record |= {f"{stage_name} best {objective}": best.value}
                for trial in study.trials:
                    value = trial.value if trial.value is not None else math.nan
                    mark = " (best)" if trial.number == best.number else ""
                    if trial.user_attrs.get("incumbent"):
                        mark += " (now)"
                    values = ", ".join(
                        f"{k.rsplit('.', 1)[-1]} {_number(trial.params.get(k))}" for k in keys
                    )
                    rows.append(
                        [
                            stage_name,
                            str(trial.number),
                            trial.state.name.lower() + mark,
                            values,
                            "–" if math.isnan(value) else f"{value:.2f}",
                        ]
                    )
                    raw.append(
                        {"stage": stage_name, "trial": trial.number, "state": trial.state.name}
                        | {k: trial.params.get(k) for k in keys}
                        | {objective: value}
                    )
            summary_rows.append([method, dataset, *best_cells])
            summary_raw.append(record)
            if rows:
                tables.append(
                    Table(
                        f"calibration_{method}_{dataset}",
                        f"Calibration trials: {method} on {dataset}{synthetic_note(run)}",
                        ["study", "trial", "state", "values", f"val {objective}"],
                        rows,
                        raw,
                        note="stage1: the stage-1 run; stage2: N from the best stage 1.",
                    )
                )
    header = [
        "method",
        "dataset",
        "stage 1 best",
        f"val {objective}",
        "trials",
        "stage 1 now",
        "stage 2 best",
        f"val {objective} after N",
        "trials",
        "stage 2 now",
    ]
    ran = {
        stage: "/".join(str(b) for b in sorted(b for b in found if b is not None))
        for stage, found in budgets.items()
    }
    budget = " and ".join(
        f"{ran[stage]} ({stage})" for stage in STAGE_NAMES if ran.get(stage)
    ) or str(calibration.trials(run.profile))
    note = (
        f"Val split of the synthetic world of seed {calibration.synthetic_seed} (the tables "
        f"report seed 0); mean over the profile's seeds; trials per study: {budget} "
        f"(the suite's budget is {calibration.n_trials}, capped by the profile's n_trials; "
        "`--trials` and `--stage1-trials` override; 'trials': the finished ones). Each "
        "study's first trial is the value the synthetic profile used when it started "
        "(marked 'now' in the trial tables). 'now' here: the value the profile uses."
    )
    summary = Table(
        "calibration",
        f"{run.suite.title}{synthetic_note(run)}",
        header,
        summary_rows,
        summary_raw,
        note=note,
    )
    return [summary, *tables], missing
