"""The training engine: one spec in, a trained model and a tracked run out.

The engine owns the phases, checkpoints and logging; methods only encode, modifiers
(:mod:`bench.spn`) only say what they add. A run trains its plan (:func:`plan_phases`):

* stage 1 (no modifier, or zero-shot): each phase of the method (e.g. CLIP4CIR:
  ``finetune`` then ``combiner``) with the spec's ``train`` settings (AdamW, linear warm-up
  + cosine decay, gradient clipping, mixed precision on CUDA); a phase continues from the
  best weights of the phase before;
* otherwise the one phase its modifiers add (:func:`bench.spn.modifiers.modifier_phase`),
  continuing from the stage-1 run of the same spec without modifiers
  (:meth:`ExperimentSpec.stage1_spec`), trained once and reused by every composition;
* with ``stage1: {checkpoint, format}`` the stage-1 run is a released checkpoint imported
  and evaluated, not trained (:mod:`bench.train.stage1`).

Every epoch is evaluated on the eval split with the format's official metrics; ``last.pt``
holds everything needed to resume exactly and ``best.pt`` the best epoch on
``eval.select_metric`` (see :mod:`bench.train.checkpoints`). Same spec and seed on the CPU
-> same metrics, and a run resumed after an interruption ends with the metrics of an
uninterrupted run. Under ``torchrun`` every rank trains its shard of each global batch;
rank 0 evaluates, checkpoints and logs.
"""

from __future__ import annotations

import contextlib
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from tqdm import tqdm

from bench.config import ExperimentSpec
from bench.config.spec import SPEC_SCHEMA
from bench.core import distributed
from bench.core.atomic import remove_stale_temporaries, write_json_atomic, write_text_atomic
from bench.core.checkpoints import (
    load_checkpoint_file,
    restore_resume_record,
    restore_rng,
    save_resume_record,
)
from bench.core.errors import CirbenchError
from bench.core.locks import exclusive
from bench.core.runtime import select_device
from bench.evaluation.evaluate import evaluate_run
from bench.formats import get_format
from bench.stats import PER_QUERY_FILE, RunQueryValues
from bench.tracking import TrackedRun
from bench.tracking.store import PROCESS_TAG, RUN_DIR_TAG, end_dead_runs, run_name, this_process
from bench.train.budget import plan_phases
from bench.train.checkpoints import RunStateError, TrainResult, TrainState, save_main
from bench.train.data import eval_options, extra_eval_options
from bench.train.loop import PhaseTraining, StepHook, train_epoch
from bench.train.preflight import preflight
from bench.train.session import Session, build_session, run_dir_for
from bench.train.stage1 import finished_import, import_stage1, stage1_tags

#: Called after each evaluated epoch with (phase name, global epoch, val metrics).
EpochHook = Callable[[str, int, dict[str, float]], None]


@dataclass
class TrainOptions:
    """How :func:`train` runs a spec (see its docstring)."""

    resume: bool = False
    restart: bool = False
    progress: bool = True
    on_step: StepHook | None = None
    tracking: bool = True
    on_epoch: EpochHook | None = None
    parent_run_id: str | None = None
    tags: dict[str, Any] = field(default_factory=dict)
    swept: dict[str, Any] = field(default_factory=dict)


def select_value(metrics: dict[str, float], spec: ExperimentSpec) -> float:
    """The value that selects the best epoch (default: the format's headline metric)."""
    key = spec.eval.select_metric or get_format(spec.dataset.format).headline_metric
    if key not in metrics:
        raise CirbenchError(f"eval.select_metric {key!r} is not a metric (have {sorted(metrics)})")
    return metrics[key]


def train(
    spec: ExperimentSpec,
    *,
    resume: bool = False,
    restart: bool = False,
    progress: bool = True,
    on_step: StepHook | None = None,
    tracking: bool = True,
    on_epoch: EpochHook | None = None,
    parent_run_id: str | None = None,
    tags: dict[str, Any] | None = None,
    swept: dict[str, Any] | None = None,
) -> TrainResult:
    """Train and evaluate ``spec``; see the module docstring. Tracked in MLflow.

    ``resume`` continues an interrupted run from ``last.pt`` (a finished run is returned
    as it is, nothing recomputed); ``restart`` discards the run folder first.
    ``on_epoch(phase, global_epoch, val_metrics)`` runs after each evaluated epoch (a
    study's pruning hook); ``parent_run_id`` nests the MLflow run (and that of an
    implicitly trained stage 1) under a suite's run, ``tags`` are added to both.
    ``swept`` (short name -> value, e.g. ``{"K": 300}``: a suite's swept values) goes into
    the run's name and params, beside the params ``composition``, ``method``, ``dataset``
    that every run carries (axes of the UI's compare views).
    """
    preflight(spec, spec.name)  # the whole spec before any work
    options = TrainOptions(
        resume,
        restart,
        progress,
        on_step,
        tracking,
        on_epoch,
        parent_run_id,
        dict(tags or {}),
        dict(swept or {}),
    )
    run_dir = run_dir_for(spec)
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    distributed.init(select_device(spec.device).type)
    if distributed.is_main():
        note_old_runs(run_dir.parent)
    options.progress = progress and distributed.is_main()
    # one process at a time per run folder: parallel suite workers that share a stage 1
    # wait for it instead of training it twice (under torchrun rank 0 holds the lock for
    # its job, and the other ranks start once it has it)
    lock = run_dir.parent / f".{run_dir.name}.lock"
    with exclusive(lock) if distributed.is_main() else contextlib.nullcontext():
        distributed.barrier()
        return _train_locked(spec, run_dir, options)


_noted: set[Path] = set()


def note_old_runs(runs: Path) -> None:
    """Once per process and runs folder: say how many run folders there hold a spec of an
    older schema (a schema-3 spec has ``dataset.also_protocols``); their digests differ
    from today's specs', so they are never reused."""
    if runs in _noted:
        return
    _noted.add(runs)
    old = 0
    for spec_file in runs.glob("*/spec.yaml"):
        try:
            data = yaml.safe_load(spec_file.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError):
            continue
        old += "also_protocols" not in (data.get("dataset") or {})
    if old:
        print(
            f"cirbench: {runs} holds {old} run folders of an older spec schema (before "
            f"schema {SPEC_SCHEMA}); they are not reused: delete them to reclaim the space",
            file=sys.stderr,
        )


def _finished_or_fresh(
    run_dir: Path, options: TrainOptions, spec: ExperimentSpec | None = None
) -> TrainResult | None:
    """A finished run to return (``--resume``), or None to train; refuses to overwrite."""
    if options.restart and run_dir.exists() and distributed.is_main():
        shutil.rmtree(run_dir)
    distributed.barrier()
    finished = TrainResult.load(run_dir)
    if spec is not None and spec.imports_stage1 and finished is not None:
        finished = finished_import(run_dir, stage1_tags(spec))
    if finished is not None and options.resume:
        return finished
    if ((run_dir / "last.pt").exists() or finished is not None) and not options.resume:
        raise RunStateError(
            f"{run_dir} already holds a run of this spec; pass --resume to continue it "
            "(or reuse its result) or --restart to start over"
        )
    return None


def _stage1_checkpoint(spec: ExperimentSpec, options: TrainOptions) -> Path | None:
    """The best checkpoint of the spec's stage 1 (trained first when needed)."""
    if spec.is_stage1:
        return None
    stage1 = train(
        spec.stage1_spec(),
        resume=True,
        progress=options.progress,
        tracking=options.tracking,
        parent_run_id=options.parent_run_id,
        tags=options.tags,
    )
    return stage1.best_checkpoint


@dataclass
class RunStart:
    """A run about to train: its session, the resume record and progress it continues."""

    session: Session
    checkpoint: dict[str, Any] | None
    state: TrainState
    init_from: Path | None


def _start(spec: ExperimentSpec, run_dir: Path, options: TrainOptions) -> RunStart:
    init_from = _stage1_checkpoint(spec, options)
    run_dir.mkdir(parents=True, exist_ok=True)
    if distributed.is_main():
        remove_stale_temporaries(run_dir)  # a killed writer's checkpoint halves
        write_text_atomic(run_dir / "spec.yaml", spec.to_yaml())
    last = run_dir / "last.pt"
    checkpoint = load_checkpoint_file(last) if options.resume and last.exists() else None
    state = TrainState(**checkpoint["state"]) if checkpoint else TrainState()
    run_id_file = run_dir / "mlflow_run_id"
    if options.resume and state.mlflow_run_id is None and run_id_file.is_file():
        # interrupted before the first epoch finished: continue the same MLflow run
        state.mlflow_run_id = run_id_file.read_text().strip() or None
    began = time.perf_counter()
    with distributed.main_first():  # rank 0 fills the caches, the others read them
        session = build_session(
            spec, progress=options.progress, pretrained=checkpoint is None and init_from is None
        )
    state.setup_seconds = time.perf_counter() - began
    if checkpoint:
        session.method.load_state_dict(checkpoint["model"])
    elif init_from is not None:
        session.method.load_state_dict(load_checkpoint_file(init_from)["model"])
    return RunStart(session, checkpoint, state, init_from)


def _run_tags(spec: ExperimentSpec, start: RunStart, extra: dict[str, Any]) -> dict[str, Any]:
    tags = {
        "cirbench.dataset_fingerprint": start.session.pool_key,
        "cirbench.spec_digest": spec.digest(),
        "cirbench.kind": "train",
        "cirbench.method": spec.method.name,
        "cirbench.composition": spec.spn.composition.name,
        "cirbench.dataset": spec.dataset.format,
        "cirbench.seed": spec.seed,
        PROCESS_TAG: this_process(),
        RUN_DIR_TAG: str(run_dir_for(spec)),
        **extra,
    }
    if start.init_from is not None:
        tags["cirbench.stage1_checkpoint"] = str(start.init_from)
    return tags | stage1_tags(spec)


def axis_params(spec: ExperimentSpec) -> dict[str, str]:
    """The short params every training run carries (the UI's compare and chart views use
    params, not tags, as axes)."""
    return {
        "composition": spec.spn.composition.name,
        "method": spec.method.name,
        "dataset": spec.dataset.format,
    }


def _train_locked(spec: ExperimentSpec, run_dir: Path, options: TrainOptions) -> TrainResult:
    finished = _finished_or_fresh(run_dir, options, spec)
    if finished is not None:
        return finished
    if spec.is_stage1 and spec.imports_stage1:
        return import_stage1(
            spec,
            run_dir,
            progress=options.progress,
            tracking=options.tracking,
            parent_run_id=options.parent_run_id,
            tags=options.tags,
        )
    start = _start(spec, run_dir, options)
    session, state = start.session, start.state
    composition = spec.spn.composition.name
    began = time.perf_counter()
    if options.tracking and distributed.is_main():
        # runs of this spec left RUNNING by a killed process (this one holds the folder's
        # lock, so no live process trains it), with or without --resume
        end_dead_runs(spec.experiment, spec.digest(), str(run_dir), keep=state.mlflow_run_id)
    with TrackedRun(
        spec.experiment,
        run_name(spec.name, composition, options.swept),
        params={**spec.flat(), **axis_params(spec), **options.swept},
        tags=_run_tags(spec, start, options.tags),
        run_id=state.mlflow_run_id,
        enabled=options.tracking,
        parent_run_id=options.parent_run_id,
    ) as run:
        state.mlflow_run_id = run.run_id
        if run.run_id:
            write_text_atomic(run_dir / "mlflow_run_id", run.run_id)
        _record_bank(session, run_dir, run)
        _train_phases(session, state, start.checkpoint, run, run_dir, options)
        seconds = time.perf_counter() - began
        final = dict(state.best_metrics)
        run.log_metrics({f"final.{k}": v for k, v in final.items()})
        run.log_metrics(
            {
                "train.seconds": seconds,
                "train.setup_seconds": state.setup_seconds,
                **session.cache.stats.as_dict(),
            }
        )
        run.log_dict(final, "metrics.json")
        if (run_dir / PER_QUERY_FILE).is_file():  # the per-query values of those metrics
            run.log_artifact(run_dir / PER_QUERY_FILE)
            sizes = RunQueryValues.load(run_dir / PER_QUERY_FILE).sizes()
            run.log_metrics({"eval.queries": sum(sizes.values())})  # the val size
        run.log_text(spec.to_yaml(), "spec.yaml")
        if spec.train.save_best_checkpoint_artifact:
            run.log_artifact(run_dir / "best.pt")
    result = TrainResult(
        run_dir,
        final,
        state.history,
        seconds,
        session.cache.stats.as_dict(),
        state.mlflow_run_id,
        state.setup_seconds,
    )
    if distributed.is_main():
        write_json_atomic(run_dir / "metrics.json", final)
        result.save()
        # last.pt (weights + optimiser state) only serves resuming an unfinished run;
        # the finished one keeps best.pt and result.json (a quarter of the disk)
        (run_dir / "last.pt").unlink(missing_ok=True)
    distributed.barrier()  # the run is finished on disk before any rank moves on
    return result


def _record_bank(session: Session, run_dir: Path, run: TrackedRun) -> None:
    """What the SPN bank holds, in the run folder (``bank.json``) and in MLflow: its row
    count, and the groups of pixel-identical images merged into one row."""
    if session.spec.spn.negatives is None:
        return
    groups: dict[str, list[str]] = {}
    for name, kept in session.same_as.items():
        groups.setdefault(kept, [kept]).append(name)
    record = {
        "rows": len(session.pool_names),
        "contents": session.spec.spn.negatives.bank,
        "dedup": session.spec.spn.negatives.dedup,
        "merged_images": len(session.same_as),
        "duplicate_groups": groups,
    }
    if distributed.is_main():
        write_json_atomic(run_dir / "bank.json", record)
    run.log_metrics({"bank.rows": record["rows"], "bank.merged_images": len(session.same_as)})
    run.log_dict(record, "bank.json")


def _train_phases(
    session: Session,
    state: TrainState,
    checkpoint: dict[str, Any] | None,
    run: TrackedRun,
    run_dir: Path,
    options: TrainOptions,
) -> None:
    method = session.method
    if checkpoint:
        restore_rng(checkpoint)
    plan = plan_phases(session.spec, method)
    for index, planned in enumerate(plan):
        if index < state.phase_index:
            continue
        phase = planned.phase
        default = phase.name if phase in method.phases else method.phases[-1].name
        method.set_phase(planned.method_phase or default)
        resuming = checkpoint is not None and checkpoint["state"]["phase_index"] == index
        if not resuming and not session.spec.is_stage1:
            method.begin_continuation(phase)  # from the stage-1 weights (not on resume)
        training = PhaseTraining.create(session, phase, index, planned.settings, planned.objective)
        if resuming:
            _restore_phase(training, checkpoint)
        else:
            state.start_phase(index)
        for epoch in range(state.epochs_done, planned.settings.epochs):
            loss, rate = train_epoch(session, training, epoch, options.on_step)
            _end_epoch(session, training, state, epoch, loss, rate, run, run_dir, options)
        checkpoint = None
        if index + 1 < len(plan) and (run_dir / "best.pt").exists():
            method.load_state_dict(load_checkpoint_file(run_dir / "best.pt")["model"])


def _restore_phase(training: PhaseTraining, checkpoint: dict[str, Any]) -> None:
    """Continue the phase a resume record was written in."""
    restore_resume_record(checkpoint, training.optimizer, training.schedule)
    training.scaler.load_state_dict(checkpoint["scaler"])
    if training.objective is not None:
        training.objective.load_state_dict(checkpoint["objective"])


def _end_epoch(
    session: Session,
    training: PhaseTraining,
    state: TrainState,
    epoch: int,
    loss: float,
    rate: float,
    run: TrackedRun,
    run_dir: Path,
    options: TrainOptions,
) -> None:
    """Evaluate, log and checkpoint one finished epoch."""
    spec, method, phase = session.spec, session.method, training.phase
    per_query: RunQueryValues | None = None
    if distributed.is_main():  # rank 0 evaluates, every rank gets its metrics
        per_query = evaluate_run(
            method,
            session.eval_images,
            session.device,
            batch_size=spec.eval.batch_size,
            options=eval_options(spec.dataset),
            cache=session.cache if training.frozen else None,
            also=extra_eval_options(spec.dataset),
        )
    metrics = distributed.broadcast(per_query.metrics() if per_query is not None else None)
    state.epochs_done = epoch + 1
    state.global_epoch += 1
    record = {"phase": phase.name, "epoch": epoch, "loss": loss, "samples_per_s": rate, **metrics}
    if training.objective is not None:
        record["tau"] = training.objective.tau
    state.history.append(record)
    run.log_metrics(
        {"train.loss": loss, "train.samples_per_s": rate, "phase_index": training.index}
        | {f"val.{k}": v for k, v in metrics.items()},
        step=state.global_epoch,
    )
    if session.progress:
        headline = get_format(spec.dataset.format).headline_metric
        tqdm.write(  # one line per epoch, the same fields for every format
            f"[{phase.name} {epoch + 1}/{training.settings.epochs}] loss {loss:.4f} "
            f"val {headline} {metrics.get(headline, float('nan')):.2f}"
        )
    value = select_value(metrics, spec)
    if value > state.best_value:
        state.best_value, state.best_epoch, state.best_metrics = value, epoch, metrics
        best = {
            "model": method.state_dict(),
            "phase": method.active_phase,
            "metrics": metrics,
            "spec": spec.model_dump(mode="json"),
        }
        save_main(best, run_dir / "best.pt")
        if per_query is not None:  # the best epoch's per-query values, beside best.pt
            per_query.save(run_dir / PER_QUERY_FILE)
    if distributed.is_main():
        objective = training.objective.state_dict() if training.objective is not None else None
        save_resume_record(
            run_dir / "last.pt",
            method,
            training.optimizer,
            training.schedule,
            state.__dict__,
            scaler=training.scaler.state_dict(),
            objective=objective,
        )
    distributed.barrier()  # every rank sees this epoch's checkpoints
    if options.on_epoch is not None:
        options.on_epoch(phase.name, state.global_epoch, metrics)
