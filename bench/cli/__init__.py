"""The ``cirbench`` command line: one module per command group, each a thin wrapper over
library calls (imported inside the handlers, so ``cirbench --help`` starts fast)."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Sequence
from types import FrameType

from bench.cli import catalog, compare, data, positives, suites, train
from bench.cli.common import Handler
from bench.core.errors import CirbenchError

#: The command groups, in ``--help`` order.
GROUPS = (data, train, catalog, suites, positives, compare)


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


RESUME_HINT = "run the command again (`cirbench train` with --resume) to continue"


class Terminated(KeyboardInterrupt):
    """SIGTERM (``kill``, ``timeout``, schedulers), raised where SIGINT would raise
    ``KeyboardInterrupt``: runs end KILLED, locks and temporary files are released."""


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise Terminated(f"signal {signum}")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``cirbench`` console script."""
    args = build_parser().parse_args(argv)
    handler: Handler = args.handler
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _terminate) if main_thread else None
    try:
        return handler(args)
    except (CirbenchError, FileNotFoundError, ValueError) as exc:
        print(f"cirbench: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:  # SIGINT, or SIGTERM as Terminated
        what = "terminated (SIGTERM)" if isinstance(exc, Terminated) else "interrupted"
        print(f"cirbench: {what}; {RESUME_HINT}", file=sys.stderr)
        return 128 + (signal.SIGTERM if isinstance(exc, Terminated) else signal.SIGINT)
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)
