"""How sure a report's gains are: each gain's paired-bootstrap interval over val queries
(:func:`bench.stats.paired_bootstrap`) from the runs' per-query values, and the note under
a table (val size, smallest resolvable difference, how many shown differences are below
it).

A run's per-query values are read from its run folder (``per_query.npz`` beside
``metrics.json``) or, when that folder is elsewhere, from its MLflow artifact; a run
trained before per-query values were saved has none, and the table says which gains lack
an interval instead of guessing one.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.config import ExperimentSpec
from bench.report.collect import TrackedPoint
from bench.runner.suites import SuiteRun
from bench.stats import (
    DEFAULT_RESAMPLES,
    PER_QUERY_FILE,
    PairedComparison,
    PerQueryError,
    RunQueryValues,
    paired_bootstrap,
)
from bench.train.session import run_dir_for

#: An arm of a comparison: seed -> the run's per-query values (None: the run has none).
Arm = dict[int, RunQueryValues | None]


def artifact_query_values(run_id: str) -> RunQueryValues | None:
    """The per-query values logged with an MLflow run (None when it has none)."""
    import mlflow
    from mlflow.exceptions import MlflowException

    with tempfile.TemporaryDirectory() as folder:
        try:
            path = mlflow.artifacts.download_artifacts(
                run_id=run_id, artifact_path=PER_QUERY_FILE, dst_path=folder
            )
        except (MlflowException, OSError):
            return None
        return RunQueryValues.load(path)


def spec_query_values(spec: ExperimentSpec, run_id: str | None) -> RunQueryValues | None:
    """A finished run's per-query values: its run folder's file, else its MLflow artifact."""
    path = run_dir_for(spec) / PER_QUERY_FILE
    if path.is_file():
        return RunQueryValues.load(path)
    return artifact_query_values(run_id) if run_id else None


def point_arm(run: SuiteRun, points: Iterable[TrackedPoint]) -> Arm:
    """The per-query values of tracked points (one per seed)."""
    return {tp.point.seed: spec_query_values(run.spec(tp.point), tp.run_id) for tp in points}


def stage1_arm(run: SuiteRun, points: Iterable[TrackedPoint], tracked: Mapping[str, Any]) -> Arm:
    """The per-query values of the stage-1 runs the points continue from (by seed)."""
    out: Arm = {}
    for tp in points:
        spec = run.spec(tp.point)
        if spec.is_stage1:
            continue
        stage1 = spec.stage1_spec()
        found = tracked.get(stage1.digest())
        out[tp.point.seed] = spec_query_values(stage1, found.info.run_id if found else None)
    return out


def run_id_arm(records: Iterable[Mapping[str, Any]]) -> Arm:
    """The per-query values of tracked runs given as records with ``seed`` and ``run_id``
    (a study's trial runs), from their MLflow artifacts."""
    return {int(r["seed"]): artifact_query_values(str(r["run_id"])) for r in records}


def stage1_file_arm(records: Iterable[Mapping[str, Any]]) -> Arm:
    """The per-query values of the stage-1 runs records continue from (``stage1``: the
    stage-1 checkpoint a run was initialised from, in that run's folder)."""
    out: Arm = {}
    for r in records:
        path = Path(r["stage1"]).parent / PER_QUERY_FILE if r.get("stage1") else None
        out[int(r["seed"])] = RunQueryValues.load(path) if path and path.is_file() else None
    return out


@dataclass
class Intervals:
    """The gains of one table: computes each, remembers what its note must say."""

    metric: str
    resamples: int = DEFAULT_RESAMPLES
    comparisons: list[PairedComparison] = field(default_factory=list)
    shown: list[float] = field(default_factory=list)  #: every difference the table shows
    missing: list[str] = field(default_factory=list)

    def compare(
        self, a: Arm, b: Arm, label: str, metric: str | None = None
    ) -> PairedComparison | None:
        """Arm A against arm B on the seeds both have; None (remembered for the note)
        when a run lacks per-query values or the arms share no seed."""
        seeds = sorted(set(a) & set(b))
        if not seeds:
            self.missing.append(f"{label} (no seed in common)")
            return None
        lacking = [s for s in seeds if a[s] is None or b[s] is None]
        if lacking:
            self.missing.append(f"{label} (no per-query values, seeds {lacking})")
            return None
        pairs = [(a[s], b[s]) for s in seeds]
        try:
            result = paired_bootstrap(pairs, metric or self.metric, resamples=self.resamples)
        except PerQueryError as exc:
            self.missing.append(f"{label} ({exc})")
            return None
        self.comparisons.append(result)
        self.shown.append(result.difference)
        return result

    @property
    def resolvable(self) -> float:
        """The table's smallest resolvable difference: the largest over its comparisons."""
        return max((c.resolvable for c in self.comparisons), default=math.nan)

    def below(self) -> int:
        """How many differences shown are smaller than the resolvable difference."""
        limit = self.resolvable
        return sum(abs(d) < limit for d in self.shown) if not math.isnan(limit) else 0

    def note(self) -> str:
        """The lines under the table: method, val size, resolvable difference."""
        if not self.comparisons and not self.missing:
            return ""
        parts = []
        if self.comparisons:
            first = self.comparisons[0]
            sizes = ", ".join(f"{n}" if g is None else f"{g} {n}" for g, n in first.queries.items())
            parts.append(
                f"Δ [95% CI]: paired bootstrap over val queries ({first.resamples} resamples, "
                "the same queries for both arms, stratified by seed), percentile interval; "
                "* = the interval excludes 0."
            )
            parts.append(
                f"Val size: {sizes} queries. Smallest resolvable difference: "
                f"{self.resolvable:.2f} {self.metric} points (1.96·√(SE_A² + SE_B²), the "
                "bootstrap standard errors of the two arms, largest over the table: what two "
                "independent runs must differ by)."
            )
            below = self.below()
            if below:
                parts.append(
                    f"{below} of {len(self.shown)} differences shown are below it (noise "
                    "unless their interval excludes 0)."
                )
        if self.missing:
            parts.append(
                f"No interval for {len(self.missing)} gain(s): " + "; ".join(self.missing) + "."
            )
        return " ".join(parts)

    def warning(self, table: str) -> str:
        """A warning when the val size cannot resolve differences the table shows."""
        below = self.below()
        if not below:
            return ""
        sizes = self.comparisons[0].queries if self.comparisons else {}
        total = sum(sizes.values())
        return (
            f"{table}: {below} of {len(self.shown)} differences shown are below the smallest "
            f"resolvable difference ({self.resolvable:.2f} {self.metric} points with {total} "
            "val queries); they are noise unless their interval excludes 0"
        )


def interval_text(result: PairedComparison | None, difference: float) -> str:
    """A gain cell: ``+1.23 [+0.40, +2.05]*``, or the bare difference without an interval."""
    if result is not None:
        return result.text()
    return "–" if math.isnan(difference) else f"{difference:+.2f}"


def interval_fields(prefix: str, result: PairedComparison | None) -> dict[str, object]:
    """The CSV columns of a gain's interval."""
    if result is None:
        return {f"{prefix} ci_low": "", f"{prefix} ci_high": "", f"{prefix} resolved": ""}
    return {
        f"{prefix} ci_low": result.low,
        f"{prefix} ci_high": result.high,
        f"{prefix} resolved": result.excludes_zero,
    }
