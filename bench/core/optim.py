"""The optimiser and learning-rate schedule every training loop uses."""

from __future__ import annotations

import math
from typing import Literal

import torch

Schedule = Literal["cosine", "constant"]


def build_optimizer(
    params: list[torch.nn.Parameter],
    lr: float,
    weight_decay: float,
    *,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    decay: str = "matrices",
) -> torch.optim.AdamW:
    """AdamW; weight decay on matrices only (``decay="matrices"``: not on biases, norms,
    scalars) or on every parameter (``"all"``, as the SPN reference's single group)."""
    if decay == "all":
        groups = [{"params": params, "weight_decay": weight_decay}]
    else:
        groups = [
            {"params": [p for p in params if p.ndim >= 2], "weight_decay": weight_decay},
            {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
        ]
    return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps)


def build_schedule(
    optimizer: torch.optim.Optimizer,
    total_steps: int,
    warmup_ratio: float,
    schedule: Schedule = "cosine",
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up over ``warmup_ratio`` of the steps, then cosine decay to 0 (or constant)."""
    warmup = int(warmup_ratio * total_steps)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if schedule == "constant":
            return 1.0
        progress = (step - warmup) / max(1, total_steps - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
