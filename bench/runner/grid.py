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

from bench.backbones.resolve import SYNTHETIC_WEIGHTS, resolve_weights
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


def prepare_shared_inputs(
    run: SuiteRun, points: list[Point], progress: bool, workers: int = 1
) -> None:
    """Build what every point of ``points`` reads and none owns (the synthetic data and the
    synthetic pre-trained backbones, :func:`shared_backbones`) before the grid's workers
    start: a worker would otherwise build it while the others wait on its lock. The data
    is written here; the backbones pre-train in up to ``workers`` processes side by side,
    one torch thread each (on a 2-core CPU two tiny models train faster side by side than
    one with two threads), or here with all this process's threads when one is missing."""
    worlds = {}
    points = unfinished(run, points)
    for point in points:
        data = run.spec(point).dataset
        worlds.setdefault((data.root, data.synthetic_size, data.synthetic_seed), data)
    for data in worlds.values():
        dataset_root(data, progress=progress)
    jobs = shared_backbones(run, points)
    if workers <= 1 or len(jobs) <= 1:
        for job in jobs:
            resolve_weights(**job, progress=progress)
        return
    with ProcessPoolExecutor(min(workers, len(jobs)), mp_context=get_context("spawn")) as pool:
        list(pool.map(_pretrain_worker, [(job, WORKER_THREADS) for job in jobs]))


def unfinished(run: SuiteRun, points: list[Point]) -> list[Point]:
    """The points whose stage 1 is still to train (a finished stage 1 had the data and the
    backbone; later stages start from its checkpoint)."""
    out = []
    for point in points:
        spec = run.spec(point)
        stage1 = spec if spec.is_stage1 else spec.stage1_spec()
        if TrainResult.load(run_dir_for(stage1)) is None:
            out.append(point)
    return out


def shared_backbones(run: SuiteRun, points: list[Point]) -> list[dict[str, Any]]:
    """The synthetic pre-trained backbones ``points`` read (each method's backbone and the
    positives' matching backbone; pass the :func:`unfinished` ones), once each, longest
    pre-training first (:data:`PRETRAINING_ORDER`): keyword arguments of
    :func:`resolve_weights`."""
    backbones: dict[tuple[Any, ...], dict[str, Any]] = {}
    for point in points:
        spec = run.spec(point)
        wanted = [spec.backbone]
        positives = getattr(spec.spn, "positives", None)
        if positives is not None:
            wanted.append(positives.backbone)
        for backbone in wanted:
            if backbone.pretrained != SYNTHETIC_WEIGHTS:
                continue
            job = {
                "arch": backbone.arch,
                "pretrained": backbone.pretrained,
                "synthetic_size": spec.dataset.synthetic_size,
                "synthetic_seed": spec.dataset.synthetic_seed,
            }
            backbones.setdefault(tuple(job.values()), job)
    return sorted(backbones.values(), key=lambda job: _pretraining_rank(job["arch"]))


#: Synthetic pre-trainings, longest first (one torch thread, small world: BLIP-2's Q-Former
#: with ITM about 3.5 min per epoch, the CLIP 2 min), so the longest starts first.
PRETRAINING_ORDER = ("hf-blip2", "cirbench", "hf-blip")


def _pretraining_rank(arch: str) -> int:
    for rank, prefix in enumerate(PRETRAINING_ORDER):
        if arch.startswith(prefix + ":") or arch.startswith(prefix + "-") or arch == prefix:
            return rank
    return len(PRETRAINING_ORDER)


def _pretrain_worker(args: tuple[dict[str, Any], int]) -> str | None:
    job, threads = args
    limit_threads(threads)
    return resolve_weights(**job, progress=False)


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
            prepare_shared_inputs(run, points, progress, workers)
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
