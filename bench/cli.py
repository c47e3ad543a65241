"""The ``cirbench`` command line. Each subcommand is a thin wrapper over a library call."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from bench.errors import CirbenchError

Handler = Callable[[argparse.Namespace], int]


def _cmd_data_stats(args: argparse.Namespace) -> int:
    from bench.data.stats import dataset_stats, format_stats

    stats = dataset_stats(args.format, args.root, images=not args.no_images)
    print(json.dumps(stats, indent=2) if args.json else format_stats(stats))
    return 1 if args.strict and stats["errors"] else 0


def _cmd_data_synth(args: argparse.Namespace) -> int:
    from bench.data.stats import dataset_stats, format_stats
    from bench.data.synthetic import generate
    from bench.data.synthetic_baselines import attribute_baselines, format_baselines

    out = Path(args.out)
    summary = generate(out, seed=args.seed, size=args.size, progress=not args.quiet)
    report: dict[str, object] = {"summary": summary, "stats": {}, "baselines": {}}
    for fmt in ("fashioniq", "cirr"):
        stats = dataset_stats(fmt, out / fmt, images=True)
        report["stats"][fmt] = stats  # type: ignore[index]
        if stats["errors"]:
            print(format_stats(stats), file=sys.stderr)
            raise CirbenchError(f"generated {fmt} data failed validation: see findings above")
        report["baselines"][fmt] = attribute_baselines(out, fmt, "val")  # type: ignore[index]
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        for fmt in ("fashioniq", "cirr"):
            print(format_stats(report["stats"][fmt]))  # type: ignore[index]
            print()
        print(format_baselines(report["baselines"]))  # type: ignore[arg-type]
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cirbench", description="Composed image retrieval ablation suite."
    )
    commands = parser.add_subparsers(dest="command", required=True)

    data = commands.add_parser("data", help="dataset tools").add_subparsers(
        dest="data_command", required=True
    )
    stats = data.add_parser(
        "stats", help="queries / images per split and validation findings of a dataset folder"
    )
    stats.add_argument("--format", required=True, choices=("fashioniq", "cirr"))
    stats.add_argument("--root", required=True, type=Path, help="dataset folder")
    stats.add_argument("--json", action="store_true", help="print JSON instead of a table")
    stats.add_argument(
        "--no-images", action="store_true", help="annotations only: do not look for image files"
    )
    stats.add_argument(
        "--strict", action="store_true", help="exit with status 1 when any error is found"
    )
    stats.set_defaults(handler=_cmd_data_stats)

    synth = data.add_parser(
        "synth", help="generate the synthetic CIR benchmark (FashionIQ and CIRR formats)"
    )
    synth.add_argument("--out", required=True, type=Path, help="output folder")
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--size", choices=("tiny", "small", "default"), default="default")
    synth.add_argument("--json", action="store_true", help="print the report as JSON")
    synth.add_argument("--quiet", action="store_true", help="no progress bars")
    synth.set_defaults(handler=_cmd_data_synth)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``cirbench`` console script."""
    args = build_parser().parse_args(argv)
    handler: Handler = args.handler
    try:
        return handler(args)
    except (CirbenchError, FileNotFoundError, ValueError) as exc:
        print(f"cirbench: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
