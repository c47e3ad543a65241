"""Grid suites: every point is one :func:`bench.train.engine.train` call with ``resume=True``.

A point whose resolved spec (and seed) already finished is returned from its run folder,
nothing recomputed and no new MLflow run; an interrupted point continues from its last
epoch in its own MLflow run. With ``workers > 1`` points run in that many processes,
grouped by their stage 1 (the engine locks each run folder, so a shared stage 1 trains
once), after this process has built what they all read (the synthetic data, a synthetic
pre-trained backbone) with all its threads.
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from tqdm import tqdm

from bench.backbones.resolve import resolve_weights
from bench.config import ExperimentSpec
from bench.core.atomic import write_json_atomic
from bench.core.errors import CirbenchError
from bench.core.runtime import set_core_share
from bench.runner.parents import join_suite, parent_run, swept_values
from bench.runner.suites import Point, SuiteRun
from bench.tracking.store import client, default_tracking_uri
from bench.train.checkpoints import TrainResult
from bench.train.data import dataset_root
from bench.train.engine import train
from bench.train.evaluate import write_submission
from bench.train.session import run_dir_for


class SweepError(CirbenchError):
    """A sweep cannot run (failed points; a bad storage URL raises
    :class:`bench.runner.storage.StorageError`)."""


@dataclass
class PointOutcome:
    point: Point
    digest: str
    run_id: str | None
    metrics: dict[str, float]
    seconds: float
    reused: bool


@dataclass
class SweepResult:
    suite: str
    outcomes: list[PointOutcome] = field(default_factory=list)
    seconds: float = 0.0
    study_name: str | None = None
    storage: str | None = None

    @property
    def trained(self) -> int:
        return sum(not o.reused for o in self.outcomes)


def run_point(
    run: SuiteRun,
    point: Point,
    parent_id: str | None,
    progress: bool,
    overrides: tuple[str, ...] = (),
    trial: int | None = None,
    on_epoch: Any = None,
) -> PointOutcome:
    """Train (or reuse) one point; returns its metrics and MLflow run id."""

    spec = run.spec(point, overrides)
    reused = TrainResult.load(run_dir_for(spec)) is not None
    tags = {"cirbench.suite": run.suite.suite, "cirbench.point": point.label()}
    if trial is not None:
        tags["cirbench.trial"] = str(trial)
    swept = swept_values(point, overrides)
    start = time.perf_counter()
    result = train(
        spec,
        resume=True,
        progress=progress,
        parent_run_id=parent_id,
        tags=tags,
        on_epoch=on_epoch,
        swept=swept,
    )
    join_suite(result.mlflow_run_id, run.suite.suite, swept)
    if run.suite.submissions:
        point_submissions(run, spec, result, progress)
    return PointOutcome(
        point,
        spec.digest(),
        result.mlflow_run_id,
        result.metrics,
        time.perf_counter() - start,
        reused,
    )


def point_submissions(
    run: SuiteRun, spec: ExperimentSpec, result: TrainResult, progress: bool
) -> dict[str, list[Path]]:
    """The test-server files of a finished point for each split its suite asks for
    (``submissions: [test1]``): in ``<run>/submissions/<split>/`` and the point's MLflow
    run; written once (the split's ``files.json`` lists them)."""
    out: dict[str, list[Path]] = {}
    for split in run.suite.submissions:
        folder = result.run_dir / "submissions" / split
        listing = folder / "files.json"
        if listing.is_file():
            out[split] = [folder / name for name in json.loads(listing.read_text())]
            continue
        files = write_submission(
            spec, result.best_checkpoint, folder, split=split, progress=progress
        )
        write_json_atomic(listing, [f.name for f in files])
        if result.mlflow_run_id:
            store = client(default_tracking_uri())
            for file in files:
                store.log_artifact(result.mlflow_run_id, str(file), f"submissions/{split}")
        out[split] = files
    return out


def _stage1_groups(points: list[Point]) -> list[list[Point]]:
    groups: dict[tuple[str, str, int], list[Point]] = {}
    for p in points:
        groups.setdefault((p.method, p.dataset, p.seed), []).append(p)
    return list(groups.values())


def prepare_shared_inputs(run: SuiteRun, points: list[Point], progress: bool) -> None:
    """Build what every point of ``points`` reads and none owns (the synthetic data and a
    synthetic pre-trained backbone) here, with all this process's threads, before workers
    start: a worker limited to its share of the threads would otherwise build it while the
    others wait on its lock. Only points whose stage 1 is still to train need them (a
    finished stage 1 had both; later stages start from its checkpoint)."""
    built: set[tuple[Any, ...]] = set()
    for point in points:
        spec = run.spec(point)
        data = spec.dataset
        key = (data.root, data.synthetic_size, data.synthetic_seed, spec.backbone.arch)
        stage1 = spec if spec.is_stage1 else spec.stage1_spec()
        if key in built or TrainResult.load(run_dir_for(stage1)) is not None:
            continue
        built.add(key)
        dataset_root(data, progress=progress)
        resolve_weights(
            spec.backbone.arch,
            spec.backbone.pretrained,
            synthetic_size=data.synthetic_size,
            synthetic_seed=data.synthetic_seed,
            progress=progress,
        )


def _grid_worker(args: tuple[Any, ...]) -> list[PointOutcome]:
    run, group, parent_id, threads = args
    limit_threads(threads)
    return [run_point(run, p, parent_id, progress=False) for p in group]


def run_grid(run: SuiteRun, *, workers: int = 1, progress: bool = True) -> SweepResult:
    """Run every point of a grid suite (see the module docstring)."""
    points = run.points()
    result = SweepResult(run.suite.suite)
    start = time.perf_counter()
    with parent_run(run, "grid") as parent:
        if workers <= 1:
            bar = tqdm(points, desc=f"{run.suite.suite}", disable=not progress, unit="point")
            for point in bar:
                bar.set_postfix_str(point.label())
                result.outcomes.append(run_point(run, point, parent.run_id, progress))
        else:
            prepare_shared_inputs(run, points, progress)
            groups = _stage1_groups(points)
            jobs = [(run, g, parent.run_id, WORKER_THREADS) for g in groups]
            with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
                bar = tqdm(total=len(points), desc=run.suite.suite, disable=not progress)
                for outcomes in pool.map(_grid_worker, jobs):
                    result.outcomes.extend(outcomes)
                    bar.update(len(outcomes))
        result.seconds = time.perf_counter() - start
        parent.log_metrics(
            {"points": len(points), "points_trained": result.trained, "seconds": result.seconds}
        )
    return result


#: Torch threads of each worker process. One: the tiny models' small matrices gain little
#: from a second thread, and on a loaded machine threads fight for the cores (a training
#: step measured 0.73 s with one thread against 5.2 s with two, on the 2-core machine
#: under load); the workers are the parallelism.
WORKER_THREADS = 1


def limit_threads(threads: int) -> None:
    """Torch threads and default image workers of a worker process (its share of the
    machine's cores: a point in a pool of grid workers does not start a decoder per core)."""
    set_core_share(threads)
