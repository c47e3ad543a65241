"""Negative scaling (N) of the SPN paper: a second stage against a static negative bank.

From the stage-1 checkpoint the image side is frozen, every training image's target vector
is encoded once into a static, L2-normalised bank (cached, memory-mapped, float16 with
``spn.negatives.half_bank``), and the query side trains with InfoNCE of each query against
the whole bank at temperature tau (or ``neg_num`` sampled negatives per query), constant
lr, best epoch on val. Unset settings take the method's paper defaults
(``CIRMethod.spn_defaults``). Full-bank logits are computed chunk-wise, so the bank is
never whole in RAM.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import torch

from bench.config import ExperimentSpec
from bench.evaluation.encode import gather_rows
from bench.spn.modifiers import Modifier, PlannedPhase, register_modifier
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


def resolve_negatives(spec: ExperimentSpec, method: CIRMethod) -> dict[str, Any]:
    """Negative-scaling settings: the spec's values over the method's paper defaults."""
    assert spec.spn.negatives is not None
    given = {k: v for k, v in spec.spn.negatives.model_dump().items() if v is not None}
    return {**method.spn_defaults, **given}


@register_modifier
class NegativeScaling(Modifier):
    """N: the bank stage (see the module docstring)."""

    key = "negatives"

    def enabled(self, spec: ExperimentSpec) -> bool:
        return spec.spn.negatives is not None

    def phase(self, spec: ExperimentSpec, method: CIRMethod) -> PlannedPhase:
        neg = resolve_negatives(spec, method)
        groups = tuple(g for g in method.parameter_groups() if method.group_side(g) != IMAGE_SIDE)
        settings = spec.train.model_copy(
            update={
                "epochs": neg["epochs"],
                "lr": neg["lr"],
                "batch_size": neg["batch_size"],
                "schedule": "constant",
                "warmup_ratio": 0.0,
            }
        )
        phase = Phase(
            SPN_NEGATIVES, groups, "query side against a static negative bank", objective="bank"
        )
        objective = BankObjective(neg["tau"], bool(neg["learnable_tau"]), neg.get("neg_num"))
        return PlannedPhase(phase, settings, objective)
