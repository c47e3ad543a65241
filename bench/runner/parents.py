"""A suite's MLflow parent run: one per suite and profile, reused when the suite runs again;
every point, trial and seed is a nested child run tagged ``cirbench.suite``,
``cirbench.point`` and ``cirbench.trial``, so the UI's compare view lines them up."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from mlflow.exceptions import MlflowException

from bench.runner.suites import SuiteRun
from bench.tracking import TrackedRun, client, default_tracking_uri, find_runs, with_lock_retry


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


def tag_shared_run(run_id: str | None, suite: str) -> None:
    """Mark a run (possibly created by another suite) as a member of ``suite``."""
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
