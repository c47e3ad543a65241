"""The training / evaluation engine: one spec in, a trained model and a tracked run out.

The engine owns the loop, the phases, checkpoints and logging; methods only encode.
For each phase of the method (e.g. CLIP4CIR: ``finetune`` then ``combiner``) it freezes
every parameter group the phase does not train, trains with AdamW, linear warm-up +
cosine decay, gradient clipping and (on CUDA) mixed precision, evaluates on the eval
split after every epoch with the official metrics, and writes ``last.pt`` (everything
needed to resume exactly; deleted once the run finishes) and ``best.pt`` (the best epoch
of the phase on ``eval.select_metric``). A phase continues from the best weights of the
phase before. When a phase trains no image-side group, image representations are
computed once (feature cache) and training runs on cached features.

SPN modifiers (``spec.spn``) continue from the stage-1 checkpoint of the same spec
without modifiers (:meth:`ExperimentSpec.stage1_spec`), trained once and reused by every
composition: ``P`` fine-tunes on human + generated triplets with in-batch negatives,
``N`` trains the query side against a static bank of every training image's target
vector (InfoNCE at temperature tau, optionally ``neg_num`` sampled negatives), ``P+N``
does the latter on human + generated triplets. Zero-shot (``spn.zero_shot``) trains
stage 1 on generated triplets only (the only way to train for CIRCO, which has no
training split). Frozen image features (the bank, the reference representations) are
memory-mapped from the feature cache, float16 with ``spn.negatives.half_bank``, read a
batch of rows at a time; full-bank logits are computed chunk-wise.

Under ``torchrun`` the engine trains data-parallel (:mod:`bench.distributed`): every rank
trains on its shard of each global batch, gradients are summed across ranks, rank 0
evaluates, checkpoints and logs.

Determinism: the data order and the FashionIQ caption variants of an epoch are drawn
from generators seeded by (seed, phase, epoch); the global RNG states (dropout) are saved
in ``last.pt``. Same spec and seed on the CPU -> same metrics, and a run resumed after
an interruption ends with the metrics of an uninterrupted run.
"""

from __future__ import annotations

import contextlib
import json
import math
import random
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from bench.backbones import load_backbone
from bench.config import SYNTHETIC, ExperimentSpec, TrainSpec
from bench.core import distributed
from bench.core.arrays import ArrayCache
from bench.core.atomic import save_torch_atomic, write_json_atomic
from bench.core.checkpoints import load_checkpoint_file
from bench.core.errors import CirbenchError
from bench.core.hashing import digest, image_list_digest
from bench.core.locks import exclusive
from bench.core.optim import build_optimizer, build_schedule
from bench.core.paths import cache_dir, home
from bench.core.runtime import (
    autocast,
    grad_scaler,
    rng_state,
    seed_everything,
    select_device,
    set_rng_state,
)
from bench.data.experiment import (
    ExperimentData,
    TrainTriplet,
    load_experiment_data,
    load_generated_triplets,
    training_text,
)
from bench.evaluation import (
    Encoded,
    SplitImages,
    encode_cached,
    evaluate_splits,
    gather_rows,
)
from bench.images.pixels import load_pixels
from bench.images.transforms import to_model_input
from methods import create_method
from methods.base import IMAGE_SIDE, CIRMethod, Phase, TrainBatch

#: Called after every optimiser step with (phase name, epoch, step in epoch); tests use it
#: to interrupt a run at a chosen point.
StepHook = Callable[[str, int, int], None]
#: Called after each evaluated epoch with (phase name, global epoch, val metrics).
EpochHook = Callable[[str, int, dict[str, float]], None]


class RunStateError(CirbenchError):
    """A run folder holds state that conflicts with the request (e.g. resume without it)."""


def run_dir_for(spec: ExperimentSpec) -> Path:
    """Where a spec's checkpoints live: ``<output_dir>/<name>-<spec digest>``."""
    return home() / spec.output_dir / f"{spec.name}-{spec.digest()}"


# ----------------------------------------------------------------------------- set-up


@dataclass
class Session:
    """Everything built from a spec: data, pixels, method, device, cache."""

    spec: ExperimentSpec
    device: torch.device
    data: ExperimentData
    method: CIRMethod
    pool_names: list[str]
    pool_pixels: np.ndarray
    pool_key: str
    eval_images: list[SplitImages]
    cache: ArrayCache
    generated: list[TrainTriplet] = field(default_factory=list)
    progress: bool = True
    features_in_ram: bool = False  # see training_features

    def __post_init__(self) -> None:
        self.pool_index = {n: i for i, n in enumerate(self.pool_names)}

    def epoch_triplets(self, seed: int) -> list[TrainTriplet]:
        """The training triplets of one epoch: human, generated, or human + a seeded sample
        of generated ones (``spn.positives_train.mix_ratio`` per human triplet)."""
        spn = self.spec.spn
        if spn.zero_shot:
            return self.generated
        if not self.generated:
            return self.data.train
        ratio = spn.positives_train.mix_ratio
        count = len(self.generated) if ratio is None else round(ratio * len(self.data.train))
        if count >= len(self.generated):
            return self.data.train + self.generated
        return self.data.train + random.Random(seed).sample(self.generated, count)

    def rows(self, names: list[str]) -> np.ndarray:
        return np.fromiter((self.pool_index[n] for n in names), dtype=np.int64, count=len(names))


def resolve_pretrained(spec: ExperimentSpec, progress: bool) -> str | None:
    """``backbone.pretrained: synthetic`` -> the cached synthetic pre-training checkpoint."""
    if spec.backbone.pretrained != SYNTHETIC:
        return spec.backbone.pretrained
    from bench.backbones.pretrain import ensure_synthetic_backbone

    return str(
        ensure_synthetic_backbone(
            spec.backbone.arch,
            size=spec.dataset.synthetic_size,
            seed=spec.dataset.synthetic_seed,
            progress=progress,
        )
    )


def build_session(
    spec: ExperimentSpec, *, progress: bool = True, pretrained: bool = True
) -> Session:
    """Load data, pixels and the method. ``pretrained=False`` skips loading backbone weights
    (used when a checkpoint with every weight is loaded right after)."""
    device = select_device(spec.device)
    data = load_experiment_data(spec.dataset, progress=progress)
    weights = resolve_pretrained(spec, progress) if pretrained is True else None
    seed_everything(spec.seed)
    backbone = load_backbone(
        spec.backbone.arch, weights, seed=spec.seed, target_pad_ratio=spec.backbone.target_pad_ratio
    )
    method = create_method(spec.method.name, backbone, spec.method.params).to(device)
    cache = ArrayCache(cache_dir())

    paths: dict[str, Path] = {}
    for split in data.train_split:
        paths.update(split.image_paths)
    generated: list[TrainTriplet] = []
    if spec.spn.positives is not None:
        generated, generated_paths = load_generated_triplets(spec, data.root, cache, progress)
        if spec.spn.zero_shot:  # the bank and the pool hold the generated images only
            paths = {}
        paths.update(generated_paths)
    pool_names = list(paths)
    pool_pixels = load_pixels(
        cache, pool_names, paths, backbone.transform, progress=progress, desc="train images"
    )
    pool_key = digest(image_list_digest(pool_names, paths), backbone.transform.describe())
    eval_images = []
    for split in data.eval_splits:
        pixels = load_pixels(
            cache,
            split.gallery,
            split.image_paths,
            backbone.transform,
            progress=progress,
            desc=f"{split.name} images",
        )
        key = digest(
            image_list_digest(split.gallery, split.image_paths), backbone.transform.describe()
        )
        eval_images.append(SplitImages(split, pixels, key))
    return Session(
        spec,
        device,
        data,
        method,
        pool_names,
        pool_pixels,
        pool_key,
        eval_images,
        cache,
        generated,
        progress,
    )


# ----------------------------------------------------------------------------- optimisation


def set_trainable(method: CIRMethod, phase: Phase) -> list[torch.nn.Parameter]:
    """Freeze every group but the phase's; return the trainable parameters."""
    for p in method.parameters():
        p.requires_grad_(False)
    groups = method.parameter_groups()
    params = [p for g in phase.trains for p in groups[g]]
    for p in params:
        p.requires_grad_(True)
    return params


def phase_optimizer(
    params: list[torch.nn.Parameter], cfg: TrainSpec, total_steps: int
) -> tuple[torch.optim.AdamW, torch.optim.lr_scheduler.LambdaLR]:
    """The optimiser and schedule of one phase (``cfg``: the phase's settings)."""
    optimizer = build_optimizer(params, cfg.lr, cfg.weight_decay)
    schedule = build_schedule(optimizer, max(1, total_steps), cfg.warmup_ratio, cfg.schedule)
    return optimizer, schedule


def epoch_seed(seed: int, phase_index: int, epoch: int) -> int:
    return (seed * 1_000_003 + phase_index * 10_007 + epoch) % 2**63


# ----------------------------------------------------------------------------- checkpoints


def save_main(obj: Any, path: Path) -> None:
    """:func:`save_torch_atomic` on rank 0 only (every rank holds the same weights)."""
    if distributed.is_main():
        save_torch_atomic(obj, path)


@dataclass
class TrainState:
    """Progress of a run; saved in ``last.pt`` so that a resumed run continues exactly."""

    phase_index: int = 0
    epochs_done: int = 0  # completed epochs of the current phase
    global_epoch: int = 0  # completed epochs over all phases (the MLflow step)
    best_value: float = -math.inf
    best_epoch: int = -1
    best_metrics: dict[str, float] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    mlflow_run_id: str | None = None


# ----------------------------------------------------------------------------- training


@dataclass
class TrainResult:
    run_dir: Path
    metrics: dict[str, float]
    history: list[dict[str, Any]]
    seconds: float
    cache: dict[str, float]
    mlflow_run_id: str | None

    @property
    def best_checkpoint(self) -> Path:
        return self.run_dir / "best.pt"

    def save(self) -> None:
        record = {
            "metrics": self.metrics,
            "history": self.history,
            "seconds": self.seconds,
            "cache": self.cache,
            "mlflow_run_id": self.mlflow_run_id,
        }
        write_json_atomic(self.run_dir / "result.json", record)

    @classmethod
    def load(cls, run_dir: Path) -> TrainResult | None:
        """The result of a finished run, ``None`` if the run never finished."""
        path = run_dir / "result.json"
        if not path.is_file():
            return None
        record = json.loads(path.read_text())
        return cls(run_dir=run_dir, **record)


def select_value(metrics: dict[str, float], spec: ExperimentSpec) -> float:
    default = "mAP@10" if spec.dataset.format == "circo" else "Rmean"
    key = spec.eval.select_metric or default
    if key not in metrics:
        raise CirbenchError(f"eval.select_metric {key!r} is not a metric (have {sorted(metrics)})")
    return metrics[key]


# ----------------------------------------------------------------------------- SPN phases

SPN_POSITIVES = "spn_positives"
SPN_NEGATIVES = "spn_negatives"


def resolve_negatives(spec: ExperimentSpec, method: CIRMethod) -> dict[str, Any]:
    """Negative-scaling settings: the spec's values over the method's paper defaults."""
    assert spec.spn.negatives is not None
    given = {k: v for k, v in spec.spn.negatives.model_dump().items() if v is not None}
    return {**method.spn_defaults, **given}


def plan_phases(spec: ExperimentSpec, method: CIRMethod) -> list[tuple[Phase, TrainSpec]]:
    """The phases a spec trains, each with its settings (see the module docstring)."""
    if spec.is_stage1:
        return [(p, spec.train.phase(p.name)) for p in method.phases]
    composition = spec.spn.composition
    groups = tuple(method.parameter_groups())
    if composition.continues:
        pt = spec.spn.positives_train
        cfg = spec.train.model_copy(
            update={
                "epochs": pt.epochs,
                "lr": pt.lr or spec.train.lr,
                "batch_size": pt.batch_size or spec.train.batch_size,
            }
        )
        phase = Phase(SPN_POSITIVES, groups, "fine-tune on human + generated triplets")
        return [(phase, cfg)]
    neg = resolve_negatives(spec, method)
    query_groups = tuple(g for g in groups if method.group_side(g) != IMAGE_SIDE)
    cfg = spec.train.model_copy(
        update={
            "epochs": neg["epochs"],
            "lr": neg["lr"],
            "batch_size": neg["batch_size"],
            "schedule": "constant",
            "warmup_ratio": 0.0,
        }
    )
    phase = Phase(
        SPN_NEGATIVES, query_groups, "query side against a static negative bank", objective="bank"
    )
    return [(phase, cfg)]


#: Rows of a bank read (and upcast) at a time for the full-bank logits.
BANK_CHUNK_ROWS = 16384


def _bank_chunks(
    bank: torch.Tensor, chunk_rows: int, device: torch.device, dtype: torch.dtype
) -> Iterator[tuple[int, torch.Tensor]]:
    """(first row, rows upcast to ``dtype`` on ``device``) of consecutive chunks of a bank."""
    for start in range(0, bank.shape[0], chunk_rows):
        yield start, gather_rows(bank, slice(start, start + chunk_rows), device, dtype)


class _ChunkedBankLogits(torch.autograd.Function):
    """``query @ bank.T``, one chunk of bank rows at a time, each upcast to the query's
    dtype. The bank is static (no gradient); backward reads the chunks again instead of
    keeping them, so neither pass holds more than one chunk of a memory-mapped or float16
    bank in memory (as float32)."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, query: torch.Tensor, bank: torch.Tensor, chunk_rows: int
    ) -> torch.Tensor:
        ctx.bank, ctx.chunk_rows = bank, chunk_rows
        chunks = _bank_chunks(bank, chunk_rows, query.device, query.dtype)
        return torch.cat([query @ chunk.t() for _, chunk in chunks], dim=1)

    @staticmethod
    def backward(  # type: ignore[override]
        ctx: Any, grad: torch.Tensor
    ) -> tuple[torch.Tensor, None, None]:
        dtype = torch.float32 if grad.dtype in (torch.float16, torch.bfloat16) else grad.dtype
        grad_query = torch.zeros(grad.shape[0], ctx.bank.shape[1], device=grad.device, dtype=dtype)
        for start, chunk in _bank_chunks(ctx.bank, ctx.chunk_rows, grad.device, dtype):
            grad_query += grad[:, start : start + chunk.shape[0]].to(dtype) @ chunk
        return grad_query, None, None


def bank_logits(
    query: torch.Tensor, bank: torch.Tensor, chunk_rows: int = BANK_CHUNK_ROWS
) -> torch.Tensor:
    """``query @ bank.T`` (B, N) for a bank in any dtype and place (memory-mapped, float16,
    another device), computed ``chunk_rows`` bank rows at a time."""
    return _ChunkedBankLogits.apply(query, bank, chunk_rows)


class BankObjective(torch.nn.Module):
    """InfoNCE of each query against the static bank of every training image's target.

    logits = q @ bank.T / tau, label = the row of the true target; with ``neg_num`` the
    logits cover the positive and ``neg_num`` negatives drawn uniformly from the rest of
    the bank (the bank-size knob). tau is fixed or learnable (stored as log(1/tau)).
    The bank may be memory-mapped from the feature cache and stored as float16: the
    full-bank logits are computed ``chunk_rows`` rows at a time and sampled negatives are
    gathered row by row, each upcast to the query's dtype, so the bank is never whole in
    RAM.
    """

    def __init__(
        self,
        tau: float,
        learnable: bool,
        neg_num: int | None,
        chunk_rows: int = BANK_CHUNK_ROWS,
    ) -> None:
        super().__init__()
        self.log_scale = torch.nn.Parameter(
            torch.tensor(math.log(1.0 / tau)), requires_grad=learnable
        )
        self.neg_num = neg_num
        self.chunk_rows = chunk_rows

    @property
    def tau(self) -> float:
        return float(torch.exp(-self.log_scale.detach()))

    def forward(
        self,
        query: torch.Tensor,
        bank: torch.Tensor,
        positives: torch.Tensor,
        generator: torch.Generator,
    ) -> torch.Tensor:
        scale = self.log_scale.exp()
        if self.neg_num is None or self.neg_num >= bank.shape[0] - 1:
            logits = bank_logits(query, bank, self.chunk_rows)
            return torch.nn.functional.cross_entropy(logits * scale, positives)
        # negatives: uniform over the bank without the positive (shift past it)
        draws = torch.randint(
            0, bank.shape[0] - 1, (query.shape[0], self.neg_num), generator=generator
        ).to(positives.device)
        negatives = draws + (draws >= positives[:, None]).long()
        rows = torch.cat([positives[:, None], negatives], dim=1)
        candidates = gather_rows(bank, rows, query.device, query.dtype)  # (B, 1 + neg_num, D)
        logits = torch.einsum("bd,bkd->bk", query, candidates)
        labels = torch.zeros(query.shape[0], dtype=torch.long, device=query.device)
        return torch.nn.functional.cross_entropy(logits * scale, labels)


def make_objective(spec: ExperimentSpec, method: CIRMethod, phase: Phase) -> BankObjective | None:
    if phase.objective != "bank":
        return None
    neg = resolve_negatives(spec, method)
    return BankObjective(neg["tau"], bool(neg["learnable_tau"]), neg.get("neg_num"))


# ----------------------------------------------------------------------------- training


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
) -> TrainResult:
    """Train and evaluate ``spec``; see the module docstring. Tracked in MLflow.

    ``resume`` continues an interrupted run from ``last.pt`` (a finished run is returned
    as it is, nothing recomputed); ``restart`` discards the run folder first.
    ``on_epoch(phase, global_epoch, val_metrics)`` runs after each evaluated epoch (a
    study's pruning hook); ``parent_run_id`` nests the MLflow run (and that of an
    implicitly trained stage 1) under a suite's run, ``tags`` are added to both.
    """

    run_dir = run_dir_for(spec)
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    distributed.init(select_device(spec.device).type)
    progress = progress and distributed.is_main()
    # one process at a time per run folder: parallel suite workers that share a stage 1
    # wait for it instead of training it twice (under torchrun rank 0 holds the lock for
    # its job, and the other ranks start once it has it)
    lock = run_dir.parent / f".{run_dir.name}.lock"
    with exclusive(lock) if distributed.is_main() else contextlib.nullcontext():
        distributed.barrier()
        return _train_locked(
            spec,
            run_dir,
            resume=resume,
            restart=restart,
            progress=progress,
            on_step=on_step,
            tracking=tracking,
            on_epoch=on_epoch,
            parent_run_id=parent_run_id,
            tags=tags,
        )


def _train_locked(
    spec: ExperimentSpec,
    run_dir: Path,
    *,
    resume: bool,
    restart: bool,
    progress: bool,
    on_step: StepHook | None,
    tracking: bool,
    on_epoch: EpochHook | None,
    parent_run_id: str | None,
    tags: dict[str, Any] | None,
) -> TrainResult:
    from bench.tracking import TrackedRun

    last = run_dir / "last.pt"
    if restart and run_dir.exists() and distributed.is_main():
        shutil.rmtree(run_dir)
    distributed.barrier()
    finished = TrainResult.load(run_dir)
    if finished is not None and resume:
        return finished
    if (last.exists() or finished is not None) and not resume:
        raise RunStateError(
            f"{run_dir} already holds a run of this spec; pass --resume to continue it "
            "(or reuse its result) or --restart to start over"
        )

    init_from: Path | None = None
    composition = spec.spn.composition.name
    if not spec.is_stage1:
        stage1 = train(
            spec.stage1_spec(),
            resume=True,
            progress=progress,
            tracking=tracking,
            parent_run_id=parent_run_id,
            tags=tags,
        )
        init_from = stage1.best_checkpoint

    run_dir.mkdir(parents=True, exist_ok=True)
    if distributed.is_main():
        (run_dir / "spec.yaml").write_text(spec.to_yaml())
    checkpoint = load_checkpoint_file(last) if resume and last.exists() else None
    state = TrainState(**checkpoint["state"]) if checkpoint else TrainState()
    run_id_file = run_dir / "mlflow_run_id"
    if resume and state.mlflow_run_id is None and run_id_file.is_file():
        # interrupted before the first epoch finished: continue the same MLflow run
        state.mlflow_run_id = run_id_file.read_text().strip() or None
    with distributed.main_first():  # rank 0 fills the caches, the others read them
        session = build_session(
            spec, progress=progress, pretrained=checkpoint is None and init_from is None
        )
    if checkpoint:
        session.method.load_state_dict(checkpoint["model"])
    elif init_from is not None:
        session.method.load_state_dict(load_checkpoint_file(init_from)["model"])

    tags = {
        "cirbench.dataset_fingerprint": session.pool_key,
        "cirbench.spec_digest": spec.digest(),
        "cirbench.kind": "train",
        "cirbench.method": spec.method.name,
        "cirbench.composition": composition,
        "cirbench.dataset": spec.dataset.format,
        "cirbench.seed": spec.seed,
        **(tags or {}),
    }
    if init_from is not None:
        tags["cirbench.stage1_checkpoint"] = str(init_from)
    start = time.perf_counter()
    with TrackedRun(
        spec.experiment,
        spec.name if composition == "none" else f"{spec.name}[{composition}]",
        params=spec.flat(),
        tags=tags,
        run_id=state.mlflow_run_id,
        enabled=tracking,
        parent_run_id=parent_run_id,
    ) as run:
        state.mlflow_run_id = run.run_id
        if run.run_id:
            run_id_file.write_text(run.run_id)
        _train_phases(session, state, checkpoint, run, run_dir, on_step, on_epoch)
        seconds = time.perf_counter() - start
        final = dict(state.best_metrics)
        run.log_metrics({f"final.{k}": v for k, v in final.items()})
        run.log_metrics({"train.seconds": seconds, **session.cache.stats.as_dict()})
        run.log_dict(final, "metrics.json")
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
    )
    if distributed.is_main():
        (run_dir / "metrics.json").write_text(json.dumps(final, indent=2))
        result.save()
        # last.pt (weights + optimiser state) only serves resuming an unfinished run;
        # the finished one keeps best.pt and result.json (a quarter of the disk)
        last.unlink(missing_ok=True)
    distributed.barrier()  # the run is finished on disk before any rank moves on
    return result


def _train_phases(
    session: Session,
    state: TrainState,
    checkpoint: dict[str, Any] | None,
    run: Any,
    run_dir: Path,
    on_step: StepHook | None,
    on_epoch: EpochHook | None = None,
) -> None:
    spec, method = session.spec, session.method
    if checkpoint:
        set_rng_state(checkpoint["rng"])
    plan = plan_phases(spec, method)
    for phase_index, (phase, cfg) in enumerate(plan):
        if phase_index < state.phase_index:
            continue
        method.set_phase(phase.name if phase in method.phases else method.phases[-1].name)
        params = set_trainable(method, phase)
        objective = make_objective(spec, method, phase)
        if objective is not None:
            objective.to(session.device)
            params += [p for p in objective.parameters() if p.requires_grad]
        steps_per_epoch = math.ceil(len(session.epoch_triplets(0)) / cfg.batch_size)
        optimizer, schedule = phase_optimizer(params, cfg, steps_per_epoch * cfg.epochs)
        scaler = grad_scaler(session.device)
        resuming_here = checkpoint is not None and checkpoint["state"]["phase_index"] == phase_index
        if resuming_here:
            optimizer.load_state_dict(checkpoint["optimizer"])
            schedule.load_state_dict(checkpoint["schedule"])
            scaler.load_state_dict(checkpoint["scaler"])
            if objective is not None:
                objective.load_state_dict(checkpoint["objective"])
        else:
            state.phase_index, state.epochs_done = phase_index, 0
            state.best_value, state.best_epoch, state.best_metrics = -math.inf, -1, {}
        frozen = phase.image_frozen(method)
        for epoch in range(state.epochs_done, cfg.epochs):
            loss, rate = _train_epoch(
                session,
                phase,
                phase_index,
                epoch,
                cfg,
                optimizer,
                schedule,
                scaler,
                frozen,
                objective,
                on_step,
            )
            metrics = distributed.broadcast(  # rank 0 evaluates, every rank gets its metrics
                evaluate_splits(
                    method,
                    session.eval_images,
                    session.device,
                    batch_size=spec.eval.batch_size,
                    protocol=spec.dataset.protocol,
                    cirr_targets=spec.dataset.cirr_targets,
                    cache=session.cache if frozen else None,
                )
                if distributed.is_main()
                else None
            )
            state.epochs_done = epoch + 1
            state.global_epoch += 1
            value = select_value(metrics, spec)
            record = {
                "phase": phase.name,
                "epoch": epoch,
                "loss": loss,
                "samples_per_s": rate,
                **metrics,
            }
            if objective is not None:
                record["tau"] = objective.tau
            state.history.append(record)
            run.log_metrics(
                {"train.loss": loss, "train.samples_per_s": rate, "phase_index": phase_index}
                | {f"val.{k}": v for k, v in metrics.items()},
                step=state.global_epoch,
            )
            if session.progress:
                tqdm.write(
                    f"[{phase.name} {epoch + 1}/{cfg.epochs}] loss {loss:.4f} "
                    + " ".join(f"{k} {v:.2f}" for k, v in metrics.items() if "_" not in k)
                )
            if value > state.best_value:
                state.best_value, state.best_epoch, state.best_metrics = value, epoch, metrics
                save_main(
                    {
                        "model": method.state_dict(),
                        "phase": method.active_phase,
                        "metrics": metrics,
                        "spec": spec.model_dump(mode="json"),
                    },
                    run_dir / "best.pt",
                )
            save_main(
                {
                    "model": method.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "schedule": schedule.state_dict(),
                    "scaler": scaler.state_dict(),
                    "objective": objective.state_dict() if objective is not None else None,
                    "state": state.__dict__,
                    "rng": rng_state(),
                },
                run_dir / "last.pt",
            )
            distributed.barrier()  # every rank sees this epoch's checkpoints
            if on_epoch is not None:
                on_epoch(phase.name, state.global_epoch, metrics)
        checkpoint = None
        if phase_index + 1 < len(plan) and (run_dir / "best.pt").exists():
            method.load_state_dict(load_checkpoint_file(run_dir / "best.pt")["model"])


def training_features(session: Session, frozen: bool, bank: bool) -> Encoded | None:
    """Cached image features of the training pool when the image side is frozen, else
    None: memory-mapped from the feature cache, float16 in the bank stage when
    ``spn.negatives.half_bank`` is set; rows are read per batch. On CUDA the target bank
    (N x D) moves to the GPU in its storage dtype; the reference representations (token
    sequences for some methods) stay mapped. ``session.features_in_ram``: float32 copies
    in RAM instead, the behaviour before banks were memory-mapped (benchmarks)."""
    if not frozen:
        return None
    negatives = session.spec.spn.negatives
    half = bank and negatives is not None and negatives.half_bank
    encoded = encode_cached(
        session.method,
        session.pool_pixels,
        session.pool_key,
        session.device,
        session.spec.eval.batch_size,
        session.cache,
        dtype="float16" if half else "float32",
    )
    if session.features_in_ram:
        return encoded.in_ram()
    if bank and session.device.type == "cuda":
        encoded.target = encoded.target.to(session.device)
    return encoded


def _train_epoch(
    session: Session,
    phase: Phase,
    phase_index: int,
    epoch: int,
    cfg: TrainSpec,
    optimizer: torch.optim.Optimizer,
    schedule: torch.optim.lr_scheduler.LambdaLR,
    scaler: torch.amp.GradScaler,
    frozen: bool,
    objective: BankObjective | None,
    on_step: StepHook | None,
) -> tuple[float, float]:
    """One epoch; returns (mean loss, samples per second)."""
    spec, method, device = session.spec, session.method, session.device
    seed = epoch_seed(spec.seed, phase_index, epoch)
    triplets = session.epoch_triplets(seed)
    order = torch.randperm(len(triplets), generator=torch.Generator().manual_seed(seed)).numpy()
    text_rng = random.Random(seed)
    texts = [training_text(t, session.data.format, text_rng) for t in triplets]
    ref_rows = session.rows([t.reference for t in triplets])
    tgt_rows = session.rows([t.target for t in triplets])
    negatives_rng = torch.Generator().manual_seed(seed + 1)
    encoded = training_features(session, frozen, objective is not None)
    bank = None
    if objective is not None:
        assert encoded is not None, "the bank objective needs a frozen image side"
        bank = encoded.target  # every training image, L2-normalised (memory-mapped)
    method.train()
    total, count, start = 0.0, 0, time.perf_counter()
    batches = range(0, len(order), cfg.batch_size)
    bar = tqdm(
        batches,
        desc=f"{phase.name} epoch {epoch + 1}/{cfg.epochs}",
        disable=not session.progress,
        leave=False,
    )
    params = [p for g in optimizer.param_groups for p in g["params"]]
    for step, offset in enumerate(bar):
        global_idx = order[offset : offset + cfg.batch_size]
        optimizer.zero_grad(set_to_none=True)
        if objective is not None and bank is not None:
            assert encoded is not None
            idx = distributed.shard(global_idx)  # under torchrun: this rank's rows
            loss = None
            if len(idx):  # a rank gets no row when the last batch is smaller than the ranks
                tokens = method.tokenize([texts[i] for i in idx]).to(device)
                with autocast(device):
                    ref = encoded.reference_rows(ref_rows[idx], device)
                    query = method.encode_query(ref, tokens)
                    positives = torch.from_numpy(tgt_rows[idx]).to(device)
                    loss = objective(query.float(), bank, positives, negatives_rng)
                _check_finite(loss, phase, epoch, step)
                # one loss term per query: the share-weighted sum over ranks is the mean
                share = len(idx) / len(global_idx) if distributed.is_distributed() else 1.0
                scaler.scale(loss * share).backward()
            distributed.all_reduce_gradients(params)
            counted = len(idx)
        else:
            texts_batch = [texts[i] for i in global_idx]
            tokens = method.tokenize(texts_batch).to(device)
            loss = _in_batch_step(
                session,
                encoded,
                global_idx,
                ref_rows,
                tgt_rows,
                tokens,
                texts_batch,
                scaler,
                params,
            )
            _check_finite(loss, phase, epoch, step)
            distributed.all_reduce_gradients(params)
            # every rank computed the same global loss: rank 0 counts it
            counted = len(global_idx) if distributed.is_main() else 0
        _optimizer_step(optimizer, schedule, scaler, params, cfg)
        if loss is not None and counted:
            total += loss.item() * counted
            count += counted
        rate = count / (time.perf_counter() - start)
        if loss is not None:
            bar.set_postfix(loss=f"{loss.item():.4f}", samples_s=f"{rate:.0f}")
        if on_step is not None:
            on_step(phase.name, epoch, step)
    seconds = time.perf_counter() - start
    total, count = distributed.sum_across(total, count)  # the epoch over every rank
    return total / max(1, count), count / seconds


def _check_finite(loss: torch.Tensor, phase: Phase, epoch: int, step: int) -> None:
    if not torch.isfinite(loss):
        raise CirbenchError(
            f"non-finite loss {loss.item()} in {phase.name} epoch {epoch + 1} step {step}"
        )


def _in_batch_step(
    session: Session,
    encoded: Encoded | None,
    global_idx: np.ndarray,
    ref_rows: np.ndarray,
    tgt_rows: np.ndarray,
    tokens: torch.Tensor,
    texts: list[str],
    scaler: torch.amp.GradScaler,
    params: list[torch.nn.Parameter],
) -> torch.Tensor:
    """Loss and backward pass of one in-batch step (the method's own objective over the
    global batch), leaving this rank's gradients in ``.grad``.

    One process: encode the batch's images, compute the loss, backward. Under torchrun
    each rank encodes only its contiguous shard of the images (the costly part); the
    shards' features are all-gathered, so every rank computes the method's loss over the
    whole global batch, with every in-batch negative. The backward pass then runs in two
    parts: through the loss to the parameters it uses directly (text side, combiners;
    the same on every rank, so weighted 1 / world size) and to the gathered features; then
    from this rank's own rows of those features through its image encoder. Summed over
    ranks (``distributed.all_reduce_gradients``) this is the single-process gradient.
    ``params`` are the phase's trainable parameters (the optimiser's)."""
    method, device = session.method, session.device
    idx = distributed.shard(global_idx)
    sizes = distributed.shard_sizes(len(global_idx))
    n = len(idx)
    # a rank without rows (a last batch smaller than the ranks) encodes one row without
    # gradient, for the features' shapes in the collective, and contributes none of it
    k = n or 1
    head = idx if n else global_idx[:1]
    rows = np.concatenate([ref_rows[head], tgt_rows[head]])
    with autocast(device), torch.no_grad() if not n else contextlib.nullcontext():
        if encoded is not None:
            reps = encoded.reference_rows(rows, device)
            vecs = encoded.target_rows(rows, device)
        else:
            images = to_model_input(session.pool_pixels[rows], method.transform, device)
            reps, vecs = method.encode_images(images)
    own = [reps[:k][:n], vecs[k:][:n], reps[k:][:n], vecs[:k][:n]]
    if distributed.is_distributed():  # every rank's rows, detached, as leaves
        parts = [distributed.all_gather_rows(t, sizes).requires_grad_(t.requires_grad) for t in own]
    else:
        parts = own
    with autocast(device):
        batch = TrainBatch(
            reference=parts[0],
            target=parts[1],
            target_reference=parts[2],
            reference_target=parts[3],
            tokens=tokens,
            texts=texts,
        )
        loss = method.training_loss(batch)
    if not torch.isfinite(loss):
        return loss  # the caller reports it
    # one process: the whole backward pass; torchrun: part 1, to the direct parameters and
    # the gathered features
    scaler.scale(loss).backward()
    if not distributed.is_distributed():
        return loss
    world = distributed.world_size()
    direct = [p.grad / world if p.grad is not None else None for p in params]
    for p in params:
        p.grad = None
    lo = sum(sizes[: distributed.rank()])
    pairs = [
        (t, g.grad[lo : lo + n])
        for t, g in zip(own, parts, strict=True)
        if t.requires_grad and g.grad is not None and n
    ]
    if pairs:  # part 2: this rank's own rows through its image encoder
        torch.autograd.backward([t for t, _ in pairs], [g for _, g in pairs])
    for p, d in zip(params, direct, strict=True):
        if d is not None:
            p.grad = d if p.grad is None else p.grad + d
    return loss


def _optimizer_step(
    optimizer: torch.optim.Optimizer,
    schedule: torch.optim.lr_scheduler.LambdaLR,
    scaler: torch.amp.GradScaler,
    params: list[torch.nn.Parameter],
    cfg: TrainSpec,
) -> None:
    """Clip (when asked), step, update the loss scale, advance the schedule."""
    if cfg.grad_clip is not None:
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
    scaler.step(optimizer)
    scaler.update()
    schedule.step()


# ----------------------------------------------------------------------------- evaluation


def load_trained(spec: ExperimentSpec, checkpoint: Path, *, progress: bool = True) -> Session:
    """A session whose method carries the weights (and phase) of a checkpoint."""
    state = load_checkpoint_file(checkpoint)
    session = build_session(spec, progress=progress, pretrained=False)
    session.method.load_state_dict(state["model"])
    phase = state.get("phase") or session.method.phases[-1].name
    session.method.set_phase(phase)
    return session


def evaluate(
    spec: ExperimentSpec, checkpoint: Path, *, progress: bool = True, tracking: bool = True
) -> dict[str, float]:
    """Evaluate a checkpoint on the spec's eval split; tracked as its own MLflow run."""
    from bench.tracking import TrackedRun

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
        metrics = evaluate_splits(
            session.method,
            session.eval_images,
            session.device,
            batch_size=spec.eval.batch_size,
            protocol=spec.dataset.protocol,
            cirr_targets=spec.dataset.cirr_targets,
            cache=session.cache,
        )
        run.log_metrics({f"val.{k}": v for k, v in metrics.items()})
        run.log_dict(metrics, "metrics.json")
    return metrics


def write_submission(
    spec: ExperimentSpec, checkpoint: Path, out_dir: Path, *, progress: bool = True
) -> tuple[Path, Path]:
    """CIRR test-server files for the spec's eval split (normally ``test1``), validated."""
    from bench.evaluation import cirr_submission_rankings
    from bench.metrics import check_cirr_submission, write_cirr_submission

    if spec.dataset.format != "cirr":
        raise CirbenchError("submission files exist for CIRR only (dataset.format: cirr)")
    session = load_trained(spec, checkpoint, progress=progress)
    (images,) = session.eval_images
    pair_ids, top50, top3 = cirr_submission_rankings(
        session.method, images, session.device, spec.eval.batch_size
    )
    paths = write_cirr_submission(out_dir, pair_ids, top50, top3, name=spec.name)
    for path in paths:
        check_cirr_submission(path, expected_pair_ids=pair_ids, gallery_names=images.split.gallery)
    return paths
