"""Benchmark of the input pipeline and the size-bound stages on real-size shapes.

Usage: ``python benchmarks/bench_pipeline.py [--images N] [--workers N] [--json OUT]
[--keep DIR]``

1. **Preprocessing** (TargetPad at 288 px, CLIP4CIR's RN50x4 input) of a FashionIQ
   rehearsal folder (``cirbench data rehearse``: real annotation files, placeholder JPEGs
   at real size), images/s with 1 worker and with N (default: the machine's cores), the
   two arrays checked byte-identical; ``--images`` limits the folder (the full FashionIQ
   names 74,381 images).
2. **Peak memory of filling the train pixel cache** at 288 px, in a fresh process:
   VmHWM above the interpreter's baseline (after imports) against the array's size, for
   two image counts (the bound does not grow with N).
3. **Evaluation**: FashionIQ-size (shirt val, 2038 x 6346) and CIRR-size (4181 x 2297)
   galleries of random 640-d features, the literal full-sort official-style metrics
   (``bench.metrics.reference``) against the faiss top-K path, at 1x and 4x the gallery.
4. **Bank stage step**: one forward + backward of the bank objective (batch 256, 640-d
   queries, the whole bank, float16 rows as ``half_bank``) against banks of 1k to 100k
   rows, and SPRC's 32-token sets (256-d) at 1k and 10k rows.

Growth with N is given as the exponent ``log(t2 / t1) / log(n2 / n1)`` (1: linear).
Timings are medians of ``--repeats`` runs; on a shared machine they are noisy.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from bench_metrics import make_case  # noqa: E402

from bench.core.arrays import ArrayCache  # noqa: E402
from bench.core.runtime import default_workers  # noqa: E402
from bench.images.pixels import load_pixels  # noqa: E402
from bench.images.rehearse import rehearse  # noqa: E402
from bench.images.transforms import TargetPadTransform  # noqa: E402

SIZE = 288


def _median(fn: Callable[[], Any], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def growth(n1: float, t1: float, n2: float, t2: float) -> float:
    return math.log(t2 / t1) / math.log(n2 / n1)


def _images(folder: Path) -> tuple[list[str], dict[str, Path]]:
    files = sorted((folder / "images").iterdir())
    return [p.stem for p in files], {p.stem: p for p in files}


def preprocessing(folder: Path, workers: int, work: Path) -> dict[str, Any]:
    names, paths = _images(folder)
    transform = TargetPadTransform(SIZE)
    out: dict[str, Any] = {"images": len(names), "size": SIZE}
    arrays = {}
    for n in sorted({1, workers}):
        cache = ArrayCache(work / f"cache-w{n}")
        start = time.perf_counter()
        arrays[n] = load_pixels(
            cache, names, paths, transform, workers=n, progress=False, stream=False
        )
        out[f"images_per_s_{n}_workers"] = len(names) / (time.perf_counter() - start)
    out["identical"] = all(
        np.array_equal(arrays[1], a) for a in arrays.values()
    )  # byte-identical rows
    out["speedup"] = out[f"images_per_s_{workers}_workers"] / out["images_per_s_1_workers"]
    return out


HWM = """
import sys
from pathlib import Path
from bench.core.arrays import ArrayCache
from bench.images.pixels import load_pixels
from bench.images.transforms import TargetPadTransform
def hwm():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
folder, cache = Path(sys.argv[1]), Path(sys.argv[2])
count, workers = int(sys.argv[3]), int(sys.argv[4])
files = sorted((folder / "images").iterdir())[:count]
names, paths = [p.stem for p in files], {p.stem: p for p in files}
before = hwm()
array = load_pixels(ArrayCache(cache), names, paths, TargetPadTransform(288), workers=workers,
                    progress=False, stream=False)
print(before, hwm(), array.nbytes)
"""


def fill_memory(folder: Path, counts: list[int], workers: int, work: Path) -> list[dict]:
    rows = []
    for count in counts:
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        done = subprocess.run(
            [sys.executable, "-c", HWM, str(folder), str(work / f"hwm-{count}"), str(count),
             str(workers)],
            capture_output=True, text=True, env=env, check=True,
        )  # fmt: skip
        before, peak, nbytes = map(int, done.stdout.split())
        rows.append(
            {
                "images": count,
                "array_bytes": nbytes,
                "baseline_bytes": before,
                "peak_above_baseline_bytes": peak - before,
                "ratio_to_array": (peak - before) / nbytes,
            }
        )
    return rows


def _scored(metric: Callable[..., Any], qf: np.ndarray, gf: np.ndarray, args: tuple) -> Any:
    """The official-style metrics from the full score matrix (the matmul included)."""
    return metric(qf @ gf.T, *args)


def _bank_step(objective: Any, query: Any, bank: Any, positives: Any, generator: Any) -> None:
    import torch

    q = torch.nn.functional.normalize(query, dim=-1)
    objective(q, bank, positives, generator).backward()


def evaluation(repeats: int) -> list[dict]:
    from bench import metrics
    from bench.metrics import reference

    rows = []
    for name, dataset, queries, gallery in (
        ("fashioniq-shirt-val", "fashioniq", 2038, 6346),
        ("cirr-val", "cirr", 4181, 2297),
    ):
        for factor in (1, 4):
            case = make_case(queries, gallery * factor, 640)
            qf, gf = case["query_features"], case["gallery_features"]
            names, targets = case["gallery_names"], case["target_names"]
            refs, groups = case["reference_names"], case["group_members"]
            if dataset == "cirr":
                args = (names, refs, targets, groups)
                full = partial(_scored, reference.cirr_metrics_naive, qf, gf, args)
                fast = partial(metrics.cirr_metrics_from_features, qf, gf, *args)
            else:
                args = (names, targets)
                full = partial(_scored, reference.fashioniq_metrics_naive, qf, gf, args)
                fast = partial(metrics.fashioniq_metrics_from_features, qf, gf, *args)
            full_s, faiss_s = _median(full, repeats), _median(fast, repeats)
            rows.append(
                {
                    "case": name,
                    "queries": queries,
                    "gallery": gallery * factor,
                    "full_sort_s": full_s,
                    "faiss_s": faiss_s,
                    "speedup": full_s / faiss_s,
                }
            )
    return rows


def bank_steps(repeats: int) -> list[dict]:
    import torch

    from bench.spn.negatives import BankObjective

    torch.manual_seed(0)
    rows = []
    objective = BankObjective(0.02, True, None)
    cases = [(n, ()) for n in (1_000, 10_000, 100_000)] + [(n, (32,)) for n in (1_000, 10_000)]
    for n, tokens in cases:
        dim = 256 if tokens else 640
        bank = torch.nn.functional.normalize(torch.randn(n, *tokens, dim), dim=-1).half()
        query = torch.randn(256, dim, requires_grad=True)
        positives = torch.randint(0, n, (256,))
        generator = torch.Generator().manual_seed(0)
        step = partial(_bank_step, objective, query, bank, positives, generator)
        step()  # warm-up
        rows.append(
            {
                "bank_rows": n,
                "row_shape": [*tokens, dim],
                "step_s": _median(step, repeats),
            }
        )
    return rows


def _print(report: dict[str, Any]) -> None:
    p = report["preprocessing"]
    w = report["workers"]
    print(
        f"preprocessing {p['images']} FashionIQ rehearsal images at {SIZE} px: "
        f"{p['images_per_s_1_workers']:.1f} images/s (1 worker), "
        f"{p[f'images_per_s_{w}_workers']:.1f} images/s ({w} workers), "
        f"x{p['speedup']:.2f}, identical bytes: {p['identical']}"
    )
    for r in report["fill_memory"]:
        print(
            f"fill of {r['images']} images ({r['array_bytes'] / 1e6:.0f} MB array): peak RSS "
            f"+{r['peak_above_baseline_bytes'] / 1e6:.0f} MB above a "
            f"{r['baseline_bytes'] / 1e6:.0f} MB baseline ({r['ratio_to_array']:.3f} x the array)"
        )
    print("| gallery | queries x gallery | full sort | faiss | ratio |")
    print("|---|---|---|---|---|")
    for r in report["evaluation"]:
        print(
            f"| {r['case']} | {r['queries']} x {r['gallery']} | {r['full_sort_s']:.3f} s | "
            f"{r['faiss_s']:.3f} s | {r['speedup']:.1f}x |"
        )
    print("| bank rows | row | step (fwd + bwd, batch 256) |")
    print("|---|---|---|")
    for r in report["bank"]:
        print(f"| {r['bank_rows']} | {r['row_shape']} | {r['step_s'] * 1000:.1f} ms |")
    for key, value in report["growth"].items():
        print(f"growth exponent {key}: {value:.2f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000, help="rehearsal images (0: all)")
    parser.add_argument("--workers", type=int, default=default_workers())
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--keep", type=Path, help="rehearsal folder to reuse (else a temp one)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="cirbench-bench-pipeline-") as tmp:
        work = Path(tmp)
        folder = args.keep or work / "fashionIQ_dataset"
        rehearse("fashioniq", folder, limit=args.images or None, progress=False)
        report: dict[str, Any] = {"workers": args.workers}
        report["preprocessing"] = preprocessing(folder, args.workers, work)
        count = report["preprocessing"]["images"]
        report["fill_memory"] = fill_memory(folder, [count // 4, count], args.workers, work)
    print(json.dumps({k: report[k] for k in ("preprocessing", "fill_memory")}), flush=True)
    report["evaluation"] = evaluation(args.repeats)
    print(json.dumps(report["evaluation"]), flush=True)
    report["bank"] = bank_steps(args.repeats)
    ev, bank, mem = report["evaluation"], report["bank"], report["fill_memory"]
    report["growth"] = {
        "fill peak RSS vs images": growth(
            mem[0]["images"], mem[0]["peak_above_baseline_bytes"],
            mem[1]["images"], mem[1]["peak_above_baseline_bytes"],
        ),
        "full sort vs gallery (FashionIQ)": growth(
            ev[0]["gallery"], ev[0]["full_sort_s"], ev[1]["gallery"], ev[1]["full_sort_s"]
        ),
        "faiss vs gallery (FashionIQ)": growth(
            ev[0]["gallery"], ev[0]["faiss_s"], ev[1]["gallery"], ev[1]["faiss_s"]
        ),
        "full sort vs gallery (CIRR)": growth(
            ev[2]["gallery"], ev[2]["full_sort_s"], ev[3]["gallery"], ev[3]["full_sort_s"]
        ),
        "faiss vs gallery (CIRR)": growth(
            ev[2]["gallery"], ev[2]["faiss_s"], ev[3]["gallery"], ev[3]["faiss_s"]
        ),
        "bank step vs rows (1k -> 100k)": growth(
            bank[0]["bank_rows"], bank[0]["step_s"], bank[2]["bank_rows"], bank[2]["step_s"]
        ),
    }  # fmt: skip
    _print(report)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
