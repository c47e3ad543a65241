"""``--dry-run``: what a suite would run, point by point, without training or reading images.

Every point resolves to its full spec (the method's recipe, the profile, the composition,
the suite's overrides and axis values) plus the plan derived from it: the stage-1 run it
continues from, and for an SPN stage what trains, in which method phase (query function),
with which settings. A researcher checks the recipe here before spending GPU days on it.
"""

from __future__ import annotations

from typing import Any

from bench.config import ExperimentSpec
from bench.runner.suites import Point, SuiteRun
from methods import get_method_class


def stage_plan(spec: ExperimentSpec) -> dict[str, Any]:
    """What the spec trains after its stage 1 (or its stage-1 phases), from the spec alone."""
    method = get_method_class(spec.method.name)
    composition = spec.spn.composition
    if composition.is_stage1:
        return {"stage": "stage 1", "phases": [p.name for p in method.phases]}
    stage1 = spec.stage1_spec()
    out: dict[str, Any] = {"continues_from": f"{stage1.name}-{stage1.digest()}"}
    negatives = spec.spn.negatives
    if negatives is not None:
        out["stage"] = "bank stage (N)"
        out["method_phase"] = negatives.phase or f"{method.phases[-1].name} (the last phase)"
        out["trains"] = list(negatives.trains) if negatives.trains else "every query-side group"
        out["bank"] = {"holds": negatives.bank, "dedup": negatives.dedup}
    else:
        pt = spec.spn.positives_train
        out["stage"] = "continuation (P)" if not composition.control else "continuation (P-control)"
        out["method_phase"] = pt.phase or f"{method.phases[-1].name} (the last phase)"
        out["trains"] = list(pt.trains) if pt.trains else "every group"
        out["loss"] = f"InfoNCE at tau {pt.tau}" if pt.tau else "the method's own"
    return out


def dry_run(run: SuiteRun) -> list[dict[str, Any]]:
    """One record per point of the suite run (a study: its composition's point per seed,
    the studied parameter left to the study); see :meth:`SuiteRun.open`."""
    suite = run.suite
    records = []
    for point in run.points() if suite.study is None else study_points(run):
        spec = run.spec(point)
        record: dict[str, Any] = {
            "suite": suite.suite,
            "point": point.label(),
            "composition": spec.spn.composition.name,
            "run": f"{spec.name}-{spec.digest()}",
            "plan": stage_plan(spec),
            "spec": spec.model_dump(mode="json"),
        }
        if suite.study is not None:
            record["study"] = suite.study.model_dump(mode="json")
        records.append(record)
    return records


def study_points(run: SuiteRun) -> list[Point]:
    """The points a study trains at every trial (one per seed)."""
    study = run.suite.study
    assert study is not None
    return [Point(run.methods[0], run.suite.datasets[0], study.composition, s) for s in run.seeds]
