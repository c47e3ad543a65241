"""``cirbench data stats|rehearse|synth``: dataset folders, rehearsal folders and the synthetic
benchmark."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from bench.config.base import SYNTHETIC_SIZES
from bench.core.errors import CirbenchError
from bench.formats import format_names
from bench.formats.records import CIRSplit


def _cmd_data_stats(args: argparse.Namespace) -> int:
    from bench.formats.stats import dataset_stats, format_stats

    per_split = None if args.no_duplicates else _duplicates
    stats = dataset_stats(args.format, args.root, images=not args.no_images, per_split=per_split)
    print(json.dumps(stats, indent=2) if args.json else format_stats(stats))
    return 1 if args.strict and stats["errors"] else 0


def _duplicates(split: CIRSplit) -> dict[str, Any]:
    """Pixel-identical images of a split: how many would merge into another's bank row
    (``spn.negatives.dedup``) and in how many groups; digests cached like the run's."""
    from bench.core.paths import cache_dir
    from bench.images.dedup import duplicate_groups, pixel_digests

    names = [n for n in split.gallery if n in split.image_paths and split.image_paths[n].is_file()]
    groups = duplicate_groups(pixel_digests(names, split.image_paths, cache_dir()))
    merged = [n for n, kept in groups.items() if n != kept]
    return {
        "duplicates": {"merged_images": len(merged), "groups": len({groups[n] for n in merged})}
    }


def _cmd_data_synth(args: argparse.Namespace) -> int:
    from bench.formats.stats import dataset_stats, format_stats
    from bench.synthetic import attribute_baselines, format_baselines, generate

    out = Path(args.out)
    summary = generate(out, seed=args.seed, size=args.size, progress=not args.quiet)
    all_stats: dict[str, dict] = {}
    baselines: dict[str, dict] = {}
    for fmt in format_names():
        stats = dataset_stats(fmt, out / fmt, images=True)
        all_stats[fmt] = stats
        if stats["errors"]:
            print(format_stats(stats), file=sys.stderr)
            raise CirbenchError(f"generated {fmt} data failed validation: see findings above")
        baselines[fmt] = attribute_baselines(out, fmt, "val")
    report = {"summary": summary, "stats": all_stats, "baselines": baselines}
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        for fmt in format_names():
            print(format_stats(all_stats[fmt]))
            print()
        print(format_baselines(baselines))
    return 0


def _cmd_data_rehearse(args: argparse.Namespace) -> int:
    from bench.images.rehearse import rehearse

    done = rehearse(
        args.format,
        args.out,
        annotations=args.annotations,
        seed=args.seed,
        limit=args.limit,
        workers=args.workers,
        scale=args.scale,
        gallery_size=args.gallery_size,
        progress=not args.quiet,
    )
    if args.json:
        print(json.dumps(done.as_dict(), indent=2))
    else:
        print(
            f"{done.root}: {done.format} layout, annotations from {done.annotations}, "
            f"{done.images} images ({done.written} written, {done.images - done.written} kept)"
        )
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    data = commands.add_parser("data", help="dataset tools").add_subparsers(
        dest="data_command", required=True
    )
    stats = data.add_parser(
        "stats", help="queries / images per split and validation findings of a dataset folder"
    )
    stats.add_argument("--format", required=True, choices=format_names())
    stats.add_argument("--root", required=True, type=Path, help="dataset folder")
    stats.add_argument("--json", action="store_true", help="print JSON instead of a table")
    stats.add_argument(
        "--no-images", action="store_true", help="annotations only: do not look for image files"
    )
    stats.add_argument(
        "--no-duplicates",
        action="store_true",
        help="skip counting pixel-identical images (decodes every image once, then cached)",
    )
    stats.add_argument(
        "--strict", action="store_true", help="exit with status 1 when any error is found"
    )
    stats.set_defaults(handler=_cmd_data_stats)

    rehearse = data.add_parser(
        "rehearse",
        help="the official layout with the real annotation files and a placeholder JPEG at "
        "real size for every image they name (input-pipeline rehearsals, layout checks)",
    )
    rehearse.add_argument("--format", required=True, choices=format_names())
    rehearse.add_argument("--out", required=True, type=Path, help="dataset folder to write")
    rehearse.add_argument(
        "--annotations",
        type=Path,
        help="folder of the real annotation files (default: ../shared/data/<format>, "
        "or $CIRBENCH_SHARED_DATA/<format>)",
    )
    rehearse.add_argument("--seed", type=int, default=0, help="placeholder images' seed")
    rehearse.add_argument(
        "--limit", type=int, help="write only the first N images (0: annotations only)"
    )
    rehearse.add_argument("--workers", type=int, help="processes (default: the machine's cores)")
    rehearse.add_argument(
        "--scale", type=float, default=1.0, help="shrink every image by this factor (tests)"
    )
    rehearse.add_argument(
        "--gallery-size",
        type=int,
        help="CIRCO: images in the gallery in all (default 123403, the COCO unlabeled set; "
        "0: only the images the annotations name)",
    )
    rehearse.add_argument("--json", action="store_true", help="print the summary as JSON")
    rehearse.add_argument("--quiet", action="store_true", help="no progress bar")
    rehearse.set_defaults(handler=_cmd_data_rehearse)

    synth = data.add_parser(
        "synth",
        help="generate the synthetic CIR benchmark (FashionIQ, CIRR and CIRCO formats)",
    )
    synth.add_argument("--out", required=True, type=Path, help="output folder")
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--size", choices=SYNTHETIC_SIZES, default="default")
    synth.add_argument("--json", action="store_true", help="print the report as JSON")
    synth.add_argument("--quiet", action="store_true", help="no progress bars")
    synth.set_defaults(handler=_cmd_data_synth)
