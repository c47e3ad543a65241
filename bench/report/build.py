"""Writing a report: :func:`build_report` (tables and plots into a staging folder, the
suite's ``index.md``, the swap-in by renames) and :func:`write_top_index`."""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

from bench.core.atomic import process_alive, write_text_atomic
from bench.core.errors import CirbenchError
from bench.core.faults import reached
from bench.report.baselines import baselines_table
from bench.report.calibration import calibration_tables
from bench.report.collect import TrackedPoint, collect_points, study_points
from bench.report.paper import paper_table
from bench.report.plots import axis_plot, bank_size_plot, bars_plot
from bench.report.tables import Table, axis_table, compositions_table, study_table
from bench.runner.suites import DataRoots, SuiteRun
from bench.train.session import run_dir_for


class ReportError(CirbenchError):
    """A report cannot be built (no tracked runs for the suite)."""


@dataclass
class Report:
    suite: str
    folder: Path
    tables: list[Table]
    plots: list[str]
    missing: list[str]
    #: tables whose val size cannot resolve differences they show (printed on stderr)
    warnings: list[str] = field(default_factory=list)


def build_report(
    suite_name: str,
    *,
    profile: str = "default",
    data_root: DataRoots = None,
    seeds: tuple[int, ...] | None = None,
    methods: tuple[str, ...] | None = None,
    storage: str | None = None,
    out: str | Path = "reports",
) -> Report:
    """Write ``<out>/<suite>/`` from the tracked runs (atomically) and return what it holds."""
    run = SuiteRun.open(
        suite_name, profile, data_root, seeds=seeds, methods=methods, storage=storage
    )
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    final = out / run.suite.suite
    staging = out / f".{run.suite.suite}.tmp-{os.getpid()}"
    _remove_stale_folders(out, run.suite.suite)
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        if run.suite.kind == "calibration":
            tables, missing = calibration_tables(run)
            plots = []
        elif run.suite.kind == "study":
            tables, plots, missing = _study_report(run, staging)
        else:
            tables, plots, missing = _grid_report(run, staging)
        _write_tables(staging, tables)
        (staging / "index.md").write_text(_suite_index(run, tables, plots, missing, staging))
        _swap_in(staging, final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    write_top_index(out)
    warnings = [t.warning for t in tables if t.warning]
    for warning in warnings:
        print(f"cirbench: warning: {warning}", file=sys.stderr)
    return Report(run.suite.suite, final, tables, plots, missing, warnings)


def _study_report(run: SuiteRun, staging: Path) -> tuple[list[Table], list[str], list[str]]:
    """(tables, plots written to ``staging``, what is missing) of a study suite."""
    missing: list[str] = []
    records, study, study_error = study_points(run)
    if study_error:
        missing.append(study_error + " (no optimisation-history plot)")
    if not records:
        raise ReportError(
            f"suite {run.suite.suite}: no tracked trial runs in MLflow experiment "
            f"{run.experiment!r}; run `{run.command()}` first"
        )
    tables = study_table(run, records, study)
    plots = bank_size_plot(run, records, study, staging)
    return tables, plots, missing


def _grid_report(run: SuiteRun, staging: Path) -> tuple[list[Table], list[str], list[str]]:
    """(tables, plots written to ``staging``, the points not run yet) of a grid suite."""
    kind = run.suite.report
    plots: list[str] = []
    points = collect_points(run)
    missing = [p.point.label() for p in points if not p.metrics]
    if len(missing) == len(points):
        raise ReportError(
            f"suite {run.suite.suite}: none of its {len(points)} points has a finished "
            f"run in MLflow experiment {run.experiment!r}; run `{run.command()}` first"
        )
    tracked = [p for p in points if p.metrics]
    builder = {"paper": paper_table, "compositions": compositions_table, "axis": axis_table}
    tables = builder[kind.table](run, tracked)
    if kind.table == "compositions":
        tables += baselines_table(run, tracked)
    missing += _copy_submissions(run, tracked, staging)
    if kind.plot == "bars":
        plots = bars_plot(run, tracked, staging)
    elif kind.plot == "axis":
        plots = axis_plot(run, tracked, staging)
    return tables, plots, missing


def _copy_submissions(run: SuiteRun, points: list[TrackedPoint], staging: Path) -> list[str]:
    """Copy each point's test-server files into ``submissions/<point>/<split>/`` of the
    report; returns the points whose files are not there (the sweep writes them)."""
    absent = []
    for tracked in points:
        spec = run.spec(tracked.point)
        for split in run.suite.submissions:
            folder = run_dir_for(spec) / "submissions" / split
            listing = folder / "files.json"
            if not listing.is_file():
                absent.append(f"{tracked.point.label()}: {split} submission files")
                continue
            label = tracked.point.label().replace(" ", "_")
            dest = staging / "submissions" / label / split
            dest.mkdir(parents=True, exist_ok=True)
            for name in json.loads(listing.read_text()):
                shutil.copy2(folder / name, dest / name)
    return absent


def _write_tables(folder: Path, tables: list[Table]) -> None:
    """Each table as ``<name>.md``, ``<name>.csv`` and ``<name>.tex``."""
    for table in tables:
        (folder / f"{table.name}.md").write_text(table.markdown())
        (folder / f"{table.name}.csv").write_text(table.csv())
        (folder / f"{table.name}.tex").write_text(table.latex())


def _suite_index(
    run: SuiteRun, tables: list[Table], plots: list[str], missing: list[str], folder: Path
) -> str:
    lines = [f"# {run.suite.title}", ""]
    where = (
        f"real data at {', '.join(map(str, (run.data_roots or {}).values()))}"
        if run.real
        else f"synthetic, profile {run.profile.name}"
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
    submitted = sorted((folder / "submissions").glob("*/*/*.json"))
    if submitted:
        lines += [
            f"Test-server submissions ({', '.join(run.suite.submissions)}), one folder per point "
            "(upload to the benchmark's evaluation server):",
            *(f"- [{p.relative_to(folder)}]({p.relative_to(folder)})" for p in submitted),
            "",
        ]
    if missing:
        lines += [f"Missing ({len(missing)}):", *(f"- {m}" for m in missing), ""]
    return "\n".join(lines)


def _swap_in(staging: Path, final: Path) -> None:
    """Replace ``final`` with ``staging`` by renames (never a half-written folder)."""
    old = final.with_name(f".{final.name}.old-{os.getpid()}")
    if final.exists():
        final.rename(old)
    reached("report.swap")
    staging.rename(final)
    shutil.rmtree(old, ignore_errors=True)


def _remove_stale_folders(out: Path, suite: str) -> None:
    """Staging and old folders (``.<suite>.tmp-<pid>``, ``.<suite>.old-<pid>``) of killed
    report writers (the report itself is rebuilt from the tracked runs)."""
    pattern = re.compile(rf"^\.{re.escape(suite)}\.(?:tmp|old)-(\d+)$")
    for entry in out.iterdir():
        match = pattern.match(entry.name)
        if match and int(match.group(1)) != os.getpid() and not process_alive(int(match.group(1))):
            shutil.rmtree(entry, ignore_errors=True)


def write_top_index(out: Path) -> None:
    """``<out>/index.md`` linking every suite report found there."""
    lines = ["# cirbench reports", ""]
    for folder in sorted(p for p in out.iterdir() if p.is_dir() and not p.name.startswith(".")):
        index = folder / "index.md"
        if index.is_file():
            title = index.read_text().splitlines()[0].lstrip("# ").strip()
            lines.append(f"- [{folder.name}]({folder.name}/index.md): {title}")
    write_text_atomic(out / "index.md", "\n".join(lines) + "\n")
