"""A suite's MLflow parent run: one per suite and profile, reused when the suite runs again;
every point, trial and seed is a nested child run tagged ``cirbench.suite``,
``cirbench.point`` and ``cirbench.trial``, so the UI's compare view lines them up."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from mlflow.exceptions import MlflowException

from bench.runner.suites import Point, SuiteRun
from bench.tracking import TrackedRun, client, default_tracking_uri, find_runs, with_lock_retry
from bench.tracking.store import metric_key, param_value, run_name


def suite_tags(run: SuiteRun) -> dict[str, str]:
    return {
        "cirbench.kind": "suite",
        "cirbench.suite": run.suite.suite,
        "cirbench.profile": "real" if run.real else run.profile.name,
    }


def find_parent_run(run: SuiteRun) -> str | None:
    """The MLflow run id of this suite's parent run, if one exists."""
    tags = suite_tags(run)
    query = " and ".join(f"tags.`{k}` = '{v}'" for k, v in tags.items())
    runs = find_runs(run.experiment, query)
    return runs[0].info.run_id if runs else None


@contextlib.contextmanager
def parent_run(run: SuiteRun, kind: str) -> Iterator[Any]:
    """The suite's parent MLflow run (reused across invocations), open while sweeping."""
    params = {
        "suite": run.suite.suite,
        "title": run.suite.title,
        "kind": kind,
        "profile": "real" if run.real else run.profile.name,
        "seeds": list(run.seeds),
        "data_root": (
            {k: str(v) for k, v in run.data_roots.items()} if run.data_roots else "synthetic"
        ),
    }
    with TrackedRun(
        run.experiment,
        f"suite:{run.suite.suite}",
        params=params,
        tags=suite_tags(run),
        run_id=find_parent_run(run),
    ) as parent:
        yield parent


def swept_values(point: Point, overrides: tuple[str, ...] = ()) -> dict[str, Any]:
    """The values a suite sweeps at ``point`` by their short names (the last part of the
    spec key): the point's extra axes and a study trial's ``KEY=VALUE`` overrides
    (``{"K": 300}``, ``{"neg_num": 45}``)."""
    swept = {key.rsplit(".", 1)[-1]: value for key, value in point.extra}
    for override in overrides:
        key, _, value = override.partition("=")
        swept[key.rsplit(".", 1)[-1]] = value
    return swept


def join_suite(run_id: str | None, suite: str, swept: dict[str, Any]) -> None:
    """Make a run (possibly created by another suite) a member of ``suite``: the tag
    ``cirbench.in_suite.<suite>`` (the filter of the suite's runs, shared ones included),
    the swept values as params where missing (a run two suites share has the same value,
    its digest says so) and in its name."""
    if not run_id:
        return
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
    tracked = with_lock_retry(store.get_run, run_id)
    missing = {k: v for k, v in swept.items() if metric_key(k) not in tracked.data.params}
    for name, value in missing.items():
        with contextlib.suppress(MlflowException):  # a racing worker logged it just now
            with_lock_retry(store.log_param, run_id, metric_key(name), param_value(value))
    name = tracked.data.tags.get("mlflow.runName", tracked.info.run_name or "")
    absent = {k: v for k, v in swept.items() if f"{k}={v}" not in name}
    if absent and name:
        base, _, inside = name.partition("[")
        composition = tracked.data.params.get("composition", "none")
        kept = dict(part.split("=", 1) for part in inside.rstrip("]").split() if "=" in part)
        renamed = run_name(base, composition, {**kept, **absent})
        with_lock_retry(store.set_tag, run_id, "mlflow.runName", renamed)
