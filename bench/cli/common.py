"""What every command group shares: argument helpers and the handler type."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

Handler = Callable[[argparse.Namespace], int]


def add_spec_arguments(parser: argparse.ArgumentParser, *, many: bool = False) -> None:
    """The spec argument(s), ``--set KEY=VALUE`` overrides and ``--quiet``."""
    parser.add_argument("spec", type=Path, nargs="+" if many else None, help="experiment spec YAML")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a spec value, e.g. --set train.lr=1e-5 (repeatable)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def profiles_help() -> str:
    """What each run profile is and costs (``experiments/profiles.yaml``), for ``--help``."""
    from bench.runner.profiles import load_profiles

    lines = ["profiles (--profile):"]
    for name, profile in load_profiles().items():
        lines.append(f"  {name:8s} {profile.description}")
    return "\n".join(lines)


def add_suite_arguments(parser: argparse.ArgumentParser) -> None:
    """The options shared by ``sweep``, ``report`` and ``ablate``."""
    parser.add_argument(
        "--profile",
        default="default",
        help="quick | default | small | full (see below; default: default)",
    )
    parser.add_argument(
        "--data-root",
        action="append",
        metavar="DIR|FORMAT=DIR",
        help="real data (the methods' published settings): a folder holding fashionIQ_dataset/, "
        "cirr_dataset/, CIRCO/ (the reference layout), or FORMAT=DIR per format (repeatable)",
    )
    parser.add_argument("--storage", help="Optuna storage URL of study suites")
    parser.add_argument("--methods", nargs="+", help="only these methods (default: the suite's)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
