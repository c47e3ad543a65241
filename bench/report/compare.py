"""``cirbench compare RUN_A RUN_B``: the paired comparison of two tracked runs from their
per-query values (:mod:`bench.stats`), every metric of their format's report columns."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bench.formats import get_format
from bench.report.intervals import artifact_query_values
from bench.stats import (
    DEFAULT_RESAMPLES,
    PER_QUERY_FILE,
    PairedComparison,
    PerQueryError,
    RunQueryValues,
    paired_bootstrap,
)


def resolve_run(ref: str) -> RunQueryValues:
    """A run's per-query values from a run folder, a ``per_query.npz`` file or an MLflow
    run id (its artifact); an error saying what was looked for otherwise."""
    path = Path(ref).expanduser()
    if path.is_dir():
        if not (path / PER_QUERY_FILE).is_file():
            raise PerQueryError(
                f"{path}: run folder without {PER_QUERY_FILE} (a run trained before per-query "
                "values were saved, or not finished: rerun it to compare it)"
            )
        return RunQueryValues.load(path / PER_QUERY_FILE)
    if path.is_file():
        return RunQueryValues.load(path)
    values = artifact_query_values(ref)
    if values is None:
        raise PerQueryError(
            f"{ref!r} is not a run folder, a {PER_QUERY_FILE} file, or an MLflow run id "
            f"(of the tracking store in use) with a {PER_QUERY_FILE} artifact"
        )
    return values


@dataclass(frozen=True)
class Comparison:
    """Two runs compared on each metric."""

    a: str
    b: str
    format: str
    results: list[PairedComparison]

    def text(self) -> str:
        """A plain-text table: per metric A, B, A - B with the 95% interval, resolved."""
        first = self.results[0]
        sizes = ", ".join(f"{n}" if g is None else f"{g} {n}" for g, n in first.queries.items())
        lines = [
            f"A: {self.a}",
            f"B: {self.b}",
            f"{get_format(self.format).title} val queries: {sizes}; paired bootstrap, "
            f"{first.resamples} resamples, 95% percentile interval (* = excludes 0)",
            "",
            f"{'metric':22s} {'A':>8s} {'B':>8s}  {'A - B [95% CI]':28s} resolvable",
        ]
        for r in self.results:
            lines.append(f"{r.metric:22s} {r.a:8.2f} {r.b:8.2f}  {r.text():28s} {r.resolvable:.2f}")
        return "\n".join(lines) + "\n"


def compare_runs(
    a: str,
    b: str,
    *,
    metrics: tuple[str, ...] = (),
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
) -> Comparison:
    """Compare run ``a`` with run ``b`` (see :func:`resolve_run`) on ``metrics`` (default:
    the format's report columns the runs have, headline first); an error unless both are
    on the same queries."""
    run_a, run_b = resolve_run(a), resolve_run(b)
    if run_a.format != run_b.format:
        raise PerQueryError(f"the runs are of different formats: {run_a.format}, {run_b.format}")
    fmt = get_format(run_a.format)
    have = run_a.metrics()
    if not metrics:
        columns = [fmt.headline_metric, *fmt.report_columns]
        metrics = tuple(dict.fromkeys(c for c in columns if c in have))
    unknown = [m for m in metrics if m not in have]
    if unknown:
        raise PerQueryError(f"metrics {unknown} are not among the runs' {sorted(have)}")
    results = [
        paired_bootstrap([(run_a, run_b)], m, resamples=resamples, seed=seed) for m in metrics
    ]
    return Comparison(a, b, run_a.format, results)
