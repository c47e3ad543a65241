"""A released stage-1 checkpoint as a spec's stage-1 run (``stage1: {checkpoint, format}``).

Nothing is trained: the files are imported into the method through their format
(:func:`bench.checkpoints.import_checkpoint`; a mismatch is an error, never a partial
load), the model is evaluated once on the eval split with the format's official metrics,
and the run folder gets what a trained stage 1 leaves: ``best.pt`` (the imported weights
in cirbench's layout, which every composition's stage 2 continues from), ``result.json``,
``metrics.json`` and ``stage1.json`` (format, files, their sha256 digests). The MLflow run
(``cirbench.kind: import``) carries the digests as tags and ``stage1.json`` as artifact; a
stage-2 run names the same digests in its tags. A finished import whose files changed
since (another digest) is refused rather than reused.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from bench.checkpoints import get_checkpoint_format, import_checkpoint
from bench.config import ExperimentSpec
from bench.core import distributed
from bench.core.atomic import write_json_atomic, write_text_atomic
from bench.core.errors import CirbenchError
from bench.core.hashing import file_digest
from bench.stats import PER_QUERY_FILE
from bench.tracking import TrackedRun
from bench.train.checkpoints import RunStateError, TrainResult, save_main
from bench.train.evaluate import session_query_values
from bench.train.session import build_session

#: The file in an import run's folder that records what was imported.
STAGE1_RECORD = "stage1.json"


def stage1_tags(spec: ExperimentSpec) -> dict[str, str]:
    """MLflow tags naming a spec's released stage 1 (format, files, digests); empty when
    the spec trains its stage 1."""
    if spec.stage1 is None:
        return {}
    files = [Path(f).expanduser() for f in spec.stage1.checkpoint]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise CirbenchError(f"stage1.checkpoint: file not found: {', '.join(missing)}")
    return {
        "cirbench.stage1.format": spec.stage1.format,
        "cirbench.stage1.files": ", ".join(str(f.resolve()) for f in files),
        "cirbench.stage1.sha256": "+".join(file_digest(f) for f in files),
    }


def check_stage1_format(spec: ExperimentSpec) -> None:
    """The format exists and loads into the spec's method (before any work)."""
    assert spec.stage1 is not None
    fmt = get_checkpoint_format(spec.stage1.format)
    if fmt.method != spec.method.name:
        raise CirbenchError(
            f"stage1.format {fmt.name} holds a {fmt.method} model, the spec's method is "
            f"{spec.method.name}"
        )


def finished_import(run_dir: Path, tags: dict[str, str]) -> TrainResult | None:
    """The finished import in ``run_dir`` if it imported the same files (by digest)."""
    finished = TrainResult.load(run_dir)
    record = run_dir / STAGE1_RECORD
    if finished is None or not record.is_file():
        return None
    had = json.loads(record.read_text(encoding="utf-8")).get("sha256")
    if had != tags["cirbench.stage1.sha256"]:
        raise RunStateError(
            f"{run_dir}: imported stage-1 files with digest {had}, the files now have "
            f"{tags['cirbench.stage1.sha256']}; pass --restart to import them again"
        )
    return finished


def import_stage1(
    spec: ExperimentSpec,
    run_dir: Path,
    *,
    progress: bool,
    tracking: bool,
    parent_run_id: str | None,
    tags: dict[str, Any],
) -> TrainResult:
    """Import ``spec.stage1`` as the run in ``run_dir`` (see the module docstring)."""
    check_stage1_format(spec)
    stage1 = stage1_tags(spec)
    began = time.perf_counter()
    run_dir.mkdir(parents=True, exist_ok=True)
    if distributed.is_main():
        write_text_atomic(run_dir / "spec.yaml", spec.to_yaml())
    session = build_session(spec, progress=progress, pretrained=False)
    method = session.method
    assert spec.stage1 is not None
    with TrackedRun(  # a file that does not import ends this run FAILED with the error
        spec.experiment,
        f"{spec.name}[stage1 {spec.stage1.format}]",
        params=spec.flat(),
        tags={
            "cirbench.spec_digest": spec.digest(),
            "cirbench.kind": "import",
            "cirbench.method": spec.method.name,
            "cirbench.composition": spec.spn.composition.name,
            "cirbench.dataset": spec.dataset.format,
            "cirbench.seed": spec.seed,
            "cirbench.dataset_fingerprint": session.pool_key,
            **tags,
            **stage1,
        },
        enabled=tracking,
        parent_run_id=parent_run_id,
    ) as run:
        imported = import_checkpoint(method, spec.stage1.checkpoint, spec.stage1.format)
        record = {
            "format": imported.format,
            "files": [str(f.resolve()) for f in imported.files],
            "sha256": imported.digest,
            "phase": method.active_phase,
        }
        per_query = session_query_values(session)
        metrics = per_query.metrics()
        if distributed.is_main():  # the per-query values, beside best.pt (intervals, compare)
            run.log_artifact(per_query.save(run_dir / PER_QUERY_FILE))
        best = {
            "model": method.state_dict(),
            "phase": method.active_phase,
            "metrics": metrics,
            "spec": spec.model_dump(mode="json"),
            "imported": record,
        }
        save_main(best, run_dir / "best.pt")
        seconds = time.perf_counter() - began
        run.log_metrics({f"final.{k}": v for k, v in metrics.items()})
        run.log_metrics({"train.seconds": seconds, "train.epochs": 0})
        run.log_dict(record, STAGE1_RECORD)
        run.log_dict(metrics, "metrics.json")
        run.log_text(spec.to_yaml(), "spec.yaml")
        run_id = run.run_id
    history = [{"phase": "import", "epoch": 0, **metrics}]
    result = TrainResult(run_dir, metrics, history, seconds, session.cache.stats.as_dict(), run_id)
    if distributed.is_main():
        write_json_atomic(run_dir / "metrics.json", metrics)
        write_json_atomic(run_dir / STAGE1_RECORD, record)
        result.save()  # last: its presence marks the finished run
    distributed.barrier()
    return result
