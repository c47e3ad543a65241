"""``cirbench report SUITE``: tables and plots of a suite, built from the tracked runs.

Every number comes from the MLflow store (finished runs, matched to the suite's points by
the spec digest the engine tags them with), never from a process's memory, so a report
can be rebuilt at any time and always agrees with the MLflow UI. Outputs under
``reports/<suite>/``: tables as Markdown, CSV and LaTeX, plots as PNG and SVG, and an
``index.md``. The folder is built beside the old one and swapped in, so a crash never
leaves a half-written report.

The package's public API; the modules own: :mod:`~bench.report.collect` reading the
tracked runs, :mod:`~bench.report.tables` the tables and their text,
:mod:`~bench.report.plots` the plots, :mod:`~bench.report.build` writing the folders,
:mod:`~bench.report.intervals` every gain's paired-bootstrap interval and the notes on val
size and resolvable difference, :mod:`~bench.report.compare` ``cirbench compare``.
"""

from __future__ import annotations

from bench.report.build import Report, ReportError, build_report, write_top_index
from bench.report.collect import (
    TrackedPoint,
    collect_points,
    final_metrics,
    study_points,
    tracked_runs_by_digest,
)
from bench.report.paper import Published, load_published
from bench.report.tables import Cell, Table, aggregate

__all__ = [
    "Cell",
    "Published",
    "Report",
    "ReportError",
    "Table",
    "TrackedPoint",
    "aggregate",
    "build_report",
    "collect_points",
    "final_metrics",
    "load_published",
    "study_points",
    "tracked_runs_by_digest",
    "write_top_index",
]
