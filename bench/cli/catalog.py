"""``cirbench methods`` and ``cirbench backbone pretrain``: what is registered, and the
synthetic world's pre-trained backbones."""

from __future__ import annotations

import argparse


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


def register(commands: argparse._SubParsersAction) -> None:
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
