"""Where the time of a suite run went: each suite's wall time and the seconds its runs
recorded in pre-training, setup, stage 1, P and N, read from the MLflow store of the runs
(nothing is trained here).

    python benchmarks/bench_suites.py [--profile quick|default|full] [--json]

Sources: a suite's wall time is its parent run's ``seconds`` (its last sweep); each
training run's ``train.seconds`` (its phases) and ``train.setup_seconds`` (building the
session: data, weights, generated triplets, bank features) are attributed to the suite that
created it (tag ``cirbench.suite``; suites that reuse a run spend ~0 s on it) and to a stage
by its composition: ``none`` stage 1, a composition with N (``N``, ``P+N``, ``ZS+N``) the N
stage, the other P compositions (``P``, ``P-control``, ``ZS``, ``ZS-ood``) P. Pre-training
is the backbones' ``pretrain.seconds`` (experiment ``cirbench-backbones``); it ran inside
whichever suite first needed the backbone (inside that suite's setup seconds too).
Resumed runs record only their last invocation.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from typing import Any

from bench.runner.ablate import ABLATE_SUITES, DIAGNOSTIC_SUITES
from bench.tracking.store import find_runs

STAGES = ("setup", "stage 1", "P", "N")


def stage_of(composition: str) -> str:
    """The stage a run's seconds count towards (see the module docstring)."""
    if composition == "none":
        return "stage 1"
    return "N" if composition.endswith("N") else "P"


def collect(profile: str) -> dict[str, Any]:
    """Per suite: wall seconds and seconds per stage; plus the pre-training runs."""
    experiment = f"cirbench-ablate-{profile}"
    suites: dict[str, dict[str, float]] = defaultdict(lambda: dict.fromkeys(STAGES, 0.0))
    walls: dict[str, float] = {}
    for run in find_runs(experiment):
        tags, metrics = run.data.tags, run.data.metrics
        suite = tags.get("cirbench.suite")
        if suite is None:
            continue
        if tags.get("cirbench.kind") == "train":
            stages = suites[suite]
            stages[stage_of(tags.get("cirbench.composition", "none"))] += metrics.get(
                "train.seconds", 0.0
            )
            stages["setup"] += metrics.get("train.setup_seconds", 0.0)
        elif run.info.run_name == f"suite:{suite}" and "seconds" in metrics:
            walls[suite] = metrics["seconds"]
    pretraining = [
        {
            "arch": r.data.params.get("arch"),
            "images": r.data.params.get("images"),
            "seconds": r.data.metrics.get("pretrain.seconds", 0.0),
        }
        for r in find_runs("cirbench-backbones")
        if "pretrain.seconds" in r.data.metrics
    ]
    order = [s for s in (*ABLATE_SUITES, *DIAGNOSTIC_SUITES) if s in walls or s in suites]
    order += sorted(set(walls) | set(suites) - set(order))
    return {
        "profile": profile,
        "suites": {
            s: {"wall": walls.get(s), **suites.get(s, dict.fromkeys(STAGES, 0.0))} for s in order
        },
        "pretraining": pretraining,
    }


def markdown(record: dict[str, Any]) -> str:
    lines = [
        f"Profile {record['profile']}: seconds recorded by the runs (share of the suite's "
        "recorded seconds)",
        "",
        "| suite | wall s | " + " | ".join(STAGES) + " |",
        "|---|---|" + "---|" * len(STAGES),
    ]
    for suite, row in record["suites"].items():
        total = sum(row[s] for s in STAGES) or 1.0
        wall = "–" if row["wall"] is None else f"{row['wall']:.0f}"
        cells = [f"{row[s]:.0f} ({100 * row[s] / total:.0f}%)" for s in STAGES]
        lines.append(f"| {suite} | {wall} | " + " | ".join(cells) + " |")
    walls = [r["wall"] for r in record["suites"].values() if r["wall"] is not None]
    lines += ["", f"Sum of the suites' wall times: {sum(walls):.0f} s", ""]
    pre = record["pretraining"]
    if pre:
        lines.append("Pre-training (one-off, cached; inside the first suite's setup):")
        lines += [f"- {p['arch']} on {p['images']} pairs: {p['seconds']:.0f} s" for p in pre]
    else:
        lines.append("Pre-training: none recorded (cached from before, or random weights)")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="default")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    record = collect(args.profile)
    print(json.dumps(record, indent=2) if args.json else markdown(record))


if __name__ == "__main__":
    main()
