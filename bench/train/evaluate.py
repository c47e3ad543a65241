"""Trained runs after training: evaluate a checkpoint (tracked), write test-server files."""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch

from bench.config import ExperimentSpec
from bench.core.checkpoints import load_checkpoint_file
from bench.core.errors import CirbenchError
from bench.evaluation.encode import encode_pixels, query_features
from bench.evaluation.evaluate import evaluate_run
from bench.formats import get_format
from bench.stats import PER_QUERY_FILE, RunQueryValues
from bench.tracking import TrackedRun
from bench.train.data import eval_options, extra_eval_options
from bench.train.session import Session, build_session


def load_trained(spec: ExperimentSpec, checkpoint: Path, *, progress: bool = True) -> Session:
    """A session whose method carries the weights (and phase) of a checkpoint."""
    state = load_checkpoint_file(checkpoint)
    session = build_session(spec, progress=progress, pretrained=False)
    session.method.load_state_dict(state["model"])
    phase = state.get("phase") or session.method.phases[-1].name
    session.method.set_phase(phase)
    return session


def session_query_values(session: Session) -> RunQueryValues:
    """The session's model on its eval split (the spec's protocol and its extra ones), per
    query; frozen image features from the feature cache."""
    spec = session.spec
    return evaluate_run(
        session.method,
        session.eval_images,
        session.device,
        batch_size=spec.eval.batch_size,
        options=eval_options(spec.dataset),
        cache=session.cache,
        also=extra_eval_options(spec.dataset),
    )


def session_metrics(session: Session) -> dict[str, float]:
    """The metrics of :func:`session_query_values`."""
    return session_query_values(session).metrics()


def evaluate(
    spec: ExperimentSpec, checkpoint: Path, *, progress: bool = True, tracking: bool = True
) -> dict[str, float]:
    """Evaluate a checkpoint on the spec's eval split; tracked as its own MLflow run."""
    session = load_trained(spec, checkpoint, progress=progress)
    tags = {
        "cirbench.dataset_fingerprint": session.pool_key,
        "cirbench.spec_digest": spec.digest(),
        "cirbench.kind": "evaluate",
        "cirbench.checkpoint": str(checkpoint),
    }
    with TrackedRun(
        spec.experiment, f"{spec.name}-eval", params=spec.flat(), tags=tags, enabled=tracking
    ) as run:
        per_query = session_query_values(session)
        metrics = per_query.metrics()
        run.log_metrics({f"val.{k}": v for k, v in metrics.items()})
        run.log_dict(metrics, "metrics.json")
        with tempfile.TemporaryDirectory() as folder:  # the per-query values, for compare
            run.log_artifact(per_query.save(Path(folder) / PER_QUERY_FILE))
    return metrics


@torch.no_grad()
def write_submission(
    spec: ExperimentSpec,
    checkpoint: Path,
    out_dir: Path,
    *,
    split: str | None = None,
    progress: bool = True,
) -> list[Path]:
    """Test-server files of ``split`` (default: the spec's eval split; normally CIRR
    ``test1``), validated."""
    fmt = get_format(spec.dataset.format)
    if not fmt.has_submission:
        raise CirbenchError(f"{fmt.title} has no test-server submission format")
    if split is not None and split != spec.dataset.eval_split:
        dataset = spec.dataset.model_copy(update={"eval_split": split})
        spec = spec.model_copy(update={"dataset": dataset})
    session = load_trained(spec, checkpoint, progress=progress)
    method, device, batch = session.method, session.device, spec.eval.batch_size
    files = []
    for images in session.eval_images:
        method.eval()
        encoded = encode_pixels(method, images.pixels, device, batch)
        queries = query_features(method, images, encoded, device, batch)
        name = (
            spec.name if images.split.category is None else f"{spec.name}-{images.split.category}"
        )
        files += fmt.write_submission(images.split, queries, encoded.target_matrix(), out_dir, name)
    return files
