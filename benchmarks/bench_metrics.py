"""Benchmark of the CIR metric implementations on CIRR-val and FashionIQ-dress-val sizes.

Usage: ``python benchmarks/bench_metrics.py [--repeats N] [--json OUT]``

Compares, on random L2-normalised float32 features with planted targets (fixed seed):
the literal CLIP4Cir-style reference (``bench.metrics.reference``, from scores), the
vectorised score-based metrics (``bench.metrics``; the ``query @ gallery.T`` matmul timed
separately) and the faiss feature-based entry. Reports median wall times and speed-ups
against the naive implementation, and checks that all three give the same numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

try:
    from bench import metrics
    from bench.metrics import reference as metrics_reference
except ModuleNotFoundError:  # running from a checkout that is not installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from bench import metrics
    from bench.metrics import reference as metrics_reference

CASES: dict[str, tuple[str, int, int, int]] = {
    "cirr-val": ("cirr", 4181, 2297, 512),
    "fashioniq-dress-val": ("fashioniq", 2017, 3817, 512),
}
NOISE = 10.0  # query = normalise(NOISE * random + target + reference): mid-range recalls


def _normalise(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def make_case(
    queries: int, gallery: int, dim: int, *, group_size: int = 6, seed: int = 0
) -> dict[str, Any]:
    """Random features, names, references, targets and img_set groups (reference included)."""
    if gallery < max(group_size, 2):
        raise ValueError(f"gallery ({gallery}) must hold at least {max(group_size, 2)} images")
    rng = np.random.default_rng(seed)
    names = [f"img-{i:06d}" for i in range(gallery)]
    gf = _normalise(rng.standard_normal((gallery, dim)))
    # group = reference + target + (group_size - 2) others, distinct: a random permutation
    # prefix per query without a Python loop over the gallery
    keys = rng.random((queries, gallery))
    group_idx = np.argpartition(keys, group_size - 1, axis=1)[:, :group_size]
    refs, targets = group_idx[:, 0], group_idx[:, 1]
    noise = rng.standard_normal((queries, dim)) / np.sqrt(dim)  # about unit norm
    qf = _normalise(NOISE * noise + gf[targets] + gf[refs])
    shuffle = rng.permuted(np.tile(np.arange(group_size), (queries, 1)), axis=1)
    group_idx = np.take_along_axis(group_idx, shuffle, axis=1)  # img_set order is arbitrary
    name_arr = np.asarray(names, dtype=object)
    return {
        "query_features": np.ascontiguousarray(qf),
        "gallery_features": gf,
        "gallery_names": names,
        "reference_names": name_arr[refs].tolist(),
        "target_names": name_arr[targets].tolist(),
        "group_members": name_arr[group_idx].tolist(),
    }


def _median_time(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    times = []
    result = None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def _max_abs_diff(a: dict[str, float], b: dict[str, float]) -> float:
    return max(abs(a[k] - b[k]) for k in a)


def run(
    queries: int,
    gallery: int,
    dim: int,
    repeats: int,
    *,
    dataset: str = "cirr",
    seed: int = 0,
) -> dict[str, Any]:
    """Time naive / fast / faiss metrics on one random case; medians in seconds."""
    if dataset not in ("cirr", "fashioniq"):
        raise ValueError(f"dataset must be 'cirr' or 'fashioniq', got {dataset!r}")
    case = make_case(queries, gallery, dim, seed=seed)
    qf, gf = case["query_features"], case["gallery_features"]
    names, refs = case["gallery_names"], case["reference_names"]
    targets, groups = case["target_names"], case["group_members"]
    matmul_s, scores = _median_time(lambda: qf @ gf.T, repeats)
    if dataset == "cirr":
        naive_s, naive = _median_time(
            lambda: metrics_reference.cirr_metrics_naive(scores, names, refs, targets, groups),
            repeats,
        )
        fast_s, fast = _median_time(
            lambda: metrics.cirr_metrics(scores, names, refs, targets, groups), repeats
        )
        faiss_s, via_faiss = _median_time(
            lambda: metrics.cirr_metrics_from_features(qf, gf, names, refs, targets, groups),
            repeats,
        )
    else:
        naive_s, naive = _median_time(
            lambda: metrics_reference.fashioniq_metrics_naive(scores, names, targets), repeats
        )
        fast_s, fast = _median_time(
            lambda: metrics.fashioniq_metrics(scores, names, targets), repeats
        )
        faiss_s, via_faiss = _median_time(
            lambda: metrics.fashioniq_metrics_from_features(qf, gf, names, targets), repeats
        )
    return {
        "dataset": dataset,
        "queries": queries,
        "gallery": gallery,
        "dim": dim,
        "repeats": repeats,
        "naive_s": naive_s,
        "matmul_s": matmul_s,
        "fast_s": fast_s,
        "fast_total_s": matmul_s + fast_s,
        "faiss_s": faiss_s,
        "speedup_fast": naive_s / fast_s,
        "speedup_fast_total": naive_s / (matmul_s + fast_s),
        "speedup_faiss": naive_s / faiss_s,
        "max_abs_diff_fast_vs_naive": _max_abs_diff(fast, naive),
        "max_abs_diff_faiss_vs_fast": _max_abs_diff(via_faiss, fast),
        "metrics": fast,
    }


def _table(results: dict[str, dict[str, Any]]) -> str:
    lines = []
    for case, r in results.items():
        lines.append(
            f"{case}: {r['queries']} queries x {r['gallery']} gallery, dim {r['dim']}, "
            f"median of {r['repeats']}"
        )
        lines.append(f"  {'implementation':<32}{'seconds':>10}{'vs naive':>10}")
        rows = [
            ("naive (literal, from scores)", r["naive_s"], 1.0),
            ("matmul query @ gallery.T", r["matmul_s"], None),
            ("fast (from scores)", r["fast_s"], r["speedup_fast"]),
            ("fast incl. matmul", r["fast_total_s"], r["speedup_fast_total"]),
            ("faiss (from features)", r["faiss_s"], r["speedup_faiss"]),
        ]
        for label, seconds, ratio in rows:
            speed = "" if ratio is None else f"{ratio:.1f}x"
            lines.append(f"  {label:<32}{seconds:>10.4f}{speed:>10}")
        lines.append(
            f"  max |metric diff|: fast vs naive {r['max_abs_diff_fast_vs_naive']:.2g}, "
            f"faiss vs fast {r['max_abs_diff_faiss_vs_fast']:.2g}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per entry (median)")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    results = {
        name: run(q, g, d, args.repeats, dataset=ds, seed=args.seed)
        for name, (ds, q, g, d) in CASES.items()
    }
    import faiss

    env = {
        "python": sys.version.split()[0],
        "numpy": np.__version__,
        "faiss": faiss.__version__,
        "cpu_count": os.cpu_count(),
        "faiss_threads": faiss.omp_get_max_threads(),
    }
    print(_table(results))
    print(f"environment: {env}")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"environment": env, "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
