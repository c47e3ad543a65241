"""``cirbench compare RUN_A RUN_B``: how sure the difference between two runs is."""

from __future__ import annotations

import argparse
import json


def _cmd_compare(args: argparse.Namespace) -> int:
    from bench.report.compare import compare_runs

    result = compare_runs(
        args.run_a,
        args.run_b,
        metrics=tuple(args.metric or ()),
        resamples=args.resamples,
        seed=args.seed,
    )
    if args.json:
        print(json.dumps([r.as_dict() for r in result.results], indent=2))
    else:
        print(result.text(), end="")
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    from bench.stats import DEFAULT_RESAMPLES

    p = commands.add_parser(
        "compare",
        help="paired bootstrap comparison of two tracked runs on the same queries",
        description="Compare two runs query by query: per metric A, B and A - B with its 95% "
        "paired-bootstrap interval over the val queries (the same resampled queries for "
        "both runs). A run is a run folder, its per_query.npz, or an MLflow run id.",
    )
    p.add_argument("run_a", metavar="RUN_A", help="run folder, per_query.npz or MLflow run id")
    p.add_argument("run_b", metavar="RUN_B", help="the same, for the run compared against")
    p.add_argument(
        "--metric", action="append", help="a metric to compare (repeatable; default: the table's)"
    )
    p.add_argument("--resamples", type=int, default=DEFAULT_RESAMPLES, help="bootstrap resamples")
    p.add_argument("--seed", type=int, default=0, help="seed of the resampling")
    p.add_argument("--json", action="store_true", help="one JSON record per metric")
    p.set_defaults(handler=_cmd_compare)
