"""Benchmark of positive-scaling pair matching on a large pool.

Usage: ``python benchmarks/bench_matching.py [--n 50000] [--dims 128 512] [--json OUT]``

For each embedding size, random L2-normalised float32 embeddings of ``n`` images (fixed
seed) are matched with ``bench.spn.positives.matching.match_pairs`` in ``window`` mode (the
paper's rank window, default ``[10000, 20000)``, ``k = 1`` target per reference, every image
a reference). Each case runs in a fresh subprocess so its peak memory is its own; reported:
wall seconds, peak resident memory of the process, its growth during matching, and the
peak of numpy allocations (tracemalloc). An N x N float32 score matrix, which the matcher
never builds, is listed for scale. The ranks of the targets of 200 random references are
checked against their full score rows.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np

try:
    from bench.spn.positives.matching import match_pairs
except ModuleNotFoundError:  # running from a checkout that is not installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from bench.spn.positives.matching import match_pairs


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


def run_case(n: int, dim: int, lo: int, hi: int, k: int, block: int) -> dict[str, Any]:
    """Time one matching run in this process and check a sample of target ranks."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, dim), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    rss_before = _rss_mb()
    tracemalloc.start()
    start = time.perf_counter()
    pairs = match_pairs(
        n, mode="window", k=k, seed=0, embeddings=x, rank_lo=lo, rank_hi=hi, block=block
    )
    seconds = time.perf_counter() - start
    _, traced_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    rss_peak = _rss_mb()
    sample = rng.choice(n, size=200, replace=False)
    ranks = []
    for i in sample:
        row = x @ x[i]
        row[i] = np.inf
        target = pairs[i, 1]
        ranks.append(int((row > row[target]).sum()))  # images scoring above the target
    ok = all(lo <= r < hi for r in ranks)
    return {
        "n": n,
        "dim": dim,
        "window": [lo, hi],
        "k": k,
        "block": block,
        "pairs": len(pairs),
        "seconds": round(seconds, 2),
        "peak_rss_mb": round(rss_peak, 1),
        "rss_growth_mb": round(rss_peak - rss_before, 1),
        "numpy_peak_mb": round(traced_peak / 2**20, 1),
        "embeddings_mb": round(x.nbytes / 2**20, 1),
        "full_matrix_mb": round(n * n * 4 / 2**20, 1),
        "sampled_ranks_in_window": ok,
        "sampled_rank_mean": round(float(np.mean(ranks)), 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=50_000)
    parser.add_argument("--dims", type=int, nargs="+", default=[128, 512])
    parser.add_argument("--lo", type=int, default=10_000)
    parser.add_argument("--hi", type=int, default=20_000)
    parser.add_argument("--k", type=int, default=1)
    parser.add_argument("--block", type=int, default=256)
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--case", type=int, help=argparse.SUPPRESS)  # one case, in-process
    args = parser.parse_args(argv)
    if args.case is not None:
        print(json.dumps(run_case(args.n, args.case, args.lo, args.hi, args.k, args.block)))
        return 0
    results = []
    for dim in args.dims:
        command = [sys.executable, __file__, "--case", str(dim), "--n", str(args.n)]
        command += ["--lo", str(args.lo), "--hi", str(args.hi), "--k", str(args.k)]
        command += ["--block", str(args.block)]
        done = subprocess.run(command, check=True, capture_output=True, text=True)
        results.append(json.loads(done.stdout.strip().splitlines()[-1]))
        r = results[-1]
        print(
            f"n={r['n']} dim={r['dim']} window={r['window']} k={r['k']}: {r['seconds']:.1f} s, "
            f"peak RSS {r['peak_rss_mb']:.0f} MB (+{r['rss_growth_mb']:.0f} MB while matching, "
            f"numpy peak {r['numpy_peak_mb']:.0f} MB; embeddings {r['embeddings_mb']:.0f} MB, "
            f"an N x N matrix would be {r['full_matrix_mb']:.0f} MB), "
            f"sampled ranks in window: {r['sampled_ranks_in_window']}"
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0 if all(r["sampled_ranks_in_window"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
