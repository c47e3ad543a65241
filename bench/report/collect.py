"""Reading tracked runs: MLflow training runs matched to a suite's points by spec digest,
their final metrics, and a study suite's trial runs with its Optuna study."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bench.runner.storage import open_storage, storage_url, study_name_for
from bench.runner.suites import Point, SuiteRun
from bench.tracking import find_runs


def unmetric_key(key: str) -> str:
    """Inverse of :func:`bench.tracking.metric_key` for cirbench's metric names."""
    return key.replace("_at_", "@")


@dataclass
class TrackedPoint:
    point: Point
    digest: str
    run_id: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)


def tracked_runs_by_digest(experiment: str) -> dict[str, Any]:
    """Finished training runs of an MLflow experiment, by spec digest (newest wins)."""

    runs = find_runs(experiment, "attributes.status = 'FINISHED'")
    out: dict[str, Any] = {}
    for run in runs:  # newest first
        digest = run.data.tags.get("cirbench.spec_digest")
        if digest and digest not in out and run.data.tags.get("cirbench.kind") == "train":
            out[digest] = run
    return out


def final_metrics(run: Any) -> dict[str, float]:
    return {
        unmetric_key(k.removeprefix("final.")): v
        for k, v in run.data.metrics.items()
        if k.startswith("final.")
    }


def collect_points(run: SuiteRun) -> list[TrackedPoint]:
    """Each point of a grid suite with its tracked metrics (empty when not run yet)."""
    runs = tracked_runs_by_digest(run.experiment)
    out = []
    for point in run.points():
        digest = run.spec(point).digest()
        tracked = runs.get(digest)
        out.append(
            TrackedPoint(
                point,
                digest,
                tracked.info.run_id if tracked else None,
                final_metrics(tracked) if tracked else {},
            )
        )
    return out


def study_points(run: SuiteRun) -> tuple[list[dict[str, Any]], Any, str]:
    """(one record per tracked trial run, the Optuna study or None, why it is None)."""
    records = trial_records(run)
    study, error = load_study(run)
    return records, study, error


def trial_records(run: SuiteRun) -> list[dict[str, Any]]:
    """One record per tracked trial run of a study suite (trial, value, seed, state,
    final metrics, MLflow run id)."""

    spec = run.suite.study
    assert spec is not None
    query = f"tags.`cirbench.suite` = '{run.suite.suite}' and tags.`cirbench.kind` = 'train'"
    records = []
    for tracked in find_runs(run.experiment, query):
        if "cirbench.trial" not in tracked.data.tags:
            continue
        value = tracked.data.params.get(spec.parameter)
        records.append(
            {
                "trial": int(tracked.data.tags["cirbench.trial"]),
                "value": int(value) if value not in (None, "None") else None,
                "seed": int(tracked.data.tags.get("cirbench.seed", 0)),
                "status": tracked.info.status,
                "pruned": tracked.data.tags.get("cirbench.pruned") == "true",
                "metrics": final_metrics(tracked),
                "run_id": tracked.info.run_id,
                "stage1": tracked.data.tags.get("cirbench.stage1_checkpoint"),
            }
        )
    return records


def load_study(run: SuiteRun) -> tuple[Any, str]:
    """(the suite's Optuna study or None, why it is None)."""
    import optuna

    url = storage_url(run.storage)
    try:
        study = optuna.load_study(study_name=study_name_for(run), storage=open_storage(url))
    except Exception as exc:  # the tables need only MLflow; the index says what is missing
        return None, f"Optuna study {study_name_for(run)} not readable at {url}: {exc}"
    return study, ""
