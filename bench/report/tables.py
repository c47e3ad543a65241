"""The report's tables: the :class:`Table` / :class:`Cell` model, aggregation over seeds
(mean ± std, gains), the grid table kinds (compositions, an extra axis, an Optuna study) and
their Markdown / CSV / LaTeX text. The paper's Tables 2 / 3 are in :mod:`bench.report.paper`."""

from __future__ import annotations

import csv
import io
import itertools
import math
import statistics
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from bench.formats import get_format
from bench.report.collect import TrackedPoint, tracked_runs_by_digest
from bench.report.intervals import (
    Arm,
    Intervals,
    interval_fields,
    interval_text,
    point_arm,
    run_id_arm,
    stage1_arm,
    stage1_file_arm,
)
from bench.runner.suites import SuiteRun
from methods.registry import display_name

# ----------------------------------------------------------------------------- aggregation


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
    return tuple(c for c in get_format(dataset).report_columns if c in seen)


def gain_text(value: float) -> str:
    return "–" if math.isnan(value) else f"{value:+.2f}"


def mean_std_fields(cells: dict[str, Cell], columns: Iterable[str]) -> dict[str, float]:
    """The CSV's numbers of one row: each column's mean, then each column's std."""
    columns = tuple(columns)
    return {f"{c} mean": cells[c].mean for c in columns} | {
        f"{c} std": cells[c].std for c in columns
    }


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


# ----------------------------------------------------------------------------- the model


@dataclass
class Table:
    """A table with a title, a header and text cells (plus raw numbers for the CSV)."""

    name: str
    title: str
    header: list[str]
    rows: list[list[str]]
    raw: list[dict[str, Any]]
    note: str = ""
    #: printed when the table is built: the val size cannot resolve differences it shows
    warning: str = ""

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


# ----------------------------------------------------------------------------- grid tables


def by_group(
    points: Iterable[TrackedPoint], key: tuple[str, ...]
) -> dict[tuple[Any, ...], list[TrackedPoint]]:
    """Points grouped like :func:`aggregate` groups their metrics."""
    out: dict[tuple[Any, ...], list[TrackedPoint]] = defaultdict(list)
    for tp in points:
        extra = dict(tp.point.extra)
        out[tuple(extra[k] if k in extra else getattr(tp.point, k) for k in key)].append(tp)
    return out


def baseline_composition(run: SuiteRun) -> str:
    """What a composition's gain is measured against: ``none`` when the suite has it, else
    its first composition (zero-shot: ZS+N)."""
    compositions = list(run.suite.compositions)
    return "none" if "none" in compositions else compositions[0]


def compositions_table(run: SuiteRun, points: list[TrackedPoint]) -> list[Table]:
    """Per dataset: rows method x composition, the dataset's metrics, the gain over the
    baseline composition with its paired-bootstrap interval; with several methods also
    the methods compared (:func:`methods_table`)."""
    tables = []
    baseline = baseline_composition(run)
    for dataset in run.suite.datasets:
        columns = present_columns(points, dataset)
        headline = get_format(dataset).headline_metric
        mine = [p for p in points if p.point.dataset == dataset]
        groups = aggregate(mine, ("method", "composition"), columns)
        arms = {k: point_arm(run, v) for k, v in by_group(mine, ("method", "composition")).items()}
        intervals = Intervals(headline)
        gain_column = f"Δ{headline} vs {baseline} [95% CI]"
        header = ["method", "composition", *columns, gain_column, "seeds"]
        rows, raw = [], []
        for method in run.methods:
            base = groups.get((method, baseline))
            for composition in run.suite.compositions:
                cells = groups.get((method, composition))
                if cells is None:
                    continue
                gain = cells[headline].mean - base[headline].mean if base else math.nan
                result = None
                if base and composition != baseline:
                    result = intervals.compare(
                        arms[(method, composition)],
                        arms[(method, baseline)],
                        f"{method} {composition}",
                    )
                seeds = max(len(c.values) for c in cells.values())
                rows.append(
                    [
                        display_name(method),
                        composition,
                        *(cells[c].text() for c in columns),
                        "–" if composition == baseline else interval_text(result, gain),
                        str(seeds),
                    ]
                )
                raw.append(
                    {"method": method, "composition": composition, "seeds": seeds}
                    | mean_std_fields(cells, columns)
                    | {f"Δ{headline}": gain}
                    | interval_fields(f"Δ{headline}", result)
                )
            _control_row(method, groups, arms, intervals, columns, rows, raw)
        name = f"{run.suite.suite}_{dataset}"
        tables.append(
            Table(
                name,
                f"{run.suite.title}: {dataset}{synthetic_note(run)}",
                header,
                rows,
                raw,
                note=join_notes("mean ± std over seeds.", intervals.note()),
                warning=intervals.warning(name),
            )
        )
        if len(run.methods) > 1:
            tables.append(methods_table(run, dataset, groups, arms))
    return tables


def _control_row(
    method: str,
    groups: dict[tuple[Any, ...], dict[str, Cell]],
    arms: dict[tuple[Any, ...], Arm],
    intervals: Intervals,
    columns: tuple[str, ...],
    rows: list[list[str]],
    raw: list[dict[str, Any]],
) -> None:
    """With P and its control (P-control: the same continuation on human triplets only)
    in the table, the row of P against P-control: what P buys beyond training longer."""
    if (method, "P") not in groups or (method, "P-control") not in groups:
        return
    headline = intervals.metric
    result = intervals.compare(arms[(method, "P")], arms[(method, "P-control")], f"{method} P")
    gain = groups[(method, "P")][headline].mean - groups[(method, "P-control")][headline].mean
    rows.append(
        [
            display_name(method),
            "P vs P-control",
            *("" for _ in columns),
            interval_text(result, gain),
            "",
        ]
    )
    raw.append(
        {"method": method, "composition": "P vs P-control", f"Δ{headline}": gain}
        | interval_fields(f"Δ{headline}", result)
    )


def join_notes(*notes: str) -> str:
    return " ".join(n for n in notes if n)


def methods_table(
    run: SuiteRun,
    dataset: str,
    groups: dict[tuple[Any, ...], dict[str, Cell]],
    arms: dict[tuple[Any, ...], Arm],
) -> Table:
    """The methods compared, per composition: each method against the next one in the
    ranking by the headline metric (is the ranking resolved?), with the paired interval."""
    headline = get_format(dataset).headline_metric
    intervals = Intervals(headline)
    header = ["composition", "method", f"{headline}", "vs method", f"Δ{headline} [95% CI]"]
    rows, raw = [], []
    for composition in run.suite.compositions:
        ranked = sorted(
            (m for m in run.methods if (m, composition) in groups),
            key=lambda m: -groups[(m, composition)][headline].mean,
        )
        for upper, lower in itertools.pairwise(ranked):
            a, b = groups[(upper, composition)][headline], groups[(lower, composition)][headline]
            result = intervals.compare(
                arms[(upper, composition)],
                arms[(lower, composition)],
                f"{display_name(upper)} vs {display_name(lower)} ({composition})",
            )
            gain = interval_text(result, a.mean - b.mean)
            rows.append([composition, display_name(upper), a.text(), display_name(lower), gain])
            raw.append(
                {"composition": composition, "method": upper, "vs method": lower}
                | {f"Δ{headline}": a.mean - b.mean}
                | interval_fields(f"Δ{headline}", result)
            )
    name = f"{run.suite.suite}_{dataset}_methods"
    return Table(
        name,
        f"{run.suite.title}: {dataset}, the methods compared{synthetic_note(run)}",
        header,
        rows,
        raw,
        note=join_notes(
            f"Each method against the next one by mean {headline} (mean ± std over seeds).",
            intervals.note(),
        ),
        warning=intervals.warning(name),
    )


def axis_table(run: SuiteRun, points: list[TrackedPoint]) -> list[Table]:
    """Per dataset: rows method x each value of the suite's extra axis, each with its gain
    over the stage-1 run it continues from (paired interval)."""
    [axis] = list(run.suite.axes)
    tracked = tracked_runs_by_digest(run.experiment)
    tables = []
    for dataset in run.suite.datasets:
        headline = get_format(dataset).headline_metric
        columns = present_columns(points, dataset)
        mine = [p for p in points if p.point.dataset == dataset]
        key = ("method", "composition", axis)
        groups = aggregate(mine, key, columns)
        members = by_group(mine, key)
        intervals = Intervals(headline)
        short = axis.rsplit(".", 1)[-1]
        header = [
            "method",
            "composition",
            short,
            *columns,
            f"Δ{headline} vs stage 1 [95% CI]",
            "seeds",
        ]
        rows, raw = [], []
        for (method, composition, value), cells in sorted(
            groups.items(), key=lambda kv: (str(kv[0][:2]), float(kv[0][2]))
        ):
            group = members[(method, composition, value)]
            result = intervals.compare(
                point_arm(run, group),
                stage1_arm(run, group, tracked),
                f"{method} {composition} {short}={value}",
            )
            seeds = max(len(c.values) for c in cells.values())
            gain = result.difference if result is not None else math.nan
            rows.append(
                [
                    display_name(method),
                    composition,
                    str(value),
                    *(cells[c].text() for c in columns),
                    interval_text(result, gain),
                    str(seeds),
                ]
            )
            raw.append(
                {"method": method, "composition": composition, short: value, "seeds": seeds}
                | mean_std_fields(cells, columns)
                | {f"Δ{headline} vs stage 1": gain}
                | interval_fields(f"Δ{headline} vs stage 1", result)
            )
        name = f"{run.suite.suite}_{dataset}"
        tables.append(
            Table(
                name,
                f"{run.suite.title}: {dataset}{synthetic_note(run)}",
                header,
                rows,
                raw,
                note=join_notes(
                    f"{headline} and the other metrics, mean ± std over seeds; Δ: over the "
                    "stage-1 run each point continues from.",
                    intervals.note(),
                ),
                warning=intervals.warning(name),
            )
        )
    return tables


# ----------------------------------------------------------------------------- studies


def study_table(run: SuiteRun, records: list[dict[str, Any]], study: Any) -> list[Table]:
    """One row per trial with its gain over stage 1 (paired interval); the note adds the
    curve's range (the best finished trial against the worst) with its interval."""
    spec = run.suite.study
    assert spec is not None
    short = spec.parameter.rsplit(".", 1)[-1]
    dataset = run.suite.datasets[0]
    seen = {k for r in records for k in r["metrics"]}
    columns = tuple(c for c in get_format(dataset).report_columns if c in seen)
    by_trial: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        by_trial[r["trial"]].append(r)
    bank = study.user_attrs.get("bank_size") if study is not None else None
    objective = spec.objective
    intervals = Intervals(objective)
    header = ["trial", short, "state", *columns, f"Δ{objective} vs stage 1 [95% CI]", "seeds"]
    rows, raw = [], []
    complete: dict[int, tuple[float, Arm]] = {}
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
        result = None
        if state == "complete":
            arm = run_id_arm(finished)
            result = intervals.compare(arm, stage1_file_arm(finished), f"trial {trial}")
            if objective in cells:
                complete[trial] = (cells[objective].mean, arm)
        gain = result.difference if result is not None else math.nan
        rows.append(
            [
                str(trial),
                label,
                state,
                *(cells[c].text() for c in columns),
                interval_text(result, gain) if state == "complete" else "–",
                str(len(finished)),
            ]
        )
        raw.append(
            {"trial": trial, short: value, "state": state, "seeds": len(finished)}
            | mean_std_fields(cells, columns)
            | {f"Δ{objective} vs stage 1": gain}
            | interval_fields(f"Δ{objective} vs stage 1", result)
        )
    span = _curve_range(complete, intervals)
    return [
        Table(
            run.suite.suite,
            f"{run.suite.title}{synthetic_note(run)}",
            header,
            rows,
            raw,
            note=join_notes(study_note(run, bank, study), span, intervals.note()),
            warning=intervals.warning(run.suite.suite),
        )
    ]


def _curve_range(complete: dict[int, tuple[float, Arm]], intervals: Intervals) -> str:
    """The note on the curve's range: the best complete trial against the worst."""
    if len(complete) < 2:
        return ""
    best = max(complete, key=lambda t: complete[t][0])
    worst = min(complete, key=lambda t: complete[t][0])
    result = intervals.compare(
        complete[best][1], complete[worst][1], f"trial {best} vs trial {worst}"
    )
    if result is None:
        return ""
    verdict = "exceeds" if result.excludes_zero else "does not exceed"
    return (
        f"Range of the curve: trial {best} against trial {worst}: {result.text()} "
        f"({intervals.metric}); the range {verdict} its own interval."
    )


def study_note(run: SuiteRun, bank: int | None, study: Any) -> str:
    """The study table's note: the objective, the bank size and the best value so far."""
    spec = run.suite.study
    assert spec is not None
    short = spec.parameter.rsplit(".", 1)[-1]
    note = f"Objective: {spec.direction} val {spec.objective} (mean over seeds)."
    if bank:
        note += f" Bank: {bank} training images."
    if study is not None:
        complete = [t for t in study.trials if t.state.name == "COMPLETE"]
        if complete:
            best = study.best_params.get(spec.parameter)
            note += f" Best: {short} = {best} ({study.best_value:.2f})."
    return note
