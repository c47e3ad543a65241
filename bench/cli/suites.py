"""``cirbench sweep|report|ablate|reproduce|suites``: the experiment suites."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from bench.cli.common import add_suite_arguments, profiles_help

SWEEP_TEXT = """Run one suite of experiments/suites/ (a grid of methods x compositions x seeds,
or an Optuna study) under a profile, tracked in MLflow (one parent run `suite:<name>`, one
child run per point). Resumable: interrupt it at any time; a rerun trains only what did not
finish. `cirbench suites` lists the suites."""

REPORT_TEXT = """Write a suite's tables (Markdown, CSV, LaTeX) and plots into --out/<suite>/ from
its finished MLflow runs, and log them on the suite's MLflow parent run. Trains nothing."""

ABLATE_TEXT = """Sweep every suite of the paper group (or --suites), then write each suite's
report into --out and onto its MLflow parent run (what `nox -s ablate` runs). Resumable:
rerunning recomputes nothing that finished. Open the results with `nox -s ui`."""


def _print_dry_run(suites: list[str], args: argparse.Namespace) -> int:
    """Every point's resolved spec and plan: JSON lines with ``--json``, else a summary."""
    from bench.runner.dryrun import dry_run
    from bench.runner.suites import SuiteRun

    for name in suites:
        run = SuiteRun.open(
            name,
            args.profile,
            args.data_root,
            seeds=tuple(args.seeds) if args.seeds else None,
            methods=tuple(args.methods) if args.methods else None,
            overrides=tuple(getattr(args, "set", ()) or ()),
        )
        records = dry_run(run)
        for record in records:
            if args.json:
                print(json.dumps(record, sort_keys=True))
            else:
                plan = ", ".join(f"{k}: {v}" for k, v in record["plan"].items())
                print(f"{record['suite']}: {record['point']} -> {record['run']} ({plan})")
    return 0


def _cmd_sweep(args: argparse.Namespace) -> int:
    from bench.runner.ablate import sweep

    if args.dry_run:
        return _print_dry_run([args.suite], args)

    result = sweep(
        args.suite,
        profile=args.profile,
        data_root=args.data_root,
        seeds=tuple(args.seeds) if args.seeds else None,
        methods=tuple(args.methods) if args.methods else None,
        workers=args.workers,
        storage=args.storage,
        n_trials=args.trials,
        stage1_trials=args.stage1_trials,
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
    from bench.runner.ablate import report as build_and_publish

    report = build_and_publish(
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
    from bench.runner.ablate import (
        ABLATE_SUITES,
        ABLATE_WORKERS,
        ablate,
        closing_summary,
        expand_suite_names,
    )

    default = ("reproduce",) if args.checkpoints else ABLATE_SUITES
    if args.dry_run:
        return _print_dry_run(list(expand_suite_names(args.suites or default)), args)

    started = time.perf_counter()
    seconds = ablate(
        checkpoints=args.checkpoints,
        profile=args.profile,
        suites=expand_suite_names(args.suites or default),
        data_root=args.data_root,
        methods=tuple(args.methods) if args.methods else None,
        seeds=tuple(args.seeds) if args.seeds else None,
        workers=args.workers or ABLATE_WORKERS,
        storage=args.storage,
        out=args.out,
        progress=not args.quiet,
    )
    seconds["total"] = time.perf_counter() - started  # the checks before the first suite too
    print(closing_summary(seconds, profile=args.profile, out=args.out, real=bool(args.data_root)))
    return 0


def _cmd_reproduce(args: argparse.Namespace) -> int:
    from bench.runner.reproduce import reproduce

    result = reproduce(
        args.data_root,
        args.checkpoints,
        methods=tuple(args.methods) if args.methods else None,
        datasets=tuple(args.datasets) if args.datasets else None,
        seeds=tuple(args.seeds) if args.seeds else None,
        overrides=tuple(args.set),
        out=args.out,
        progress=not args.quiet,
    )
    for table in result.tables:
        print(table.markdown())
    print(f"tables: {result.folder}")
    for m in result.errors:
        print(f"cirbench: error: {m.method} {m.dataset} {m.weights}: {m.error}", file=sys.stderr)
    return 1 if result.errors else 0


def _add_checkpoints_argument(parser: argparse.ArgumentParser, required: bool) -> None:
    parser.add_argument(
        "--checkpoints",
        type=Path,
        required=required,
        metavar="DIR",
        help="the released checkpoints in SPN4CIR's layout (data/<method>/<data>_stage1.pt, "
        "checkpoints/<data>_<model>/best.pt; see the README)"
        + ("" if required else ": runs the reproduce suite"),
    )


def _cmd_suites(args: argparse.Namespace) -> int:
    from bench.runner.ablate import SUITE_GROUPS
    from bench.runner.profiles import load_profiles
    from bench.runner.suites import list_suites, load_suite

    for name in list_suites():
        suite = load_suite(name)
        group = next((g for g, members in SUITE_GROUPS.items() if name in members), "")
        print(f"{name:18s} {suite.kind:5s} {group:11s} {suite.title}")
    print()
    for name, profile in load_profiles().items():
        print(f"profile {name:8s} {profile.description}")
    return 0


def _add_dry_run_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="print what every point would run (resolved spec and plan); train nothing",
    )
    parser.add_argument("--json", action="store_true", help="with --dry-run: one JSON per point")


def _suite_command(
    commands: argparse._SubParsersAction, name: str, help_text: str, description: str
) -> argparse.ArgumentParser:
    """A suite command whose ``--help`` says what it does and what each profile costs."""
    return commands.add_parser(
        name,
        help=help_text,
        description=description,
        epilog=profiles_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def register(commands: argparse._SubParsersAction) -> None:
    sweep = _suite_command(
        commands, "sweep", "run a suite's grid or Optuna study (resumable)", SWEEP_TEXT
    )
    sweep.add_argument("suite", help="suite name in experiments/ (see `cirbench suites`)")
    add_suite_arguments(sweep)
    sweep.add_argument("--seeds", type=int, nargs="+", help="override the profile's seeds")
    sweep.add_argument("--workers", type=int, default=1, help="worker processes")
    sweep.add_argument("--trials", type=int, help="study trials in total (default: profile's)")
    sweep.add_argument(
        "--stage1-trials",
        type=int,
        help="calibration suites: trials of each stage-1 study (default: --trials); 1 keeps "
        "the profile's stage 1 (the incumbent) and spends the budget on the bank stage",
    )
    sweep.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    _add_dry_run_arguments(sweep)
    sweep.set_defaults(handler=_cmd_sweep)

    report = _suite_command(
        commands, "report", "tables and plots of a suite from MLflow runs", REPORT_TEXT
    )
    report.add_argument("suite", help="suite name (see `cirbench suites`)")
    add_suite_arguments(report)
    report.add_argument("--seeds", type=int, nargs="+", help="override the profile's seeds")
    report.add_argument(
        "--out", type=Path, default=Path("reports"), help="report folder (default: reports)"
    )
    report.set_defaults(handler=_cmd_report)

    ablate = _suite_command(
        commands, "ablate", "sweep and report every suite (nox -s ablate)", ABLATE_TEXT
    )
    add_suite_arguments(ablate)
    ablate.add_argument(
        "--suites",
        nargs="+",
        help="suite names, or `paper` (the default set) and `diagnostics` (why a modifier "
        "helps or not)",
    )
    ablate.add_argument("--seeds", type=int, nargs="+", help="override the profile's seeds")
    ablate.add_argument(
        "--workers",
        type=int,
        help="worker processes, one torch thread each (default: 2, ABLATE_WORKERS)",
    )
    ablate.add_argument(
        "--out", type=Path, default=Path("reports"), help="report folder (default: reports)"
    )
    _add_dry_run_arguments(ablate)
    _add_checkpoints_argument(ablate, required=False)
    ablate.set_defaults(handler=_cmd_ablate)

    again = commands.add_parser(
        "reproduce",
        help="Tables 2 and 3 from the released checkpoints: published vs measured",
    )
    again.add_argument(
        "--data-root",
        action="append",
        required=True,
        metavar="DIR|FORMAT=DIR",
        help="the real datasets (fashionIQ_dataset/, cirr_dataset/ in the reference layout)",
    )
    _add_checkpoints_argument(again, required=True)
    again.add_argument("--methods", nargs="+", help="only these methods (default: all)")
    again.add_argument(
        "--datasets", nargs="+", help="fashioniq (Table 2) and/or cirr (Table 3); default both"
    )
    again.add_argument("--seeds", type=int, nargs="+", help="seeds of the trained stage 2")
    again.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override spec values"
    )
    again.add_argument("--out", type=Path, default=Path("reports"))
    again.add_argument("--quiet", action="store_true", help="no progress bars")
    again.set_defaults(handler=_cmd_reproduce)

    suites = commands.add_parser("suites", help="list the experiment suites and profiles")
    suites.set_defaults(handler=_cmd_suites)
