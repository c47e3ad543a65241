"""``cirbench methods``, ``cirbench checkpoints``, ``cirbench recipes`` and ``cirbench
backbone pretrain``: what is registered (methods, released checkpoint formats), the SPN
recipe each method's base file declares, and the synthetic world's pre-trained backbones."""

from __future__ import annotations

import argparse

from bench.config.base import SYNTHETIC_SIZES


def _cmd_methods(args: argparse.Namespace) -> int:
    from methods import get_method_class, list_methods

    for name in list_methods(args.pattern):
        cls = get_method_class(name)
        phases = ", ".join(p.name for p in cls.phases)
        doc = (cls.__doc__ or "").strip().splitlines()[0]
        print(f"{name:14s} phases: {phases:20s} {doc}")
    return 0


def _cmd_checkpoints(args: argparse.Namespace) -> int:
    from bench.checkpoints import checkpoint_format_names, get_checkpoint_format

    for name in checkpoint_format_names():
        fmt = get_checkpoint_format(name)
        files = " + ".join(f"{p}?" if p in fmt.optional else p for p in fmt.parts)
        print(f"{name:13s} {fmt.method:12s} {fmt.stage}  files: {files:22s} {fmt.source}")
    return 0


def _cmd_recipes(args: argparse.Namespace) -> int:
    import json

    from bench.runner.recipes import recipe_markdown, recipe_rows

    if args.json:
        print(json.dumps(recipe_rows(args.profile), indent=2, ensure_ascii=False))
    else:
        print(recipe_markdown(args.profile), end="")
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

    checkpoints = commands.add_parser(
        "checkpoints", help="list the released checkpoint formats (stage1.format)"
    )
    checkpoints.set_defaults(handler=_cmd_checkpoints)

    recipes = commands.add_parser(
        "recipes", help="the SPN recipe per method and dataset, from experiments/methods/"
    )
    recipes.add_argument("--profile", choices=("real", "synthetic"), default="real")
    recipes.add_argument("--json", action="store_true", help="one JSON record per row")
    recipes.set_defaults(handler=_cmd_recipes)

    backbone = commands.add_parser("backbone", help="backbone tools").add_subparsers(
        dest="backbone_command", required=True
    )
    pretrain = backbone.add_parser(
        "pretrain", help="pre-train the small CLIP on the synthetic benchmark (cached)"
    )
    pretrain.add_argument("--arch", default="cirbench-tiny")
    pretrain.add_argument("--size", choices=SYNTHETIC_SIZES, default="default")
    pretrain.add_argument("--seed", type=int, default=0)
    pretrain.add_argument("--quiet", action="store_true")
    pretrain.set_defaults(handler=_cmd_backbone_pretrain)
