"""The report's tables: the :class:`Table` / :class:`Cell` model, aggregation over seeds
(mean ± std, gains), the grid table kinds (compositions, an extra axis, an Optuna study) and
their Markdown / CSV / LaTeX text. The paper's Tables 2 / 3 are in :mod:`bench.report.paper`."""

from __future__ import annotations

import csv
import io
import math
import statistics
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from bench.formats import get_format
from bench.report.collect import TrackedPoint
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


def compositions_table(run: SuiteRun, points: list[TrackedPoint]) -> list[Table]:
    """Per dataset: rows method x composition, the dataset's metrics, gain over "none"."""
    tables = []
    for dataset in run.suite.datasets:
        columns = present_columns(points, dataset)
        headline = get_format(dataset).headline_metric
        groups = aggregate(
            [p for p in points if p.point.dataset == dataset], ("method", "composition"), columns
        )
        # a suite without a "none" row (zero-shot) has nothing to subtract: no Δ column
        has_base = "none" in run.suite.compositions
        gain_header = [f"Δ{headline} vs none"] if has_base else []
        header = ["method", "composition", *columns, *gain_header, "seeds"]
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
                        display_name(method),
                        composition,
                        *(cells[c].text() for c in columns),
                        *([gain_text(gain)] if has_base else []),
                        str(seeds),
                    ]
                )
                raw.append(
                    {"method": method, "composition": composition, "seeds": seeds}
                    | mean_std_fields(cells, columns)
                )
        tables.append(
            Table(
                f"{run.suite.suite}_{dataset}",
                f"{run.suite.title}: {dataset}{synthetic_note(run)}",
                header,
                rows,
                raw,
                note="mean ± std over seeds."
                + (
                    ""
                    if has_base
                    else " No supervised (none) row in this suite, so no Δ column: the "
                    "supervised stage 1 of each method is in ablation_spn's table."
                ),
            )
        )
    return tables


def axis_table(run: SuiteRun, points: list[TrackedPoint]) -> list[Table]:
    """Per dataset: rows method x each value of the suite's extra axis."""
    [axis] = list(run.suite.axes)
    tables = []
    for dataset in run.suite.datasets:
        headline = get_format(dataset).headline_metric
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
                [
                    display_name(method),
                    composition,
                    str(value),
                    *(cells[c].text() for c in columns),
                    str(seeds),
                ]
            )
            raw.append(
                {"method": method, "composition": composition, short: value, "seeds": seeds}
                | mean_std_fields(cells, columns)
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


def study_table(run: SuiteRun, records: list[dict[str, Any]], study: Any) -> list[Table]:
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
            | mean_std_fields(cells, columns)
        )
    return [
        Table(
            run.suite.suite,
            f"{run.suite.title}{synthetic_note(run)}",
            header,
            rows,
            raw,
            note=study_note(run, bank, study),
        )
    ]


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
