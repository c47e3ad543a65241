"""The training loop: one epoch of one phase, in-batch or against the SPN bank.

A phase freezes every parameter group it does not train; when no image-side group trains,
image representations come from the feature cache (memory-mapped; float16 in the bank
stage with ``spn.negatives.half_bank``) and training runs on cached features. An in-batch
step runs the method's own ``training_loss`` over the (global) batch; a bank step scores
each query against the static bank (:mod:`bench.spn.negatives`); a method that declares a
query state (SPRC) reads it from the cache (:mod:`bench.train.query_states`) instead of the
reference representations. Under ``torchrun``
(:mod:`bench.core.distributed`) the batch is sharded, features all-gathered for in-batch
objectives, and gradients summed across ranks.

Determinism: the data order and the FashionIQ caption variants of an epoch are drawn from
generators seeded by (seed, phase, epoch).
"""

from __future__ import annotations

import contextlib
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from tqdm import tqdm

from bench.config import TrainSpec
from bench.core import distributed
from bench.core.errors import CirbenchError
from bench.core.faults import reached
from bench.core.optim import build_optimizer, build_schedule
from bench.core.runtime import autocast, grad_scaler
from bench.evaluation.encode import Encoded, encode_cached, gather_rows
from bench.images.transforms import to_model_input
from bench.train.data import training_text
from bench.train.query_states import QueryStates, query_states
from bench.train.session import Session
from methods.base import CIRMethod, Phase, TrainBatch

#: Called after every optimiser step with (phase name, epoch, step in epoch); tests use it
#: to interrupt a run at a chosen point.
StepHook = Callable[[str, int, int], None]


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
    optimizer = build_optimizer(
        params,
        cfg.lr,
        cfg.weight_decay,
        betas=cfg.adam_betas,
        eps=cfg.adam_eps,
        decay=cfg.decay,
    )
    schedule = build_schedule(optimizer, max(1, total_steps), cfg.warmup_ratio, cfg.schedule)
    return optimizer, schedule


def epoch_seed(seed: int, phase_index: int, epoch: int) -> int:
    return (seed * 1_000_003 + phase_index * 10_007 + epoch) % 2**63


@dataclass
class PhaseTraining:
    """One phase's training machinery: what trains, with which settings, optimiser,
    schedule and loss scaler, against which objective (``None``: in-batch)."""

    phase: Phase
    index: int
    settings: TrainSpec
    params: list[torch.nn.Parameter]
    optimizer: torch.optim.AdamW
    schedule: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler
    objective: torch.nn.Module | None  #: the bank's, or an in-batch loss replacing the method's
    frozen: bool  #: no image-side group trains: image features come from the cache

    @classmethod
    def create(
        cls,
        session: Session,
        phase: Phase,
        index: int,
        settings: TrainSpec,
        objective: torch.nn.Module | None = None,
    ) -> PhaseTraining:
        """Freeze what the phase does not train and build its optimiser and schedule."""
        params = set_trainable(session.method, phase)
        if objective is not None:
            objective.to(session.device)
            params += [p for p in objective.parameters() if p.requires_grad]
        steps = len(batch_starts(len(session.epoch_triplets(0)), settings))
        optimizer, schedule = phase_optimizer(params, settings, steps * settings.epochs)
        params = [p for g in optimizer.param_groups for p in g["params"]]  # optimiser order
        frozen = phase.image_frozen(session.method)
        return cls(
            phase,
            index,
            settings,
            params,
            optimizer,
            schedule,
            grad_scaler(session.device),
            objective,
            frozen,
        )


@dataclass
class EpochData:
    """One epoch's prepared inputs: the order, every triplet's text and pool rows, the
    cached image features (frozen image side) and the negatives' generator."""

    order: np.ndarray
    texts: list[str]
    ref_rows: np.ndarray
    tgt_rows: np.ndarray
    encoded: Encoded | None
    negatives_rng: torch.Generator
    #: the bank stage's cached query states and each triplet's row (methods that declare one)
    states: QueryStates | None = None
    state_rows: np.ndarray | None = None


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
        targets_only=bank and session.method.query_state_array() is not None,
    )
    if session.features_in_ram:
        return encoded.in_ram()
    if bank and session.device.type == "cuda":
        encoded.target = encoded.target.to(session.device)
    return encoded


def batch_starts(n: int, settings: TrainSpec) -> range:
    """First rows of an epoch's batches (``drop_last``: without the last partial batch)."""
    end = n - n % settings.batch_size if settings.drop_last else n
    return range(0, end, settings.batch_size)


def _epoch_data(session: Session, run: PhaseTraining, epoch: int) -> EpochData:
    seed = epoch_seed(session.spec.seed, run.index, epoch)
    triplets = session.epoch_triplets(seed)
    order = torch.randperm(len(triplets), generator=torch.Generator().manual_seed(seed)).numpy()
    text_rng = random.Random(seed)
    texts = [training_text(t, session.data.format, text_rng) for t in triplets]
    bank = run.phase.objective == "bank"
    encoded = training_features(session, run.frozen, bank)
    if bank and encoded is None:
        raise CirbenchError(f"{run.phase.name}: the bank objective needs a frozen image side")
    ref_rows = session.rows([t.reference for t in triplets])
    states = state_rows = None
    if bank and session.method.query_state_array() is not None:
        negatives = session.spec.spn.negatives
        half = negatives is not None and negatives.half_bank
        states = query_states(session, "float16" if half else "float32")
        state_rows = states.rows_of(ref_rows, texts)
    return EpochData(
        order,
        texts,
        ref_rows,
        session.rows([t.target for t in triplets]),
        encoded,
        torch.Generator().manual_seed(seed + 1),
        states,
        state_rows,
    )


def train_epoch(
    session: Session, run: PhaseTraining, epoch: int, on_step: StepHook | None = None
) -> tuple[float, float]:
    """One epoch of a phase; returns (mean loss, samples per second)."""
    data = _epoch_data(session, run, epoch)
    # the phase's mode: "eval" keeps dropout off and BatchNorm statistics fixed while the
    # trainable parameters learn (the SPN reference's bank stages of TG-CIR and BLIP4CIR)
    session.method.train(run.settings.mode == "train")
    total, count, start = 0.0, 0, time.perf_counter()
    batch_size = run.settings.batch_size
    bar = tqdm(
        batch_starts(len(data.order), run.settings),
        desc=f"{run.phase.name} epoch {epoch + 1}/{run.settings.epochs}",
        disable=not session.progress,
        leave=False,
    )
    step_fn = _bank_step if run.phase.objective == "bank" else _batch_step
    for step, offset in enumerate(bar):
        global_idx = data.order[offset : offset + batch_size]
        run.optimizer.zero_grad(set_to_none=True)
        loss, counted = step_fn(session, run, data, global_idx)
        if loss is not None:
            _check_finite(loss, run.phase, epoch, step)
        distributed.all_reduce_gradients(run.params)
        _optimizer_step(run)
        reached("train.step")
        if loss is not None and counted:
            total += loss.item() * counted
            count += counted
        rate = count / (time.perf_counter() - start)
        if loss is not None:
            bar.set_postfix(loss=f"{loss.item():.4f}", samples_s=f"{rate:.0f}")
        if on_step is not None:
            on_step(run.phase.name, epoch, step)
    seconds = time.perf_counter() - start
    total, count = distributed.sum_across(total, count)  # the epoch over every rank
    return total / max(1, count), count / seconds


def _bank_step(
    session: Session, run: PhaseTraining, data: EpochData, global_idx: np.ndarray
) -> tuple[torch.Tensor | None, int]:
    """Loss and backward of one bank step: each query against the static bank; under
    torchrun each rank computes its own rows, weighted by their share of the batch."""
    method, device, encoded = session.method, session.device, data.encoded
    assert encoded is not None and run.objective is not None
    idx = distributed.shard(global_idx)  # under torchrun: this rank's rows
    if not len(idx):  # a rank gets no row when the last batch is smaller than the ranks
        return None, 0
    tokens = method.tokenize([data.texts[i] for i in idx]).to(device)
    with autocast(device):
        if data.states is not None and data.state_rows is not None:  # cached query states
            state = gather_rows(data.states.states, data.state_rows[idx], device)
            query = method.encode_query_from_state(state, tokens)
        else:
            ref = encoded.reference_rows(data.ref_rows[idx], device)
            query = method.encode_query(ref, tokens)
        positives = torch.from_numpy(data.tgt_rows[idx]).to(device)
        # the bank: every training image's target vector, L2-normalised (memory-mapped)
        loss = run.objective(query.float(), encoded.target, positives, data.negatives_rng)
    if torch.isfinite(loss):
        # one loss term per query: the share-weighted sum over ranks is the mean
        share = len(idx) / len(global_idx) if distributed.is_distributed() else 1.0
        run.scaler.scale(loss * share).backward()
    return loss, len(idx)


def _batch_step(
    session: Session, run: PhaseTraining, data: EpochData, global_idx: np.ndarray
) -> tuple[torch.Tensor, int]:
    """Loss and backward of one in-batch step (the method's own objective)."""
    texts = [data.texts[i] for i in global_idx]
    tokens = session.method.tokenize(texts).to(session.device)
    loss = _in_batch_step(
        session,
        data.encoded,
        global_idx,
        data.ref_rows,
        data.tgt_rows,
        tokens,
        texts,
        run.scaler,
        run.params,
        in_batch_loss(session.method, run.objective),
    )
    # every rank computed the same global loss: rank 0 counts it
    return loss, len(global_idx) if distributed.is_main() else 0


def in_batch_loss(
    method: CIRMethod, objective: torch.nn.Module | None
) -> Callable[[TrainBatch], torch.Tensor]:
    """The loss of an in-batch step: the method's own, or ``objective(query, target)``."""
    if objective is None:
        return method.training_loss

    def loss(batch: TrainBatch) -> torch.Tensor:
        query = method.encode_query(batch.reference, batch.tokens)
        return objective(query.float(), batch.target.float())

    return loss


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
    loss_fn: Callable[[TrainBatch], torch.Tensor],
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
        loss = loss_fn(batch)
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


def _optimizer_step(run: PhaseTraining) -> None:
    """Clip (when asked), step, update the loss scale, advance the schedule."""
    if run.settings.grad_clip is not None:
        run.scaler.unscale_(run.optimizer)
        torch.nn.utils.clip_grad_norm_(run.params, run.settings.grad_clip)
    run.scaler.step(run.optimizer)
    run.scaler.update()
    run.schedule.step()
