"""``cirbench positives caption|dedup|match|build``: the pipeline's steps from the shell.

Every subcommand reads a positives spec (``--spec`` YAML: the fields of
:class:`~bench.config.PositivesSpec`, or an experiment spec whose
``spn.positives`` holds them; ``--set key=value`` overrides, dotted keys reach nested
options: ``--set captioner_options.noise=0.1``), runs the pipeline up to its step through
the same caches as ``build``, and writes that step's result:

* ``caption --out FILE``: ``[{"image_id", "caption", "category"}]`` (the SPN authors'
  caption format, readable back with ``captioner: file``);
* ``dedup --out FILE``: ``{category: {"kept": [...], "removed": {name: kept name}}}``;
* ``match --out FILE``: ``[{"reference", "target", "category"}]``;
* ``build``: the generated caption files next to the official ones; prints a summary.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import yaml

from bench.core.errors import CirbenchError
from bench.formats import format_names

STEPS = ("caption", "dedup", "match", "build")


def _set(mapping: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    for key in keys[:-1]:
        child = mapping.get(key)
        if not isinstance(child, dict):
            child = {}
            mapping[key] = child
        mapping = child
    mapping[keys[-1]] = value


def load_positives_spec(
    path: Path | None, overrides: list[str]
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """(positives spec mapping, the experiment's dataset mapping or None) from a YAML file."""
    data: dict[str, Any] = {}
    dataset = None
    if path is not None:
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except FileNotFoundError:
            raise CirbenchError(f"{path}: spec file not found") from None
        except yaml.YAMLError as exc:
            raise CirbenchError(f"{path}: not valid YAML ({exc})") from None
        if not isinstance(loaded, dict):
            raise CirbenchError(f"{path}: expected a mapping of spec fields")
        if "spn" in loaded:  # an experiment spec
            positives = (loaded.get("spn") or {}).get("positives")
            if not isinstance(positives, dict):
                raise CirbenchError(f"{path}: spn.positives is not set")
            data = dict(positives)
            dataset = loaded.get("dataset") if isinstance(loaded.get("dataset"), dict) else None
        else:
            data = dict(loaded)
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise CirbenchError(f"--set {item!r}: expected KEY=VALUE")
        _set(data, key.strip(), yaml.safe_load(text))
    return data, dataset


def _resolve(args: argparse.Namespace) -> tuple[Path, str, Any]:
    from bench.config import PositivesSpec

    data, dataset = load_positives_spec(args.spec, args.set)
    fmt = args.format or (dataset or {}).get("format")
    if fmt not in format_names():
        raise CirbenchError(
            f"give --format {'|'.join(format_names())} (or a spec with dataset.format)"
        )
    if args.root is not None:
        root = Path(args.root)
    elif dataset is not None:
        from bench.config import DatasetSpec
        from bench.train.data import dataset_root

        root = dataset_root(DatasetSpec(**dataset), progress=not args.quiet)
    else:
        raise CirbenchError("give --root (the dataset folder) or an experiment spec")
    return root, fmt, PositivesSpec.model_validate(data)


def _build(args: argparse.Namespace) -> Any:
    from bench.core.arrays import ArrayCache
    from bench.core.paths import cache_dir
    from bench.spn.positives.pipeline import PositivesBuild

    root, fmt, spec = _resolve(args)
    cache = ArrayCache(Path(args.cache) if args.cache else cache_dir())
    return PositivesBuild(root, fmt, spec, cache=cache, progress=not args.quiet, device=args.device)


def _write_out(path: Path, data: Any) -> None:
    from bench.core.atomic import write_json_atomic

    write_json_atomic(path, data, ensure_ascii=False, trailing_newline=True)
    print(f"wrote {path}", file=sys.stderr)


def _cmd_caption(args: argparse.Namespace) -> int:
    build = _build(args)
    records = [
        {"image_id": name, "caption": caption, "category": category}
        for category, captions in build.captions().items()
        for name, caption in captions.items()
    ]
    _write_out(args.out, records)
    print(json.dumps({"images": len(records), "steps": build.steps}))
    return 0


def _cmd_dedup(args: argparse.Namespace) -> int:
    build = _build(args)
    result = {str(c): r.as_dict() for c, r in build.dedup().items()}
    _write_out(args.out, result)
    summary = {c: {"kept": len(r["kept"]), "removed": len(r["removed"])} for c, r in result.items()}
    print(json.dumps({"groups": summary, "steps": build.steps}))
    return 0


def _cmd_match(args: argparse.Namespace) -> int:
    build = _build(args)
    records = []
    for group in build.groups():
        kept = build.dedup()[group.category].kept
        for ref, tgt in build.pairs()[group.category][1]:
            records.append(
                {"reference": kept[ref], "target": kept[tgt], "category": group.category}
            )
    _write_out(args.out, records)
    print(json.dumps({"pairs": len(records), "steps": build.steps}))
    return 0


def _cmd_build(args: argparse.Namespace) -> int:
    result = _build(args).build()
    summary = {
        "name": result.name,
        "format": result.format,
        "triplets": len(result.triplets),
        "images": len(result.image_paths),
        "files": {role: str(p) for role, p in result.files.items()},
        "steps": result.steps,
        "counts": result.provenance.get("counts"),
    }
    print(json.dumps(summary, indent=2))
    return 0


_HANDLERS = {"caption": _cmd_caption, "dedup": _cmd_dedup, "match": _cmd_match, "build": _cmd_build}
_HELP = {
    "caption": "caption the pool images (cached); write them as SPN-style JSON",
    "dedup": "near-duplicate removal of the pool; write kept names and the removed map",
    "match": "pair references with targets from the rank window (or at random)",
    "build": "run every step and write the generated triplets next to the official files",
}


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``positives caption|dedup|match|build`` to a ``cirbench`` sub-command list."""
    positives = subparsers.add_parser(
        "positives", help="positive scaling (P): generated triplets", description=__doc__
    )
    steps = positives.add_subparsers(dest="positives_command", required=True)
    for step in STEPS:
        parser = steps.add_parser(step, help=_HELP[step])
        parser.add_argument("--spec", type=Path, help="positives spec YAML (or an experiment spec)")
        parser.add_argument(
            "--set",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help="override a spec field, e.g. --set rank_lo=100 (repeatable)",
        )
        parser.add_argument("--format", choices=format_names())
        parser.add_argument("--root", type=Path, help="dataset folder (FashionIQ, CIRR or CIRCO)")
        parser.add_argument(
            "--cache", type=Path, help="cache folder (default: $CIRBENCH_HOME/cache)"
        )
        parser.add_argument("--device", help="device for the matching backbone (default: auto)")
        parser.add_argument("--quiet", action="store_true", help="no progress bars")
        if step != "build":
            parser.add_argument("--out", type=Path, required=True, help="output JSON file")
        parser.set_defaults(handler=_HANDLERS[step])
    return positives
