"""``cirbench report SUITE``: tables and plots of a suite, built from the tracked runs.

Every number comes from the MLflow store (finished runs, matched to the suite's points by
the spec digest the engine tags them with), never from a process's memory, so a report
can be rebuilt at any time and always agrees with the MLflow UI. Outputs under
``reports/<suite>/``: tables as Markdown, CSV and LaTeX, plots as PNG and SVG, and an
``index.md``. The folder is built beside the old one and swapped in, so a crash never
leaves a half-written report.
"""

from __future__ import annotations

import csv
import io
import math
import os
import shutil
import statistics
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.errors import CirbenchError
from bench.storage import open_storage, storage_url, study_name_for
from bench.suites import PUBLISHED_FILE, Point, SuiteRun, get_profile, load_suite

FIQ_COLUMNS = (
    "dress_R@10",
    "dress_R@50",
    "shirt_R@10",
    "shirt_R@50",
    "toptee_R@10",
    "toptee_R@50",
    "avg_R@10",
    "avg_R@50",
    "Rmean",
)
CIRR_COLUMNS = ("R@1", "R@5", "R@10", "R@50", "Rsubset@1", "Rsubset@2", "Rsubset@3", "Rmean")
CIRCO_COLUMNS = ("mAP@5", "mAP@10", "mAP@25", "mAP@50")
COLUMNS = {"fashioniq": FIQ_COLUMNS, "cirr": CIRR_COLUMNS, "circo": CIRCO_COLUMNS}
HEADLINE = {"fashioniq": "Rmean", "cirr": "Rmean", "circo": "mAP@10"}


class ReportError(CirbenchError):
    """A report cannot be built (no tracked runs for the suite)."""


# ----------------------------------------------------------------------------- runs -> rows


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
    from bench.tracking import find_runs

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


@dataclass
class Cell:
    values: list[float]

    @property
    def mean(self) -> float:
        return statistics.fmean(self.values) if self.values else math.nan

    @property
    def std(self) -> float:
        return statistics.stdev(self.values) if len(self.values) > 1 else 0.0

    def text(self) -> str:
        if not self.values:
            return "–"
        if len(self.values) == 1:
            return f"{self.mean:.2f}"
        return f"{self.mean:.2f} ± {self.std:.2f}"


def present_columns(points: Iterable[TrackedPoint], dataset: str) -> tuple[str, ...]:
    """The dataset's metric columns that at least one point has (e.g. only the FashionIQ
    categories a profile trains on)."""
    seen = {k for p in points if p.point.dataset == dataset for k in p.metrics}
    return tuple(c for c in COLUMNS[dataset] if c in seen)


def _gain(value: float) -> str:
    return "–" if math.isnan(value) else f"{value:+.2f}"


def aggregate(
    points: Iterable[TrackedPoint], key: tuple[str, ...], columns: Iterable[str]
) -> dict[tuple[Any, ...], dict[str, Cell]]:
    """Group points by ``key`` (attributes of :class:`Point` or extra axis names) and
    collect each column's values over seeds."""
    groups: dict[tuple[Any, ...], dict[str, Cell]] = {}
    columns = tuple(columns)
    for tp in points:
        extra = dict(tp.point.extra)
        group = tuple(extra[k] if k in extra else getattr(tp.point, k) for k in key)
        cells = groups.setdefault(group, {c: Cell([]) for c in columns})
        for column in columns:
            if column in tp.metrics:
                cells[column].values.append(tp.metrics[column])
    return groups


# ----------------------------------------------------------------------------- tables


@dataclass
class Table:
    """A table with a title, a header and text cells (plus raw numbers for the CSV)."""

    name: str
    title: str
    header: list[str]
    rows: list[list[str]]
    raw: list[dict[str, Any]]
    note: str = ""

    def markdown(self) -> str:
        lines = [f"### {self.title}", ""]
        if self.note:
            lines += [self.note, ""]
        lines.append("| " + " | ".join(self.header) + " |")
        lines.append("|" + "|".join("---" for _ in self.header) + "|")
        lines += ["| " + " | ".join(row) + " |" for row in self.rows]
        return "\n".join(lines) + "\n"

    def csv(self) -> str:
        buffer = io.StringIO()
        fields = list(dict.fromkeys(k for row in self.raw for k in row))
        writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.raw)
        return buffer.getvalue()

    def latex(self) -> str:
        def esc(text: str) -> str:
            return (
                text.replace("\\", "\\textbackslash{}")
                .replace("&", "\\&")
                .replace("%", "\\%")
                .replace("_", "\\_")
                .replace("#", "\\#")
                .replace("±", "$\\pm$")
                .replace("–", "--")
            )

        spec = "l" * 2 + "r" * (len(self.header) - 2)
        lines = [
            "% needs \\usepackage{booktabs}",
            "\\begin{table}[t]",
            "\\centering",
            f"\\caption{{{esc(self.title)}}}",
            f"\\begin{{tabular}}{{{spec}}}",
            "\\toprule",
            " & ".join(esc(h) for h in self.header) + " \\\\",
            "\\midrule",
            *(" & ".join(esc(c) for c in row) + " \\\\" for row in self.rows),
            "\\bottomrule",
            "\\end{tabular}",
            "\\end{table}",
        ]
        return "\n".join(lines) + "\n"


def synthetic_note(run: SuiteRun) -> str:
    if run.real:
        return ""
    return (
        f" (synthetic benchmark, profile {run.profile.name}: not comparable to published numbers)"
    )


def paper_names() -> dict[str, str]:
    from methods import get_method_class, list_methods

    return {m: get_method_class(m).paper_name or m for m in list_methods()}


def load_published(path: Path = PUBLISHED_FILE) -> dict[tuple[str, str, str, str], float]:
    """(dataset, paper method name, spn, metric) -> the published value."""
    out: dict[tuple[str, str, str, str], float] = {}
    with path.open() as handle:
        rows = csv.DictReader(line for line in handle if not line.startswith("#"))
        for row in rows:
            key = (row["dataset"], row["method"], row["spn"], row["metric"])
            out[key] = float(row["value"])
    return out


def paper_table(run: SuiteRun, points: list[TrackedPoint]) -> list[Table]:
    """Tables 2 / 3 in the paper's layout: per method a baseline row, a +SPN row and the
    gain; on real data the published rows beside them."""
    names = paper_names()
    published = load_published() if run.real else {}
    tables = []
    for dataset in run.suite.datasets:
        columns = present_columns(points, dataset)
        groups = aggregate(
            [p for p in points if p.point.dataset == dataset], ("method", "composition"), columns
        )
        header = ["method", "SPN", *columns, "seeds"]
        rows, raw = [], []
        for method in run.methods:
            base = groups.get((method, "none"), {})
            for composition in run.suite.compositions:
                cells = groups.get((method, composition), {})
                label = "–" if composition == "none" else f"+{composition}"
                seeds = max((len(c.values) for c in cells.values()), default=0)
                rows.append(
                    [
                        names.get(method, method),
                        label,
                        *(cells[c].text() for c in columns),
                        str(seeds),
                    ]
                )
                raw.append(
                    {"method": method, "spn": composition, "seeds": seeds}
                    | {f"{c} mean": cells[c].mean for c in columns}
                    | {f"{c} std": cells[c].std for c in columns}
                )
                if composition != "none" and base:
                    gains = [cells[c].mean - base[c].mean for c in columns]
                    rows.append([names.get(method, method), "gain", *(_gain(g) for g in gains), ""])
                spn = "none" if composition == "none" else "P+N"
                paper = [published.get((dataset, names.get(method, ""), spn, c)) for c in columns]
                if run.real and any(v is not None for v in paper):
                    rows.append(
                        [
                            names.get(method, method),
                            f"{label} (published)",
                            *("–" if v is None else f"{v:.2f}" for v in paper),
                            "",
                        ]
                    )
        number = run.suite.report.paper_table
        tables.append(
            Table(
                f"table{number or ''}_{dataset}",
                f"{run.suite.title}{synthetic_note(run)}",
                header,
                rows,
                raw,
                note="mean ± std over seeds; gain = +SPN minus the baseline (means).",
            )
        )
    return tables


def compositions_table(run: SuiteRun, points: list[TrackedPoint]) -> list[Table]:
    """Per dataset: rows method x composition, the dataset's metrics, gain over "none"."""
    tables = []
    for dataset in run.suite.datasets:
        columns = present_columns(points, dataset)
        headline = HEADLINE[dataset]
        groups = aggregate(
            [p for p in points if p.point.dataset == dataset], ("method", "composition"), columns
        )
        header = ["method", "composition", *columns, f"Δ{headline} vs none", "seeds"]
        rows, raw = [], []
        for method in run.methods:
            base = groups.get((method, "none"))
            for composition in run.suite.compositions:
                cells = groups.get((method, composition))
                if cells is None:
                    continue
                gain = cells[headline].mean - base[headline].mean if base else math.nan
                seeds = max(len(c.values) for c in cells.values())
                rows.append(
                    [
                        method,
                        composition,
                        *(cells[c].text() for c in columns),
                        _gain(gain),
                        str(seeds),
                    ]
                )
                raw.append(
                    {"method": method, "composition": composition, "seeds": seeds}
                    | {f"{c} mean": cells[c].mean for c in columns}
                    | {f"{c} std": cells[c].std for c in columns}
                )
        tables.append(
            Table(
                f"{run.suite.suite}_{dataset}",
                f"{run.suite.title}: {dataset}{synthetic_note(run)}",
                header,
                rows,
                raw,
                note="mean ± std over seeds.",
            )
        )
    return tables


def axis_table(run: SuiteRun, points: list[TrackedPoint]) -> list[Table]:
    """Per dataset: rows method x each value of the suite's extra axis."""
    [axis] = list(run.suite.axes)
    tables = []
    for dataset in run.suite.datasets:
        headline = HEADLINE[dataset]
        columns = present_columns(points, dataset)
        groups = aggregate(
            [p for p in points if p.point.dataset == dataset],
            ("method", "composition", axis),
            columns,
        )
        short = axis.rsplit(".", 1)[-1]
        header = ["method", "composition", short, *columns, "seeds"]
        rows, raw = [], []
        for (method, composition, value), cells in sorted(
            groups.items(), key=lambda kv: str(kv[0])
        ):
            seeds = max(len(c.values) for c in cells.values())
            rows.append(
                [method, composition, str(value), *(cells[c].text() for c in columns), str(seeds)]
            )
            raw.append(
                {"method": method, "composition": composition, short: value, "seeds": seeds}
                | {f"{c} mean": cells[c].mean for c in columns}
                | {f"{c} std": cells[c].std for c in columns}
            )
        rows.sort(key=lambda r: (r[0], r[1], float(r[2])))
        tables.append(
            Table(
                f"{run.suite.suite}_{dataset}",
                f"{run.suite.title}: {dataset}{synthetic_note(run)}",
                header,
                rows,
                raw,
                note=f"{headline} and the other metrics, mean ± std over seeds.",
            )
        )
    return tables


# ----------------------------------------------------------------------------- studies


def study_points(run: SuiteRun) -> tuple[list[dict[str, Any]], Any, str]:
    """(one record per tracked trial run, the Optuna study or None, why it is None)."""
    from bench.tracking import find_runs

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
            }
        )
    import optuna

    url = storage_url(run.storage)
    try:
        study = optuna.load_study(study_name=study_name_for(run), storage=open_storage(url))
    except Exception as exc:  # the tables need only MLflow; the index says what is missing
        return records, None, f"Optuna study {study_name_for(run)} not readable at {url}: {exc}"
    return records, study, ""


def study_table(run: SuiteRun, records: list[dict[str, Any]], study: Any) -> list[Table]:
    spec = run.suite.study
    assert spec is not None
    short = spec.parameter.rsplit(".", 1)[-1]
    dataset = run.suite.datasets[0]
    seen = {k for r in records for k in r["metrics"]}
    columns = tuple(c for c in COLUMNS[dataset] if c in seen)
    by_trial: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        by_trial[r["trial"]].append(r)
    bank = study.user_attrs.get("bank_size") if study is not None else None
    header = ["trial", short, "state", *columns, "seeds"]
    rows, raw = [], []
    for trial, items in sorted(by_trial.items()):
        finished = [r for r in items if r["status"] == "FINISHED"]
        cells = {c: Cell([r["metrics"][c] for r in finished if c in r["metrics"]]) for c in columns}
        state = (
            "pruned"
            if any(r["pruned"] for r in items)
            else ("complete" if len(finished) == len(run.seeds) else "partial")
        )
        value = items[0]["value"]
        label = (
            f"{value} (whole bank)"
            if bank and value is not None and value >= bank - 1
            else str(value)
        )
        rows.append(
            [str(trial), label, state, *(cells[c].text() for c in columns), str(len(finished))]
        )
        raw.append(
            {"trial": trial, short: value, "state": state, "seeds": len(finished)}
            | {f"{c} mean": cells[c].mean for c in columns}
            | {f"{c} std": cells[c].std for c in columns}
        )
    note = f"Objective: {spec.direction} val {spec.objective} (mean over seeds)."
    if bank:
        note += f" Bank: {bank} training images."
    if study is not None:
        complete = [t for t in study.trials if t.state.name == "COMPLETE"]
        if complete:
            best = study.best_params.get(spec.parameter)
            note += f" Best: {short} = {best} ({study.best_value:.2f})."
    return [
        Table(
            run.suite.suite,
            f"{run.suite.title}{synthetic_note(run)}",
            header,
            rows,
            raw,
            note=note,
        )
    ]


# ----------------------------------------------------------------------------- plots


def _figure() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, folder: Path, name: str) -> list[str]:
    files = []
    for ext in ("png", "svg"):
        path = folder / f"{name}.{ext}"
        fig.savefig(path, dpi=120, bbox_inches="tight")
        files.append(path.name)
    _figure().close(fig)
    return files


def bars_plot(run: SuiteRun, points: list[TrackedPoint], folder: Path) -> list[str]:
    """Grouped bars: the compositions per method, one panel per dataset (headline metric)."""
    plt = _figure()
    datasets = run.suite.datasets
    fig, axes = plt.subplots(1, len(datasets), figsize=(5 * len(datasets), 3.6), squeeze=False)
    methods = run.methods
    comps = run.suite.compositions
    width = 0.8 / len(comps)
    for ax, dataset in zip(axes[0], datasets, strict=True):
        headline = HEADLINE[dataset]
        groups = aggregate(
            [p for p in points if p.point.dataset == dataset], ("method", "composition"), [headline]
        )
        for j, comp in enumerate(comps):
            cells = [groups.get((m, comp), {headline: Cell([])})[headline] for m in methods]
            xs = [i + (j - (len(comps) - 1) / 2) * width for i in range(len(methods))]
            ax.bar(
                xs,
                [c.mean for c in cells],
                width,
                yerr=[c.std for c in cells],
                label=comp,
                capsize=3,
            )
        ax.set_xticks(range(len(methods)), methods, rotation=15)
        ax.set_ylabel(f"val {headline}")
        ax.set_title(dataset)
    axes[0][-1].legend(fontsize=8, loc="lower right")
    fig.suptitle(run.suite.title + ("" if run.real else " (synthetic)"), fontsize=10)
    return save_figure(fig, folder, f"{run.suite.suite}_bars")


def axis_plot(run: SuiteRun, points: list[TrackedPoint], folder: Path) -> list[str]:
    """The headline metric against the suite's extra axis, mean ± std over seeds."""
    plt = _figure()
    [axis] = list(run.suite.axes)
    short = axis.rsplit(".", 1)[-1]
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for dataset in run.suite.datasets:
        headline = HEADLINE[dataset]
        groups = aggregate(
            [p for p in points if p.point.dataset == dataset], ("method", axis), [headline]
        )
        for method in run.methods:
            items = sorted(
                (v, c[headline])
                for (m, v), c in groups.items()
                if m == method and c[headline].values
            )
            if not items:
                continue
            xs = [v for v, _ in items]
            means = [c.mean for _, c in items]
            stds = [c.std for _, c in items]
            ax.errorbar(xs, means, yerr=stds, marker="o", capsize=3, label=f"{method} {dataset}")
    ax.set_xscale("log")
    ax.set_xlabel(short)
    ax.set_ylabel("val Rmean")
    ax.legend(fontsize=8)
    ax.set_title(run.suite.title + ("" if run.real else " (synthetic)"), fontsize=9)
    return save_figure(fig, folder, f"{run.suite.suite}_{short}")


def bank_size_plot(
    run: SuiteRun, records: list[dict[str, Any]], study: Any, folder: Path
) -> list[str]:
    """Recall against bank size (negatives per query), spread over seeds; the Optuna
    optimisation history beside it."""
    plt = _figure()
    spec = run.suite.study
    assert spec is not None
    dataset = run.suite.datasets[0]
    files = []
    by_value: dict[int, list[float]] = defaultdict(list)
    for r in records:
        if r["status"] == "FINISHED" and r["value"] is not None and spec.objective in r["metrics"]:
            by_value[r["value"]].append(r["metrics"][spec.objective])
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    if by_value:
        xs = sorted(by_value)
        cells = [Cell(by_value[x]) for x in xs]
        ax.errorbar(xs, [c.mean for c in cells], yerr=[c.std for c in cells], marker="o", capsize=3)
        for x in xs:
            ax.scatter([x] * len(by_value[x]), by_value[x], s=8, color="grey", alpha=0.6)
    bank = study.user_attrs.get("bank_size") if study is not None else None
    if bank:
        ax.axvline(bank - 1, color="black", linestyle=":", label=f"whole bank ({bank - 1})")
        ax.legend(fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("negatives per query (neg_num)")
    ax.set_ylabel(f"val {spec.objective} ({dataset})")
    ax.set_title(run.suite.title + ("" if run.real else " (synthetic)"), fontsize=9)
    files += save_figure(fig, folder, f"{run.suite.suite}_recall_vs_bank")
    if study is not None and any(t.state.name == "COMPLETE" for t in study.trials):
        import warnings

        import optuna

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            ax = optuna.visualization.matplotlib.plot_optimization_history(study)
        ax.set_title(f"Optuna optimisation history: {study.study_name}")
        files += save_figure(ax.figure, folder, f"{run.suite.suite}_optuna_history")
    return files


# ----------------------------------------------------------------------------- entry point


@dataclass
class Report:
    suite: str
    folder: Path
    tables: list[Table]
    plots: list[str]
    missing: list[str]


def build_report(
    suite_name: str,
    *,
    profile: str = "default",
    data_root: str | Path | None = None,
    seeds: tuple[int, ...] | None = None,
    methods: tuple[str, ...] | None = None,
    storage: str | None = None,
    out: str | Path = "reports",
) -> Report:
    """Write ``<out>/<suite>/`` from the tracked runs (atomically) and return what it holds."""
    run = SuiteRun(
        load_suite(suite_name),
        get_profile(profile),
        Path(data_root).expanduser().resolve() if data_root else None,
        seeds_override=seeds,
        storage=storage,
        methods_override=methods,
    )
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    final = out / run.suite.suite
    staging = out / f".{run.suite.suite}.tmp-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    kind = run.suite.report
    missing: list[str] = []
    plots: list[str] = []
    try:
        if run.suite.kind == "study":
            records, study, study_error = study_points(run)
            if study_error:
                missing.append(study_error + " (no optimisation-history plot)")
            if not records:
                raise ReportError(
                    f"suite {run.suite.suite}: no tracked trial runs in MLflow experiment "
                    f"{run.experiment!r}; run `cirbench sweep {run.suite.suite}` first"
                )
            tables = study_table(run, records, study)
            plots = bank_size_plot(run, records, study, staging)
        else:
            points = collect_points(run)
            missing = [p.point.label() for p in points if not p.metrics]
            if len(missing) == len(points):
                raise ReportError(
                    f"suite {run.suite.suite}: none of its {len(points)} points has a finished "
                    f"run in MLflow experiment {run.experiment!r}; run `cirbench sweep "
                    f"{run.suite.suite}` first"
                )
            tracked = [p for p in points if p.metrics]
            builder = {"paper": paper_table, "compositions": compositions_table, "axis": axis_table}
            tables = builder[kind.table](run, tracked)
            if kind.plot == "bars":
                plots = bars_plot(run, tracked, staging)
            elif kind.plot == "axis":
                plots = axis_plot(run, tracked, staging)
        for table in tables:
            (staging / f"{table.name}.md").write_text(table.markdown())
            (staging / f"{table.name}.csv").write_text(table.csv())
            (staging / f"{table.name}.tex").write_text(table.latex())
        (staging / "index.md").write_text(_suite_index(run, tables, plots, missing))
        _swap_in(staging, final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    write_top_index(out)
    return Report(run.suite.suite, final, tables, plots, missing)


def _suite_index(run: SuiteRun, tables: list[Table], plots: list[str], missing: list[str]) -> str:
    lines = [f"# {run.suite.title}", ""]
    where = (
        f"real data at {run.data_root}" if run.real else f"synthetic, profile {run.profile.name}"
    )
    lines += [f"Data: {where}; seeds {list(run.seeds)}; MLflow experiment `{run.experiment}`.", ""]
    for table in tables:
        lines += [
            table.markdown(),
            f"Files: [{table.name}.md]({table.name}.md), [{table.name}.csv]({table.name}.csv), "
            f"[{table.name}.tex]({table.name}.tex)",
            "",
        ]
    for plot in plots:
        if plot.endswith(".png"):
            stem = plot[:-4]
            lines += [f"![{stem}]({plot})", f"([SVG]({stem}.svg))", ""]
    if missing:
        lines += [f"Missing ({len(missing)}):", *(f"- {m}" for m in missing), ""]
    return "\n".join(lines)


def _swap_in(staging: Path, final: Path) -> None:
    """Replace ``final`` with ``staging`` by renames (never a half-written folder)."""
    old = final.with_name(f".{final.name}.old-{os.getpid()}")
    if final.exists():
        final.rename(old)
    staging.rename(final)
    shutil.rmtree(old, ignore_errors=True)


def write_top_index(out: Path) -> None:
    """``<out>/index.md`` linking every suite report found there."""
    lines = ["# cirbench reports", ""]
    for folder in sorted(p for p in out.iterdir() if p.is_dir() and not p.name.startswith(".")):
        index = folder / "index.md"
        if index.is_file():
            title = index.read_text().splitlines()[0].lstrip("# ").strip()
            lines.append(f"- [{folder.name}]({folder.name}/index.md): {title}")
    tmp = out / f".index.md.tmp-{os.getpid()}"
    tmp.write_text("\n".join(lines) + "\n")
    os.replace(tmp, out / "index.md")
