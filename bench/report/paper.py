"""The paper's Tables 2 / 3: per method the baseline and +SPN rows, the gain, and on real
data the published rows beside them, each row saying the split and protocol it was measured
on (``experiments/published/spn_tables.csv``). A published number measured on another split
(CIRR test1 against a val run) or under another protocol than the row above it is marked
``≠`` in the table and named in its note: not the same measurement."""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.config.paths import PUBLISHED_FILE
from bench.formats import get_format
from bench.report.collect import TrackedPoint
from bench.report.intervals import Arm, Intervals, interval_fields, interval_text, point_arm
from bench.report.tables import (
    Cell,
    Table,
    aggregate,
    by_group,
    gain_text,
    join_notes,
    mean_std_fields,
    methods_table,
    present_columns,
    synthetic_note,
)
from bench.runner.suites import SuiteRun
from bench.stats import PairedComparison
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
    #: (method, composition) -> the points' per-query values by seed
    arms: dict[tuple[Any, ...], Arm] = field(default_factory=dict)
    intervals: Intervals | None = None
    #: method -> the paired comparison of its +SPN composition against its baseline
    gains: dict[str, PairedComparison | None] = field(default_factory=dict)


def paper_table(run: SuiteRun, points: list[TrackedPoint]) -> list[Table]:
    """Tables 2 / 3 in the paper's layout (see the module docstring); each gain with its
    paired-bootstrap interval; with several methods the methods compared; on synthetic
    data the published gain beside the measured one (:func:`published_gain_table`)."""
    names = paper_names()
    published = load_published() if run.real else {}
    tables = []
    for dataset in run.suite.datasets:
        columns = present_columns(points, dataset)
        mine = [p for p in points if p.point.dataset == dataset]
        # the other protocols' metrics (``full_gallery.Rmean``); the columns only once, or
        # every seed's value would be counted twice (seed counts, stds)
        extra = sorted({k for p in mine for k in p.metrics if k.partition(".")[2] in columns})
        groups = aggregate(mine, ("method", "composition"), (*columns, *extra))
        arms = {k: point_arm(run, v) for k, v in by_group(mine, ("method", "composition")).items()}
        headline = get_format(dataset).headline_metric
        intervals = Intervals(headline)
        ctx = PaperContext(
            run, dataset, columns, groups, names, published, arms=arms, intervals=intervals
        )
        header = ["method", "SPN", "split", "protocol", *columns, "seeds"]
        rows: list[list[str]] = []
        raw: list[dict[str, Any]] = []
        for method in run.methods:
            paper_method_rows(ctx, method, rows, raw)
        note = (
            "mean ± std over seeds; gain = +SPN minus the baseline (means), "
            f"its {headline} with the 95% interval."
        )
        if ctx.mismatches:
            note += " Not the same measurement (≠): " + "; ".join(ctx.mismatches) + "."
        number = run.suite.report.paper_table
        name = f"table{number or ''}_{dataset}"
        tables.append(
            Table(
                name,
                f"{run.suite.title}{synthetic_note(run)}",
                header,
                rows,
                raw,
                note=join_notes(note, intervals.note()),
                warning=intervals.warning(name),
            )
        )
        if len(run.methods) > 1:
            tables.append(methods_table(run, dataset, groups, arms))
        if not run.real:
            tables.append(published_gain_table(ctx, name))
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
            result = _gain_interval(ctx, method, composition)
            headline = get_format(ctx.dataset).headline_metric
            texts = [
                interval_text(result, g) if c == headline else gain_text(g)
                for c, g in zip(columns, gains, strict=True)
            ]
            rows.append([name, "gain", "", "", *texts, ""])
            raw[-1] |= interval_fields(f"gain {headline}", result)
        _published_row(ctx, method, composition, label, setting, rows)


def _gain_interval(ctx: PaperContext, method: str, composition: str) -> PairedComparison | None:
    """The paired interval of a composition's gain over ``none`` (remembered in ctx)."""
    if ctx.intervals is None or (method, composition) not in ctx.arms:
        return None
    result = ctx.intervals.compare(
        ctx.arms[(method, composition)], ctx.arms.get((method, "none"), {}), f"{method} +SPN"
    )
    ctx.gains[method] = result
    return result


def published_gain_table(ctx: PaperContext, table: str) -> Table:
    """The published gain beside the measured one, per method: the paper's +SPN minus its
    baseline on the headline metric, the measured gain with its interval, and whether
    they agree in sign -- the only comparison the synthetic benchmark supports."""
    headline = get_format(ctx.dataset).headline_metric
    published = load_published()
    header = [
        "method",
        f"measured Δ{headline} [95% CI]",
        f"published Δ{headline}",
        "published on",
        "agreement",
    ]
    rows, raw, mixed = [], [], []
    for method in ctx.run.methods:
        paper_name = ctx.names.get(method, method)
        base = published.get((ctx.dataset, paper_name, "none", headline))
        spn = published.get((ctx.dataset, paper_name, "P+N", headline))
        result = ctx.gains.get(method)
        if base is None or spn is None:
            delta, where, verdict = None, "–", "not published"
        else:
            delta = spn.value - base.value
            where = f"{spn.split}, {spn.protocol}"
            if base.protocol != spn.protocol:
                where = f"{spn.split}, {base.protocol} ≠ {spn.protocol}"
                mixed.append(f"{paper_name}: baseline {base.protocol}, +SPN {spn.protocol}")
            verdict = agreement(result, delta)
        measured = interval_text(result, math.nan) if result is not None else "–"
        rows.append(
            [paper_name, measured, "–" if delta is None else f"{delta:+.2f}", where, verdict]
        )
        raw.append(
            {"method": method, f"measured Δ{headline}": result.difference if result else ""}
            | interval_fields(f"measured Δ{headline}", result)
            | {f"published Δ{headline}": "" if delta is None else delta, "agreement": verdict}
        )
    note = (
        "Published gain (SPN paper: +SPN minus the baseline) beside the measured gain on the "
        "synthetic benchmark. This is the only comparison the synthetic benchmark supports: "
        "whether a gain has the published sign (same sign / opposite, when the measured "
        "interval excludes 0; not resolved, when it does not); the sizes and the absolute "
        "numbers are not comparable (a tiny synthetic world, not the paper's data or models)."
    )
    if mixed:
        note += " Published baseline and +SPN under different protocols (≠): " + "; ".join(mixed)
        note += "."
    return Table(
        f"{table}_published_gain",
        f"{ctx.run.suite.title}: published against measured gain{synthetic_note(ctx.run)}",
        header,
        rows,
        raw,
        note=note,
    )


def agreement(result: PairedComparison | None, published: float) -> str:
    """``same sign`` / ``opposite`` (the measured interval excludes 0), ``not resolved``
    (it does not), ``no interval`` (no per-query values)."""
    if result is None:
        return "no interval"
    if not result.excludes_zero:
        return "not resolved"
    return "same sign" if (result.difference > 0) == (published > 0) else "opposite"


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
