"""The paper's Tables 2 / 3: per method the baseline and +SPN rows, the gain, and on real
data the published rows beside them, each row saying the split and protocol it was measured
on (``experiments/published/spn_tables.csv``). A published number measured on another split
(CIRR test1 against a val run) or under another protocol than the row above it is marked
``≠`` in the table and named in its note: not the same measurement."""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.config.paths import PUBLISHED_FILE
from bench.formats import get_format
from bench.report.collect import TrackedPoint
from bench.report.tables import (
    Cell,
    Table,
    aggregate,
    gain_text,
    mean_std_fields,
    present_columns,
    synthetic_note,
)
from bench.runner.suites import SuiteRun
from bench.train.data import eval_options, extra_eval_options
from methods import list_methods
from methods.registry import display_name


@dataclass(frozen=True)
class Published:
    """One published number and what it was measured on."""

    value: float
    split: str
    protocol: str


def paper_names() -> dict[str, str]:
    return {m: display_name(m) for m in list_methods()}


def load_published(path: Path = PUBLISHED_FILE) -> dict[tuple[str, str, str, str], Published]:
    """(dataset, paper method name, spn, metric) -> the published number."""
    out: dict[tuple[str, str, str, str], Published] = {}
    with path.open() as handle:
        rows = csv.DictReader(line for line in handle if not line.startswith("#"))
        for number, row in enumerate(rows, start=1):
            try:
                key = (row["dataset"], row["method"], row["spn"], row["metric"])
                out[key] = Published(float(row["value"]), row["split"], row["protocol"])
            except (KeyError, TypeError, ValueError) as exc:
                raise ValueError(f"{path}: record {number}: bad or missing field ({exc})") from None
    return out


@dataclass(frozen=True)
class Setting:
    """The split and protocol of a measured row, and the other protocols it also has."""

    split: str
    protocol: str
    also: tuple[str, ...] = ()


def measured_setting(run: SuiteRun, method: str, dataset: str, composition: str) -> Setting:
    """What a suite's points of (method, dataset, composition) are scored on, from their spec."""
    point = next(
        p
        for p in run.points()
        if (p.method, p.dataset, p.composition) == (method, dataset, composition)
    )
    spec = run.spec(point).dataset
    fmt = get_format(dataset)
    also = tuple(fmt.protocol_name(o) for o in extra_eval_options(spec))
    return Setting(spec.eval_split, fmt.protocol_name(eval_options(spec)), also)


@dataclass
class PaperContext:
    """What every row of one dataset's paper table reads."""

    run: SuiteRun
    dataset: str
    columns: tuple[str, ...]
    groups: dict[tuple[Any, ...], dict[str, Cell]]
    names: dict[str, str]
    published: dict[tuple[str, str, str, str], Published]
    mismatches: list[str] = field(default_factory=list)


def paper_table(run: SuiteRun, points: list[TrackedPoint]) -> list[Table]:
    """Tables 2 / 3 in the paper's layout (see the module docstring)."""
    names = paper_names()
    published = load_published() if run.real else {}
    tables = []
    for dataset in run.suite.datasets:
        columns = present_columns(points, dataset)
        mine = [p for p in points if p.point.dataset == dataset]
        extra = sorted({k for p in mine for k in p.metrics if k.split(".", 1)[-1] in columns})
        groups = aggregate(mine, ("method", "composition"), (*columns, *extra))
        ctx = PaperContext(run, dataset, columns, groups, names, published)
        header = ["method", "SPN", "split", "protocol", *columns, "seeds"]
        rows: list[list[str]] = []
        raw: list[dict[str, Any]] = []
        for method in run.methods:
            paper_method_rows(ctx, method, rows, raw)
        note = "mean ± std over seeds; gain = +SPN minus the baseline (means)."
        if ctx.mismatches:
            note += " Not the same measurement (≠): " + "; ".join(ctx.mismatches) + "."
        number = run.suite.report.paper_table
        tables.append(
            Table(
                f"table{number or ''}_{dataset}",
                f"{run.suite.title}{synthetic_note(run)}",
                header,
                rows,
                raw,
                note=note,
            )
        )
    return tables


def paper_method_rows(
    ctx: PaperContext, method: str, rows: list[list[str]], raw: list[dict[str, Any]]
) -> None:
    """Append one method's rows to a paper table: per composition the measured row, its
    rows under the other protocols it also reports, the gain over the baseline and (on
    real data) the published row."""
    run, columns, name = ctx.run, ctx.columns, ctx.names.get(method, method)
    base = ctx.groups.get((method, "none"), {})
    for composition in run.suite.compositions:
        cells = ctx.groups.get((method, composition), {})
        label = "–" if composition == "none" else f"+{composition}"
        setting = measured_setting(run, method, ctx.dataset, composition)
        seeds = max((len(cells[c].values) for c in columns if c in cells), default=0)
        texts = [_text(cells, c) for c in columns]
        rows.append([name, label, setting.split, setting.protocol, *texts, str(seeds)])
        raw.append(
            {"method": method, "spn": composition, "split": setting.split}
            | {"protocol": setting.protocol, "seeds": seeds}
            | mean_std_fields(cells, columns)
        )
        for protocol in setting.also:
            texts = [_text(cells, f"{protocol}.{c}") for c in columns]
            rows.append([name, f"{label} ({protocol})", setting.split, protocol, *texts, ""])
        if composition != "none" and base:
            gains = [cells[c].mean - base[c].mean for c in columns]
            rows.append([name, "gain", "", "", *(gain_text(g) for g in gains), ""])
        _published_row(ctx, method, composition, label, setting, rows)


def _text(cells: dict[str, Cell], column: str) -> str:
    return cells[column].text() if column in cells else "–"


def _published_row(
    ctx: PaperContext,
    method: str,
    composition: str,
    label: str,
    setting: Setting,
    rows: list[list[str]],
) -> None:
    paper_name = ctx.names.get(method, "")
    spn = "none" if composition == "none" else "P+N"
    paper = [ctx.published.get((ctx.dataset, paper_name, spn, c)) for c in ctx.columns]
    known = [v for v in paper if v is not None]
    if not ctx.run.real or not known:
        return
    split, protocol = known[0].split, known[0].protocol
    if split != setting.split:
        ctx.mismatches.append(
            f"{paper_name} {label} published on {split}, measured on {setting.split}"
        )
        split = f"{split} ≠ {setting.split}"
    if protocol != setting.protocol and protocol not in setting.also:
        ctx.mismatches.append(
            f"{paper_name} {label} published under {protocol}, measured under {setting.protocol}"
        )
        protocol = f"{protocol} ≠ {setting.protocol}"
    values = ["–" if v is None else f"{v.value:.2f}" for v in paper]
    rows.append([paper_name, f"{label} (published)", split, protocol, *values, ""])
