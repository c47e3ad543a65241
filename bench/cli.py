"""The ``cirbench`` command line. Each subcommand is a thin wrapper over a library call."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from bench.core.errors import CirbenchError
from bench.spn.positives.cli import register_cli as register_positives_cli

if TYPE_CHECKING:
    from bench.config import ExperimentSpec

Handler = Callable[[argparse.Namespace], int]


def _cmd_data_stats(args: argparse.Namespace) -> int:
    from bench.data.stats import dataset_stats, format_stats

    stats = dataset_stats(args.format, args.root, images=not args.no_images)
    print(json.dumps(stats, indent=2) if args.json else format_stats(stats))
    return 1 if args.strict and stats["errors"] else 0


def _cmd_data_synth(args: argparse.Namespace) -> int:
    from bench.data.stats import dataset_stats, format_stats
    from bench.synthetic import (
        attribute_baselines,
        circo_attribute_baselines,
        format_baselines,
        format_circo_baselines,
        generate,
    )

    out = Path(args.out)
    summary = generate(out, seed=args.seed, size=args.size, progress=not args.quiet)
    formats = ("fashioniq", "cirr", "circo")
    all_stats: dict[str, dict] = {}
    recall: dict[str, dict] = {}
    for fmt in formats:
        stats = dataset_stats(fmt, out / fmt, images=True)
        all_stats[fmt] = stats
        if stats["errors"]:
            print(format_stats(stats), file=sys.stderr)
            raise CirbenchError(f"generated {fmt} data failed validation: see findings above")
        if fmt != "circo":
            recall[fmt] = attribute_baselines(out, fmt, "val")
    circo_map = circo_attribute_baselines(out, "val")
    report = {"summary": summary, "stats": all_stats, "baselines": {**recall, "circo": circo_map}}
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        for fmt in formats:
            print(format_stats(all_stats[fmt]))
            print()
        print(format_baselines(recall))
        print("attribute-level baselines on val (mAP %):")
        print(format_circo_baselines(circo_map))
    return 0


def _load_spec(args: argparse.Namespace) -> ExperimentSpec:
    from bench.config import load_spec

    return load_spec(args.spec, overrides=args.set)


def _cmd_train(args: argparse.Namespace) -> int:
    from bench.config import load_spec
    from bench.core import distributed
    from bench.engine import train

    for path in args.spec:  # under torchrun every rank trains, rank 0 reports
        spec = load_spec(path, overrides=args.set)
        result = train(spec, resume=args.resume, restart=args.restart, progress=not args.quiet)
        if not distributed.is_main():
            continue
        print(
            json.dumps(
                {
                    "spec": str(path),
                    "run_dir": str(result.run_dir),
                    "mlflow_run_id": result.mlflow_run_id,
                    "seconds": round(result.seconds, 1),
                    "metrics": result.metrics,
                },
                indent=2,
            )
        )
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from bench.engine import evaluate

    metrics = evaluate(_load_spec(args), args.checkpoint, progress=not args.quiet)
    print(json.dumps(metrics, indent=2))
    return 0


def _cmd_submit(args: argparse.Namespace) -> int:
    from bench.engine import write_submission

    paths = write_submission(_load_spec(args), args.checkpoint, args.out, progress=not args.quiet)
    print("\n".join(str(p) for p in paths))
    return 0


def _cmd_methods(args: argparse.Namespace) -> int:
    from methods import get_method_class, list_methods

    for name in list_methods(args.pattern):
        cls = get_method_class(name)
        phases = ", ".join(p.name for p in cls.phases)
        doc = (cls.__doc__ or "").strip().splitlines()[0]
        print(f"{name:14s} phases: {phases:20s} {doc}")
    return 0


def _cmd_backbone_pretrain(args: argparse.Namespace) -> int:
    from bench.backbones.pretrain import ensure_synthetic_backbone

    path = ensure_synthetic_backbone(
        args.arch, size=args.size, seed=args.seed, progress=not args.quiet
    )
    print(path)
    return 0


def _cmd_sweep(args: argparse.Namespace) -> int:
    from bench.sweep import sweep

    result = sweep(
        args.suite,
        profile=args.profile,
        data_root=args.data_root,
        seeds=tuple(args.seeds) if args.seeds else None,
        methods=tuple(args.methods) if args.methods else None,
        workers=args.workers,
        storage=args.storage,
        n_trials=args.trials,
        overrides=tuple(args.set),
        progress=not args.quiet,
    )
    summary = {
        "suite": result.suite,
        "seconds": round(result.seconds, 1),
        "points": len(result.outcomes),
        "points_trained": result.trained,
    }
    if result.study_name:
        summary |= {"study": result.study_name, "storage": result.storage}
    print(json.dumps(summary, indent=2))
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from bench.report import build_report

    report = build_report(
        args.suite,
        profile=args.profile,
        data_root=args.data_root,
        seeds=tuple(args.seeds) if args.seeds else None,
        methods=tuple(args.methods) if args.methods else None,
        storage=args.storage,
        out=args.out,
    )
    print(report.folder / "index.md")
    if report.missing:
        print(f"{len(report.missing)} points not run yet (listed in index.md)", file=sys.stderr)
    return 0


def _cmd_ablate(args: argparse.Namespace) -> int:
    from bench.sweep import ABLATE_SUITES, ablate, expand_suite_names

    seconds = ablate(
        profile=args.profile,
        suites=expand_suite_names(args.suites or ABLATE_SUITES),
        data_root=args.data_root,
        methods=tuple(args.methods) if args.methods else None,
        seeds=tuple(args.seeds) if args.seeds else None,
        workers=args.workers,
        storage=args.storage,
        out=args.out,
        progress=not args.quiet,
    )
    print(json.dumps({k: round(v, 1) for k, v in seconds.items()}, indent=2))
    return 0


def _cmd_suites(args: argparse.Namespace) -> int:
    from bench.runner.profiles import load_profiles
    from bench.runner.suites import list_suites, load_suite
    from bench.sweep import SUITE_GROUPS

    for name in list_suites():
        suite = load_suite(name)
        group = next((g for g, members in SUITE_GROUPS.items() if name in members), "")
        print(f"{name:18s} {suite.kind:5s} {group:11s} {suite.title}")
    print()
    for name, profile in load_profiles().items():
        print(f"profile {name:8s} {profile.description}")
    return 0


def _add_suite_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--profile", default="default", help="quick | default | full")
    parser.add_argument(
        "--data-root", type=Path, help="real FashionIQ / CIRR folder (paper hyperparameters)"
    )
    parser.add_argument("--storage", help="Optuna storage URL of study suites")
    parser.add_argument("--methods", nargs="+", help="only these methods (default: the suite's)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def _add_spec_arguments(parser: argparse.ArgumentParser, *, many: bool = False) -> None:
    parser.add_argument("spec", type=Path, nargs="+" if many else None, help="experiment spec YAML")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a spec value, e.g. --set train.lr=1e-5 (repeatable)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


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
    stats.add_argument("--format", required=True, choices=("fashioniq", "cirr", "circo"))
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

    train = commands.add_parser("train", help="train and evaluate experiment spec(s), tracked")
    _add_spec_arguments(train, many=True)
    train.add_argument("--resume", action="store_true", help="continue from the run's last.pt")
    train.add_argument("--restart", action="store_true", help="discard the run's state")
    train.set_defaults(handler=_cmd_train)

    evaluate = commands.add_parser("evaluate", help="evaluate a checkpoint on the spec's split")
    _add_spec_arguments(evaluate)
    evaluate.add_argument("--checkpoint", required=True, type=Path)
    evaluate.set_defaults(handler=_cmd_evaluate)

    submit = commands.add_parser("submit", help="write CIRR test-server submission files")
    _add_spec_arguments(submit)
    submit.add_argument("--checkpoint", required=True, type=Path)
    submit.add_argument("--out", type=Path, default=Path("submissions"))
    submit.set_defaults(handler=_cmd_submit)

    methods = commands.add_parser("methods", help="list registered CIR methods")
    methods.add_argument("pattern", nargs="?", default="*", help="wildcard, e.g. 'clip*'")
    methods.set_defaults(handler=_cmd_methods)

    backbone = commands.add_parser("backbone", help="backbone tools").add_subparsers(
        dest="backbone_command", required=True
    )
    pretrain = backbone.add_parser(
        "pretrain", help="pre-train the small CLIP on the synthetic benchmark (cached)"
    )
    pretrain.add_argument("--arch", default="cirbench-tiny")
    pretrain.add_argument("--size", choices=("tiny", "small", "default"), default="default")
    pretrain.add_argument("--seed", type=int, default=0)
    pretrain.add_argument("--quiet", action="store_true")
    pretrain.set_defaults(handler=_cmd_backbone_pretrain)

    sweep = commands.add_parser("sweep", help="run a suite's grid or Optuna study (resumable)")
    sweep.add_argument("suite", help="suite name in experiments/ (see `cirbench suites`)")
    _add_suite_arguments(sweep)
    sweep.add_argument("--seeds", type=int, nargs="+", help="override the profile's seeds")
    sweep.add_argument("--workers", type=int, default=1, help="worker processes")
    sweep.add_argument("--trials", type=int, help="study trials in total (default: profile's)")
    sweep.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    sweep.set_defaults(handler=_cmd_sweep)

    report = commands.add_parser("report", help="tables and plots of a suite from MLflow runs")
    report.add_argument("suite")
    _add_suite_arguments(report)
    report.add_argument("--seeds", type=int, nargs="+")
    report.add_argument("--out", type=Path, default=Path("reports"))
    report.set_defaults(handler=_cmd_report)

    ablate = commands.add_parser("ablate", help="sweep and report every suite (nox -s ablate)")
    _add_suite_arguments(ablate)
    ablate.add_argument(
        "--suites",
        nargs="+",
        help="suite names, or `paper` (the default set) and `diagnostics` (why a modifier "
        "helps or not)",
    )
    ablate.add_argument("--seeds", type=int, nargs="+", help="override the profile's seeds")
    ablate.add_argument("--workers", type=int, default=1)
    ablate.add_argument("--out", type=Path, default=Path("reports"))
    ablate.set_defaults(handler=_cmd_ablate)

    suites = commands.add_parser("suites", help="list the experiment suites and profiles")
    suites.set_defaults(handler=_cmd_suites)

    register_positives_cli(commands)
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
