"""Reports where researchers compare runs: the MLflow UI.

* :func:`describe_experiment`: the experiment's description (what it holds, which profile,
  how to read it) and its saved views of the runs page (:func:`suite_view`), one per suite
  that ran (the none / P / N / P+N view of ``ablation_spn`` among them).
* :func:`publish_report`: a suite's report on its parent run ``suite:<name>``: every table
  as an MLflow table (``report/<table>.json``, shown by the UI's artifact viewer) beside
  its CSV, Markdown and LaTeX, every plot (PNG, SVG), the suite's ``index.md``, and the
  table ``report/runs.json`` with one row per run of the suite, linked by URL.

Shared runs (Tables 2 and 3 reuse ``ablation_spn``'s none and P+N runs) have one MLflow
parent, the suite that trained them first: MLflow gives a run one ``mlflow.parentRunId``,
and a copy nested under the second parent would count twice in every experiment-wide
compare view and drift from the original when it resumes. Every other suite lists them
instead: the run carries ``cirbench.in_suite.<suite>``, the suite's saved view filters on
that tag, and the parent's ``runs.json`` and description link each run.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from pathlib import Path
from typing import Any

from bench.report import Report, collect_points
from bench.report.collect import trial_records
from bench.runner.parents import find_parent_run
from bench.runner.suites import SuiteRun
from bench.tracking import client, default_tracking_uri, with_lock_retry
from bench.tracking.store import (
    DESCRIPTION_TAG,
    SHARED_VIEW_TAG,
    experiment_url,
    get_or_create_experiment,
    run_url,
)

#: MLflow's limit on a tag value (``mlflow.utils.validation.MAX_TAG_VAL_LENGTH``).
MAX_TAG_VALUE = 8000

#: The metric every view shows (the headline of FashionIQ and CIRR).
VIEW_METRIC = "final.Rmean"


def _column(kind: str, key: str) -> str:
    """The UI's column key (``params.`composition```, ``metrics.`final.Rmean```)."""
    return f"{kind}.`{key}`"


def suite_filter(suite: str) -> str:
    """The runs-page filter that shows every run of ``suite``, shared ones included."""
    return f"tags.`cirbench.in_suite.{suite}` = 'true'"


def suite_view(run: SuiteRun) -> dict[str, Any]:
    """The saved view of a suite's runs: its filter, the params composition, method,
    dataset and the swept values, ``final.Rmean`` beside them; a compositions suite is
    grouped by (dataset, method, composition), averaged over seeds, so none / P / N / P+N
    of each method stand one under another with their ``final.Rmean``."""
    swept = [k.rsplit(".", 1)[-1] for k in run.suite.axes]
    if run.suite.study is not None:
        swept.append(run.suite.study.parameter.rsplit(".", 1)[-1])
    params = ["dataset", "method", "composition", *swept]
    view: dict[str, Any] = {
        "searchFilter": suite_filter(run.suite.suite),
        "orderByKey": _column("params", "method"),
        "orderByAsc": True,
        "selectedColumns": [
            *(_column("params", p) for p in params),
            _column("metrics", VIEW_METRIC),
        ],
        "runsHiddenMode": "SHOW_ALL",
    }
    if not swept and run.suite.study is None:
        view["groupBy"] = {
            "aggregateFunction": "average",
            "groupByKeys": [
                {"mode": "param", "groupByData": p} for p in ("dataset", "method", "composition")
            ],
        }
        view["groupsExpanded"] = {}
    return view


def view_key(suite: str) -> str:
    """The share key of a suite's saved view (stable: links keep working)."""
    return "cirbench-" + hashlib.sha256(suite.encode()).hexdigest()[:12]


def _experiment_text(run: SuiteRun, views: dict[str, str], experiment_id: str) -> str:
    profile = "real data" if run.real else f"synthetic benchmark, profile `{run.profile.name}`"
    lines = [
        f"cirbench ablation runs ({profile}).",
        "",
        "Each suite (a paper table or study) has a parent run `suite:<name>` whose artifacts "
        "hold its report (`report/`: the tables as MLflow tables and CSV, the plots, "
        "`index.md`, `runs.json` linking every run of the suite). Every other run is one "
        "training run: params `composition` (none / P / N / P+N ...), `method`, `dataset`, "
        "the swept value (`K`, `neg_num`, ...) and the full spec; metrics `final.*` "
        "(best val epoch) and per-epoch `val.*`. Runs shared by several suites sit under "
        "the suite that trained them first and carry `cirbench.in_suite.<suite>` for each.",
        "",
        "Saved views (columns and grouping set; open one, then switch to Chart view to plot):",
    ]
    for suite, key in sorted(views.items()):
        lines.append(f"- [{suite}]({experiment_url(experiment_id, key)})")
    return "\n".join(lines)[:MAX_TAG_VALUE]


def describe_experiment(run: SuiteRun) -> str:
    """Set the experiment's description and the suite's saved view; returns its URL."""
    store = client(default_tracking_uri())
    experiment_id = get_or_create_experiment(store, default_tracking_uri(), run.experiment)
    key = view_key(run.suite.suite)
    with_lock_retry(
        store.set_experiment_tag,
        experiment_id,
        SHARED_VIEW_TAG + key,
        json.dumps(suite_view(run)),
    )
    tags = with_lock_retry(store.get_experiment, experiment_id).tags
    views = {
        name: value
        for name, value in (
            (_view_suite(json.loads(v)), k.removeprefix(SHARED_VIEW_TAG))
            for k, v in tags.items()
            if k.startswith(SHARED_VIEW_TAG + "cirbench-")
        )
        if name
    }
    with_lock_retry(
        store.set_experiment_tag,
        experiment_id,
        DESCRIPTION_TAG,
        _experiment_text(run, views, experiment_id),
    )
    return experiment_url(experiment_id, key)


def _view_suite(view: dict[str, Any]) -> str:
    """The suite a saved view of :func:`suite_view` shows (from its filter)."""
    text = str(view.get("searchFilter", ""))
    prefix = "tags.`cirbench.in_suite."
    return text[len(prefix) :].split("`", 1)[0] if text.startswith(prefix) else ""


def suite_runs(run: SuiteRun) -> list[dict[str, Any]]:
    """One row per tracked run of the suite: name, composition, method, dataset, the
    swept values, seed, ``final.Rmean`` and the run's URL."""
    store = client(default_tracking_uri())
    ids = (
        [r["run_id"] for r in trial_records(run)]
        if run.suite.kind == "study"
        else [p.run_id for p in collect_points(run) if p.run_id]
    )
    swept = [k.rsplit(".", 1)[-1] for k in run.suite.axes]
    if run.suite.study is not None:
        swept.append(run.suite.study.parameter.rsplit(".", 1)[-1])
    rows = []
    for run_id in dict.fromkeys(ids):
        tracked = with_lock_retry(store.get_run, run_id)
        params, tags = tracked.data.params, tracked.data.tags
        rows.append(
            {
                "run": tags.get("mlflow.runName", ""),
                "composition": params.get("composition", tags.get("cirbench.composition")),
                "method": params.get("method", tags.get("cirbench.method")),
                "dataset": params.get("dataset", tags.get("cirbench.dataset")),
                **{k: params.get(k, "") for k in swept},
                "seed": tags.get("cirbench.seed"),
                VIEW_METRIC: tracked.data.metrics.get(VIEW_METRIC),
                "url": run_url(tracked.info.experiment_id, run_id),
            }
        )
    return sorted(rows, key=lambda r: str(r["run"]))


def _columns(rows: list[dict[str, Any]]) -> dict[str, list[Any]]:
    keys = list(dict.fromkeys(k for row in rows for k in row))
    return {k: [row.get(k) for row in rows] for k in keys}


def _table_columns(header: list[str], rows: list[list[str]]) -> dict[str, list[str]]:
    """A report table as MLflow table columns (repeated headers numbered)."""
    names: list[str] = []
    for title in header:
        name, n = title or "-", 2
        while name in names:
            name, n = f"{title} ({n})", n + 1
        names.append(name)
    return {name: [row[i] if i < len(row) else "" for row in rows] for i, name in enumerate(names)}


def log_table(store: Any, run_id: str, columns: dict[str, list[Any]], artifact: str) -> None:
    """An MLflow table artifact (the artifact viewer's "View as table"), replaced when it
    exists: ``MlflowClient.log_table`` appends to an existing table, so a report logged
    twice would list every row twice."""
    existing = {f.path for f in with_lock_retry(store.list_artifacts, run_id, "report")}
    if artifact not in existing:
        with_lock_retry(store.log_table, run_id, columns, artifact)
        return
    import pandas as pd

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / Path(artifact).name
        # the file log_table writes (the run already carries its mlflow.loggedArtifacts tag)
        pd.DataFrame(columns).to_json(path, orient="split", index=False, date_format="iso")
        with_lock_retry(store.log_artifact, run_id, str(path), str(Path(artifact).parent))


def publish_report(run: SuiteRun, report: Report) -> str | None:
    """Log ``report`` on the suite's parent run; returns its id (``None``: the suite has no
    parent run yet, so nothing was logged)."""
    parent = find_parent_run(run)
    if parent is None:
        return None
    store = client(default_tracking_uri())
    folder = Path(report.folder)
    for table in report.tables:
        columns = _table_columns(table.header, table.rows)
        log_table(store, parent, columns, f"report/{table.name}.json")
        for suffix in (".csv", ".md", ".tex"):
            if (folder / f"{table.name}{suffix}").is_file():
                with_lock_retry(
                    store.log_artifact, parent, str(folder / f"{table.name}{suffix}"), "report"
                )
    for plot in report.plots:  # PNG and SVG
        with_lock_retry(store.log_artifact, parent, str(folder / plot), "report")
    with_lock_retry(store.log_artifact, parent, str(folder / "index.md"), "report")
    rows = suite_runs(run)
    if rows:
        log_table(store, parent, _columns(rows), "report/runs.json")
    with_lock_retry(store.set_tag, parent, DESCRIPTION_TAG, _parent_text(run, report, rows))
    return parent


def _parent_text(run: SuiteRun, report: Report, rows: list[dict[str, Any]]) -> str:
    """The parent run's description: the title, the tables, each run linked."""
    experiment_id = rows[0]["url"].split("/experiments/")[1].split("/")[0] if rows else None
    view = (
        f"[the suite's runs]({experiment_url(experiment_id, view_key(run.suite.suite))})"
        if experiment_id
        else "the suite's runs"
    )
    lines = [
        f"**{run.suite.title}**",
        "",
        f"Report in this run's artifacts (`report/`); {view} (filter "
        f"`{suite_filter(run.suite.suite)}`, shared runs included).",
        "",
        *(table.markdown() for table in report.tables),
        f"Runs ({len(rows)}):",
        *(f"- [{r['run']}]({r['url']}): {VIEW_METRIC} {r[VIEW_METRIC]}" for r in rows),
    ]
    text = "\n".join(lines)
    return text if len(text) <= MAX_TAG_VALUE else text[: MAX_TAG_VALUE - 20] + "\n\n(cut)"
