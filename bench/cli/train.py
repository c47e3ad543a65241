"""``cirbench train|evaluate|submit``: one spec trained, a checkpoint evaluated or
turned into test-server files."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from bench.cli.common import add_spec_arguments


def _cmd_train(args: argparse.Namespace) -> int:
    from bench.config import load_spec
    from bench.core import distributed
    from bench.train.engine import train
    from bench.train.preflight import preflight

    specs = [load_spec(path, overrides=args.set) for path in args.spec]
    for path, spec in zip(args.spec, specs, strict=True):  # every spec before any work
        preflight(spec, str(path))
    for path, spec in zip(args.spec, specs, strict=True):
        # under torchrun every rank trains, rank 0 reports
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
    from bench.config import load_spec
    from bench.train.evaluate import evaluate

    spec = load_spec(args.spec, overrides=args.set)
    metrics = evaluate(spec, args.checkpoint, progress=not args.quiet)
    print(json.dumps(metrics, indent=2))
    return 0


def _cmd_submit(args: argparse.Namespace) -> int:
    from bench.config import load_spec
    from bench.train.evaluate import write_submission

    spec = load_spec(args.spec, overrides=args.set)
    paths = write_submission(spec, args.checkpoint, args.out, progress=not args.quiet)
    print("\n".join(str(p) for p in paths))
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    train = commands.add_parser("train", help="train and evaluate experiment spec(s), tracked")
    add_spec_arguments(train, many=True)
    train.add_argument("--resume", action="store_true", help="continue from the run's last.pt")
    train.add_argument("--restart", action="store_true", help="discard the run's state")
    train.set_defaults(handler=_cmd_train)

    evaluate = commands.add_parser("evaluate", help="evaluate a checkpoint on the spec's split")
    add_spec_arguments(evaluate)
    evaluate.add_argument("--checkpoint", required=True, type=Path)
    evaluate.set_defaults(handler=_cmd_evaluate)

    submit = commands.add_parser("submit", help="write CIRR test-server submission files")
    add_spec_arguments(submit)
    submit.add_argument("--checkpoint", required=True, type=Path)
    submit.add_argument("--out", type=Path, default=Path("submissions"))
    submit.set_defaults(handler=_cmd_submit)
