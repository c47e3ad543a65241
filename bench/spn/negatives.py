"""Negative scaling (N) of the SPN paper: a second stage against a static negative bank.

From the stage-1 checkpoint the image side is frozen, every training image's target vector
is encoded once into a static, L2-normalised bank (cached, memory-mapped, float16 with
``spn.negatives.half_bank``), and the query side trains with InfoNCE of each query against
the whole bank at temperature tau (or ``neg_num`` sampled negatives per query), constant
lr, best epoch on val. Its settings are the spec's ``spn.negatives`` (completed from the
method's recipe, ``experiments/methods/<name>.yaml``, when the spec is read). Full-bank
logits are computed chunk-wise, so the bank is never whole in RAM.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import torch

from bench.config import ExperimentSpec
from bench.config.train import TrainSpec
from bench.core.errors import CirbenchError
from bench.evaluation.encode import gather_rows
from bench.spn.modifiers import (
    Modifier,
    PlannedPhase,
    method_phase,
    register_modifier,
    stage_groups,
)
from methods.base import IMAGE_SIDE, CIRMethod, Phase

#: The name of the bank phase.
SPN_NEGATIVES = "spn_negatives"


#: Rows of a bank read (and upcast) at a time for the full-bank logits.
BANK_CHUNK_ROWS = 16384


def _bank_chunks(
    bank: torch.Tensor, chunk_rows: int, device: torch.device, dtype: torch.dtype
) -> Iterator[tuple[int, torch.Tensor]]:
    """(first row, rows upcast to ``dtype`` on ``device``) of consecutive chunks of a bank."""
    for start in range(0, bank.shape[0], chunk_rows):
        yield start, gather_rows(bank, slice(start, start + chunk_rows), device, dtype)


class _ChunkedBankLogits(torch.autograd.Function):
    """``query @ bank.T`` (a bank of token sets ``(N, T, D)``: the best token's score), one
    chunk of bank rows at a time, each upcast to the query's dtype. The bank is static (no
    gradient); backward reads the chunks again instead of keeping them (for token sets it
    keeps only the index of each best token), so neither pass holds more than one chunk of
    a memory-mapped or float16 bank in memory (as float32)."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, query: torch.Tensor, bank: torch.Tensor, chunk_rows: int
    ) -> torch.Tensor:
        ctx.bank, ctx.chunk_rows = bank, chunk_rows
        parts, best = [], []
        for _, chunk in _bank_chunks(bank, chunk_rows, query.device, query.dtype):
            if chunk.ndim == 2:
                parts.append(query @ chunk.t())
            else:
                values, index = torch.einsum("bd,ntd->bnt", query, chunk).max(dim=-1)
                parts.append(values)
                best.append(index)
        ctx.best = best
        return torch.cat(parts, dim=1)

    @staticmethod
    def backward(  # type: ignore[override]
        ctx: Any, grad: torch.Tensor
    ) -> tuple[torch.Tensor, None, None]:
        dtype = torch.float32 if grad.dtype in (torch.float16, torch.bfloat16) else grad.dtype
        grad_query = torch.zeros(grad.shape[0], ctx.bank.shape[-1], device=grad.device, dtype=dtype)
        chunks = _bank_chunks(ctx.bank, ctx.chunk_rows, grad.device, dtype)
        for i, (start, chunk) in enumerate(chunks):
            g = grad[:, start : start + chunk.shape[0]].to(dtype)
            if chunk.ndim == 2:
                grad_query += g @ chunk
            else:  # d(max_t q.k_t)/dq = the best token k_t*
                rows = torch.arange(chunk.shape[0], device=grad.device)
                chosen = chunk[rows[None, :], ctx.best[i]]  # (B, n, D)
                grad_query += torch.einsum("bn,bnd->bd", g, chosen)
        return grad_query, None, None


def bank_logits(
    query: torch.Tensor, bank: torch.Tensor, chunk_rows: int = BANK_CHUNK_ROWS
) -> torch.Tensor:
    """``(B, N)`` scores of queries against a bank of target vectors ``(N, D)`` or token sets
    ``(N, T, D)`` (best token), in any dtype and place (memory-mapped, float16, another
    device), computed ``chunk_rows`` bank rows at a time (divided by ``T`` for token sets)."""
    if bank.ndim == 3:
        chunk_rows = max(1, chunk_rows // bank.shape[1])
    return _ChunkedBankLogits.apply(query, bank, chunk_rows)


class BankObjective(torch.nn.Module):
    """InfoNCE of each query against the static bank of every training image's target.

    logits = score(q, bank) / tau (a dot product, or the best token of a token set), label
    = the row of the true target; with ``neg_num`` the logits cover the positive and
    ``neg_num`` negatives drawn uniformly from the rest of the bank (the bank-size knob).
    tau is fixed or learnable, learned as tau itself (the reference's ``tau``
    parametrisation) or as log(1 / tau) (``log_inverse``). The bank may be memory-mapped
    from the feature cache and stored as float16: the full-bank logits are computed
    ``chunk_rows`` rows at a time and sampled negatives are gathered row by row, each
    upcast to the query's dtype, so the bank is never whole in RAM.
    """

    def __init__(
        self,
        tau: float,
        learnable: bool,
        neg_num: int | None,
        chunk_rows: int = BANK_CHUNK_ROWS,
        parametrisation: str = "tau",
    ) -> None:
        super().__init__()
        if parametrisation not in ("tau", "log_inverse"):
            raise ValueError(f"tau parametrisation {parametrisation!r}: 'tau' or 'log_inverse'")
        self.parametrisation = parametrisation
        value = tau if parametrisation == "tau" else math.log(1.0 / tau)
        self.temperature = torch.nn.Parameter(torch.tensor(float(value)), requires_grad=learnable)
        self.neg_num = neg_num
        self.chunk_rows = chunk_rows

    def scale(self) -> torch.Tensor:
        """1 / tau, as a tensor that carries tau's gradient."""
        if self.parametrisation == "tau":
            return 1.0 / self.temperature
        return self.temperature.exp()

    @property
    def tau(self) -> float:
        return float(1.0 / self.scale().detach())

    def forward(
        self,
        query: torch.Tensor,
        bank: torch.Tensor,
        positives: torch.Tensor,
        generator: torch.Generator,
    ) -> torch.Tensor:
        scale = self.scale()
        if self.neg_num is None or self.neg_num >= bank.shape[0] - 1:
            logits = bank_logits(query, bank, self.chunk_rows)
            return torch.nn.functional.cross_entropy(logits * scale, positives)
        # negatives: uniform over the bank without the positive (shift past it)
        draws = torch.randint(
            0, bank.shape[0] - 1, (query.shape[0], self.neg_num), generator=generator
        ).to(positives.device)
        negatives = draws + (draws >= positives[:, None]).long()
        rows = torch.cat([positives[:, None], negatives], dim=1)
        candidates = gather_rows(bank, rows, query.device, query.dtype)  # (B, 1 + k, [T,] D)
        if candidates.ndim == 3:
            logits = torch.einsum("bd,bkd->bk", query, candidates)
        else:
            logits = torch.einsum("bd,bktd->bkt", query, candidates).amax(dim=-1)
        labels = torch.zeros(query.shape[0], dtype=torch.long, device=query.device)
        return torch.nn.functional.cross_entropy(logits * scale, labels)


#: Settings the bank stage needs; the method's recipe (or the spec) must give them.
REQUIRED = ("epochs", "batch_size", "lr", "tau", "learnable_tau")


def resolve_negatives(spec: ExperimentSpec) -> dict[str, Any]:
    """The bank stage's settings; a setting neither the spec nor the method's recipe gives
    is an error naming it."""
    assert spec.spn.negatives is not None
    given = {k: v for k, v in spec.spn.negatives.model_dump().items() if v is not None}
    missing = [k for k in REQUIRED if k not in given]
    if missing:
        raise CirbenchError(
            f"spec {spec.name}: spn.negatives.{missing[0]} is not set (nor "
            f"{', '.join(missing[1:]) or 'anything else'}) and method {spec.method.name} has "
            "no recipe giving it (experiments/methods/<name>.yaml, spn.negatives)"
        )
    return given


def negatives_settings(spec: ExperimentSpec) -> TrainSpec:
    """The bank stage's loop settings: stage 1's, with the recipe's (or the spec's)
    ``spn.negatives`` values over them, at a constant learning rate (no warm-up)."""
    assert spec.spn.negatives is not None
    neg = resolve_negatives(spec)
    return spec.train.with_overrides(
        spec.spn.negatives,
        epochs=neg["epochs"],
        lr=neg["lr"],
        batch_size=neg["batch_size"],
        schedule="constant",
        warmup_ratio=0.0,
    )


@register_modifier
class NegativeScaling(Modifier):
    """N: the bank stage (see the module docstring)."""

    key = "negatives"

    def enabled(self, spec: ExperimentSpec) -> bool:
        return spec.spn.negatives is not None

    def phase(self, spec: ExperimentSpec, method: CIRMethod) -> PlannedPhase:
        negatives = spec.spn.negatives
        assert negatives is not None
        neg = resolve_negatives(spec)
        query_side = tuple(
            g for g in method.parameter_groups() if method.group_side(g) != IMAGE_SIDE
        )
        trains = stage_groups(method, negatives.trains, query_side, "spn.negatives.trains")
        image_side = [g for g in trains if method.group_side(g) == IMAGE_SIDE]
        if image_side:
            raise CirbenchError(
                f"spn.negatives.trains: the bank stage freezes the image side; {image_side} "
                f"are image-side groups of {method.name}"
            )
        settings = negatives_settings(spec)
        phase = Phase(
            SPN_NEGATIVES, trains, "query side against a static negative bank", objective="bank"
        )
        objective = BankObjective(
            neg["tau"],
            bool(neg["learnable_tau"]),
            neg.get("neg_num"),
            parametrisation=negatives.tau_parametrisation,
        )
        query = method_phase(method, negatives.phase, "spn.negatives.phase")
        return PlannedPhase(phase, settings, objective, query)
