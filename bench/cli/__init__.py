"""The ``cirbench`` command line: one module per command group, each a thin wrapper over
library calls (imported inside the handlers, so ``cirbench --help`` starts fast)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from bench.cli import catalog, data, positives, suites, train
from bench.cli.common import Handler
from bench.core.errors import CirbenchError

#: The command groups, in ``--help`` order.
GROUPS = (data, train, catalog, suites, positives)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cirbench", description="Composed image retrieval ablation suite."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    for group in GROUPS:
        group.register(commands)
    for action in commands._choices_actions:  # every command's --help says what it does
        command = commands.choices[action.dest]
        if not command.description:
            command.description = (action.help or "")[:1].upper() + (action.help or "")[1:] + "."
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
