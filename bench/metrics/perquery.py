"""Per-query metric values of one split: what a metric averages, query by query.

Every metric of :mod:`bench.metrics` is ``100 x`` the mean of a per-query value
(:func:`bench.metrics.kernels.percent`): a hit (bool; R@K, Rsubset@K) or a score in
[0, 1] (CIRCO's AP@K). Kept per query, they let two runs on the same queries be compared
query by query (the paired bootstrap of :mod:`bench.stats`) and reproduce the split's
metrics exactly.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from bench.core.errors import MetricInputError
from bench.metrics.kernels import percents


@dataclass(frozen=True)
class QueryValues:
    """One split's per-query values: ``values[metric][i]`` belongs to ``query_ids[i]``."""

    query_ids: tuple[str, ...]
    values: Mapping[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.query_ids)
        if len(set(self.query_ids)) != n:
            raise MetricInputError(
                f"query ids repeat ({n} ids, {len(set(self.query_ids))} distinct)"
            )
        for name, v in self.values.items():
            if v.ndim != 1 or v.shape[0] != n:
                raise MetricInputError(
                    f"per-query values of {name!r} have shape {v.shape}, expected ({n},)"
                )

    @classmethod
    def of(cls, query_ids: Sequence[object], values: Mapping[str, np.ndarray]) -> QueryValues:
        """From any ids (stored as strings) and arrays."""
        return cls(tuple(str(q) for q in query_ids), {k: np.asarray(v) for k, v in values.items()})

    def __len__(self) -> int:
        return len(self.query_ids)

    def metrics(self) -> dict[str, float]:
        """The split's metrics (percent), exactly as the metric functions compute them."""
        return percents(self.values)
