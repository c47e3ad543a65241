"""How sure a measured difference is: runs' per-query values (:mod:`~bench.stats.queries`)
and the paired bootstrap over queries (:mod:`~bench.stats.bootstrap`)."""

from bench.stats.bootstrap import (
    DEFAULT_RESAMPLES,
    LEVEL,
    PairedComparison,
    paired_bootstrap,
)
from bench.stats.queries import PER_QUERY_FILE, PerQueryError, RunQueryValues, queries_digest

__all__ = [
    "DEFAULT_RESAMPLES",
    "LEVEL",
    "PER_QUERY_FILE",
    "PairedComparison",
    "PerQueryError",
    "RunQueryValues",
    "paired_bootstrap",
    "queries_digest",
]
