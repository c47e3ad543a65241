"""CLIP4CIR none / P / N / P+N (and zero-shot) on the synthetic benchmark, over seeds.

Trains every (dataset, seed, composition) point with the engine (each one an MLflow run;
finished points are reused, so an interrupted table resumes where it stopped) and prints
a Markdown table of mean +/- std over seeds.

    python experiments/spn_table.py [--size small|default] [--seeds 0 1 2] [--out FILE]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import yaml

from bench.config import parse_spec
from bench.engine import train

HERE = Path(__file__).resolve().parent
BASES = {"fashioniq": HERE / "clip4cir_fashioniq.yaml", "cirr": HERE / "clip4cir_cirr.yaml"}
COLUMNS = {
    "fashioniq": ("avg_R@10", "avg_R@50", "Rmean"),
    "cirr": ("R@1", "R@5", "R@10", "R@50", "Rsubset@1", "Rmean"),
}


def positives(name: str, pool: str) -> dict:
    """Oracle captions, pairs from the similarity-rank window [5, 50) of the pool."""
    return {
        "name": name,
        "captioner": "oracle",
        "pool": pool,
        "rank_lo": 5,
        "rank_hi": 50,
        "k": 1,
        "templates": ["instead", "unlike"],
    }


NEGATIVES: dict = {}  # CLIP4CIR paper defaults: batch 256, 3 epochs, lr 2e-5, tau 0.02
COMPOSITIONS = {
    "none": {},
    "P": {"positives": positives("oracle-w5-50", "train")},
    # control for P: the same continuation (epochs, lr) on human triplets only, so that
    # the gain of P is not mistaken for the gain of training longer
    "P control (no generated)": {
        "positives": positives("oracle-w5-50", "train"),
        "positives_train": {"mix_ratio": 1e-9},
    },
    "N": {"negatives": NEGATIVES},
    "P+N": {"positives": positives("oracle-w5-50", "train"), "negatives": NEGATIVES},
    "ZS (in-domain) +N": {
        "positives": positives("oracle-w5-50", "train"),
        "zero_shot": True,
        "negatives": NEGATIVES,
    },
    "ZS (out-of-domain) +N": {
        "positives": positives("oracle-pool-w5-50", "pool"),
        "zero_shot": True,
        "negatives": NEGATIVES,
    },
}


def spec_for(dataset: str, size: str, seed: int, spn: dict):
    data = yaml.safe_load(BASES[dataset].read_text())
    data["experiment"] = "cirbench-spn-table"
    data["seed"] = seed
    data["dataset"]["synthetic_size"] = size
    data["spn"] = spn
    return parse_spec(data, source=str(BASES[dataset]))


def mean_std(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="small", choices=("tiny", "small", "default"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--datasets", nargs="+", default=list(BASES))
    parser.add_argument("--compositions", nargs="+", default=list(COMPOSITIONS))
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    lines: list[str] = []
    start = time.perf_counter()
    for dataset in args.datasets:
        cols = COLUMNS[dataset]
        lines += [
            f"\n**{dataset} (synthetic {args.size}, CLIP4CIR, val, "
            f"mean ± std over seeds {args.seeds})**\n",
            "| composition | " + " | ".join(cols) + " | minutes (mean) |",
            "|---" * (len(cols) + 2) + "|",
        ]
        for name in args.compositions:
            results = [
                train(spec_for(dataset, args.size, seed, COMPOSITIONS[name]), resume=True)
                for seed in args.seeds
            ]
            cells = [mean_std([r.metrics[c] for r in results]) for c in cols]
            minutes = statistics.mean(r.seconds for r in results) / 60
            lines.append(f"| {name} | " + " | ".join(cells) + f" | {minutes:.1f} |")
            print(lines[-1], flush=True)
    lines.append(f"\ntotal wall time {(time.perf_counter() - start) / 60:.1f} min")
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
