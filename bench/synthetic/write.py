"""Writing the synthetic benchmark: folder preparation, JSON dumping, metadata, image
files, the summaries, ``generate()`` (the whole benchmark) and ``generate_circo()`` (its
CIRCO part).

``generate(out, seed=0, size="default")`` writes::

    out/synthetic.json                          generator version, seed, size, counts, vocabularies
    out/fashioniq/captions/cap.{cat}.{split}.json        official FashionIQ records
    out/fashioniq/image_splits/split.{cat}.{split}.json  official image lists
    out/fashioniq/images/<name>.png                      fiq-<cat>-000123 (all splits)
    out/fashioniq/metadata/images.json                   name -> attributes, description
    out/fashioniq/metadata/modifications.{cat}.{split}.json
    out/cirr/captions/cap.rc2.{train,val,test1}.json     official CIRR records
    out/cirr/image_splits/split.rc2.{split}.json         name -> "./train/<k>/<name>.png",
                                                         "./dev/<name>.png", "./test1/<name>.png"
    out/cirr/{train/<k>,dev,test1}/<name>.png
    out/cirr/metadata/images.json
    out/cirr/metadata/modifications.rc2.{split}.json
    out/pool/images/<name>.png                  unlabeled pool (in no triplet): pool-fiq-<cat>-*,
                                                pool-cirr-*; for positive scaling
    out/pool/metadata/images.json               name -> dataset, category, attributes, description
    out/circo/                                  CIRCO layout: annotations/{val,test}.json,
                                                COCO2017_unlabeled/unlabeled2017/<id>.jpg,
                                                metadata/; multiple ground truths per query
                                                (:mod:`bench.synthetic.circo`)

The sidecar ``modifications`` files (one record per caption record, same order) store
each triplet's structured edits: ``changes`` (attribute -> new value; the oracle) and
``requirements`` (what the text alone asks for: ``{"attributes": [...], "values": [...],
"quantifier": "any" | "none"}``). They also keep the target of test splits, so the
synthetic test splits can be scored.

Output is deterministic: the same seed and size give byte-identical files. JPEGs are
written with fixed settings (quality 90, no EXIF, no timestamps).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from tqdm import tqdm

from bench.formats.circo import COCO_FOLDER, IMAGE_FOLDER, IMAGE_INFO, image_file_name
from bench.synthetic.circo import (
    CIRCO_IMAGE_KIND,
    CIRCO_SIZES,
    CIRCO_SPLITS,
    CircoImage,
    CircoSize,
    circo_annotation,
    circo_sidecar,
    circo_values,
    plan_circo_images,
    plan_circo_queries,
)
from bench.synthetic.cirr import plan_cirr
from bench.synthetic.fashioniq import plan_fashioniq
from bench.synthetic.pool import plan_pool
from bench.synthetic.render import render
from bench.synthetic.world import (
    CIRR_SPLITS,
    FIQ_CATEGORIES,
    FIQ_SPLITS,
    SIZES,
    PlannedImage,
    SizeSpec,
    describe,
    seeded_rng,
    vocabularies,
)

GENERATOR_VERSION = "1.1"
# The generator ids written to the summaries keep the modules' former paths: earlier
# outputs stay recognised (and replaceable) and the files stay byte-identical.
GENERATOR_ID = "cirbench.bench.data.synthetic"
CIRCO_GENERATOR_ID = "cirbench.bench.data.synthetic_circo"
JPEG_QUALITY = 90

_OUTPUTS = ("fashioniq", "cirr", "pool", "circo", "synthetic.json")
_IN_PROGRESS = ".synthetic-in-progress"
_CIRCO_MARKER = "synthetic_circo.json"
_CIRCO_IN_PROGRESS = ".synthetic-circo-in-progress"


def dump_json(path: Path, data: Any, *, indent: int | None = 2, sort_keys: bool = False) -> None:
    """Write ``data`` as UTF-8 JSON plus a newline, creating the parent folders."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(data, indent=indent, sort_keys=sort_keys, ensure_ascii=False)
    path.write_text(text + "\n", encoding="utf-8")


def _metadata(
    images: Sequence[PlannedImage], extra: Callable[[PlannedImage], dict[str, Any]]
) -> dict:
    return {
        im.name: {"attributes": im.attributes, "description": describe(im.attributes), **extra(im)}
        for im in images
    }


# --------------------------------------------------------------------------- the benchmark


def _prepare(out: Path) -> None:
    """Make ``out`` ready: clear an earlier (complete or interrupted) synthetic benchmark.

    Any other non-empty folder is refused, so nothing that this module did not write is
    ever deleted.
    """
    out.mkdir(parents=True, exist_ok=True)
    entries = sorted(p.name for p in out.iterdir())
    if not entries:
        return
    ours = (out / _IN_PROGRESS).exists() or _is_summary(out / "synthetic.json")
    if not ours or not set(entries) <= {*_OUTPUTS, _IN_PROGRESS}:
        raise FileExistsError(
            f"{out}: not empty and not a synthetic benchmark folder (holds {entries[:5]}); "
            "choose an empty or new folder"
        )
    for name in _OUTPUTS[:-1]:
        if (out / name).exists():
            shutil.rmtree(out / name)
    (out / "synthetic.json").unlink(missing_ok=True)


def _is_summary(path: Path) -> bool:
    try:
        return json.loads(path.read_text(encoding="utf-8")).get("generator") == GENERATOR_ID
    except (OSError, ValueError, AttributeError):
        return False


def generate(
    out: str | Path, *, seed: int = 0, size: str = "default", progress: bool = True
) -> dict[str, Any]:
    """Write the synthetic benchmark under ``out`` and return the ``synthetic.json`` summary.

    ``out`` must be empty, new, or an earlier output of this function (which is replaced).
    ``synthetic.json`` is written last: its presence marks a complete benchmark.
    """
    if size not in SIZES:
        raise ValueError(f"unknown size {size!r}; expected one of {sorted(SIZES)}")
    spec = SIZES[size]
    out = Path(out)
    _prepare(out)
    (out / _IN_PROGRESS).write_text(f"seed={seed} size={size}\n", encoding="utf-8")

    fiq_images, fiq_caps, fiq_mods = plan_fashioniq(seed, spec)
    cirr_images, cirr_splits, cirr_caps, cirr_mods = plan_cirr(seed, spec)
    pool_images = plan_pool(seed, spec)
    _write_fashioniq(out / "fashioniq", fiq_images, fiq_caps, fiq_mods)
    _write_cirr(out / "cirr", cirr_images, cirr_splits, cirr_caps, cirr_mods)
    _write_pool(out / "pool", pool_images)
    summary = _summary(seed, size, spec, fiq_caps, cirr_splits, cirr_caps, pool_images)
    groups = (("fashioniq", fiq_images), ("cirr", cirr_images), ("pool", pool_images))
    _render_pngs(
        [(out / folder, im) for folder, images in groups for im in images], seed, size, progress
    )

    circo = generate_circo(out, seed=seed, size=size, progress=progress)
    summary["counts"]["circo"] = circo["counts"]
    summary["layout"]["circo"] = (
        "official CIRCO layout; COCO2017_unlabeled/unlabeled2017/<id:012d>.jpg, "
        "metadata/queries.{split}.json keeps every split's ground truths"
    )
    dump_json(out / "synthetic.json", summary, sort_keys=True)
    (out / _IN_PROGRESS).unlink()
    return summary


def _write_fashioniq(
    fiq: Path,
    images: Sequence[PlannedImage],
    captions: Mapping[tuple[str, str], list[dict]],
    mods: Mapping[tuple[str, str], list[dict]],
) -> None:
    """The FashionIQ caption, modification, image-split and metadata files."""
    for (category, split), records in captions.items():
        dump_json(fiq / "captions" / f"cap.{category}.{split}.json", records, indent=4)
        dump_json(
            fiq / "metadata" / f"modifications.{category}.{split}.json", mods[category, split]
        )
    for category in FIQ_CATEGORIES:
        for split in FIQ_SPLITS:
            names = [im.name for im in images if im.kind[4:] == category and im.split == split]
            dump_json(fiq / "image_splits" / f"split.{category}.{split}.json", names, indent=4)
    dump_json(
        fiq / "metadata" / "images.json",
        _metadata(images, lambda im: {"category": im.kind[4:], "split": im.split}),
        sort_keys=True,
        indent=None,
    )


def _write_cirr(
    cirr: Path,
    images: Sequence[PlannedImage],
    split_files: Mapping[str, dict[str, str]],
    captions: Mapping[str, list[dict]],
    mods: Mapping[str, list[dict]],
) -> None:
    """The CIRR caption, image-split, modification and metadata files."""
    for split in CIRR_SPLITS:
        dump_json(cirr / "captions" / f"cap.rc2.{split}.json", captions[split], indent=4)
        dump_json(cirr / "image_splits" / f"split.rc2.{split}.json", split_files[split], indent=4)
        dump_json(cirr / "metadata" / f"modifications.rc2.{split}.json", mods[split])
    dump_json(
        cirr / "metadata" / "images.json",
        _metadata(images, lambda im: {"split": im.split}),
        sort_keys=True,
        indent=None,
    )


def _pool_extra(im: PlannedImage) -> dict[str, Any]:
    if im.kind == "cirr":
        return {"dataset": "cirr"}
    return {"dataset": "fashioniq", "category": im.kind[4:]}


def _write_pool(pool: Path, images: Sequence[PlannedImage]) -> None:
    """The pool's metadata (dataset and category of every image)."""
    dump_json(
        pool / "metadata" / "images.json",
        _metadata(images, _pool_extra),
        sort_keys=True,
        indent=None,
    )


def _summary(
    seed: int,
    size: str,
    spec: SizeSpec,
    fiq_caps: Mapping[tuple[str, str], list[dict]],
    cirr_splits: Mapping[str, dict[str, str]],
    cirr_caps: Mapping[str, list[dict]],
    pool_images: Sequence[PlannedImage],
) -> dict[str, Any]:
    """The ``synthetic.json`` summary, without the CIRCO part."""
    return {
        "generator": GENERATOR_ID,
        "version": GENERATOR_VERSION,
        "seed": seed,
        "size": size,
        "spec": spec.as_dict(),
        "counts": {
            "fashioniq": {
                c: {
                    s: {"images": spec.fiq_images[s], "triplets": len(fiq_caps[c, s])}
                    for s in FIQ_SPLITS
                }
                for c in FIQ_CATEGORIES
            },
            "cirr": {
                s: {
                    "images": len(cirr_splits[s]),
                    "queries": len(cirr_caps[s]),
                    "img_sets": len({r["img_set"]["id"] for r in cirr_caps[s]}),
                }
                for s in CIRR_SPLITS
            },
            "pool": {
                "fashioniq": {
                    c: sum(1 for im in pool_images if im.kind == f"fiq-{c}") for c in FIQ_CATEGORIES
                },
                "cirr": sum(1 for im in pool_images if im.kind == "cirr"),
            },
        },
        "vocabularies": vocabularies(),
        "layout": {
            "fashioniq": "official FashionIQ layout; images/<name>.png",
            "cirr": "official CIRR layout; train/<k>/, dev/, test1/",
            "pool": "pool/images/<name>.png; pool/metadata/images.json gives dataset and category",
            "modifications": "metadata/modifications.*.json: one record per caption record",
        },
    }


def _render_pngs(
    images: Sequence[tuple[Path, PlannedImage]], seed: int, size: str, progress: bool
) -> None:
    """Render and save every (dataset folder, image) as PNG, each with its own jitter."""
    for folder in sorted({str((root / im.path).parent) for root, im in images}):
        Path(folder).mkdir(parents=True, exist_ok=True)
    for root, im in tqdm(
        images, desc=f"synthetic {size}: images", disable=not progress, unit="img", leave=False
    ):
        picture = render(
            im.kind, im.attributes, im.width, im.height, seeded_rng(seed, "render", im.name)
        )
        picture.save(root / im.path, format="PNG", optimize=False, compress_level=6)


# --------------------------------------------------------------------------- CIRCO


def _prepare_circo(folder: Path) -> None:
    """Clear an earlier output of ``generate_circo``; refuse any other non-empty folder."""
    if not folder.exists():
        return
    if not any(folder.iterdir()):
        return
    ours = (folder / _CIRCO_IN_PROGRESS).exists() or (folder / "metadata" / _CIRCO_MARKER).is_file()
    if not ours:
        raise FileExistsError(
            f"{folder}: not empty and not a synthetic CIRCO folder; choose another output"
        )
    shutil.rmtree(folder)


def generate_circo(
    out: str | Path, *, seed: int = 0, size: str = "default", progress: bool = True
) -> dict[str, Any]:
    """Write the synthetic CIRCO set to ``out/circo/`` and return its summary.

    ``out/circo`` must be absent, empty, or an earlier output of this function (replaced).
    ``metadata/synthetic_circo.json`` is written last and marks a complete set.
    """
    if size not in CIRCO_SIZES:
        raise ValueError(f"unknown size {size!r}; expected one of {sorted(CIRCO_SIZES)}")
    spec = CIRCO_SIZES[size]
    folder = Path(out) / "circo"
    _prepare_circo(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / _CIRCO_IN_PROGRESS).write_text(f"seed={seed} size={size}\n", encoding="utf-8")

    values = circo_values(size)
    images = plan_circo_images(seed, spec, values)
    queries = plan_circo_queries(seed, spec, images, values)
    for split in CIRCO_SPLITS:
        records = [circo_annotation(q, i, split) for i, q in enumerate(queries[split])]
        dump_json(folder / "annotations" / f"{split}.json", records, indent=4)
        sidecar = [circo_sidecar(q, i) for i, q in enumerate(queries[split])]
        dump_json(folder / "metadata" / f"queries.{split}.json", sidecar, indent=2)
    _write_circo_gallery(folder, images, seed, size)
    _render_jpegs(folder / COCO_FOLDER / IMAGE_FOLDER, images, seed, size, progress)

    summary = _circo_summary(seed, size, spec, values, images, queries)
    dump_json(folder / "metadata" / _CIRCO_MARKER, summary, indent=2, sort_keys=True)
    (folder / _CIRCO_IN_PROGRESS).unlink()
    return summary


def _write_circo_gallery(folder: Path, images: Sequence[CircoImage], seed: int, size: str) -> None:
    """The COCO-style gallery index and the per-image metadata."""
    info = {
        "info": {
            "description": "cirbench synthetic CIRCO gallery (COCO 2017 unlabeled layout)",
            "generator": CIRCO_GENERATOR_ID,
            "seed": seed,
            "size": size,
        },
        "licenses": [],
        "images": [
            {
                "file_name": image_file_name(im.img_id),
                "height": im.height,
                "width": im.width,
                "id": im.img_id,
            }
            for im in images
        ],
        "categories": [],
    }
    dump_json(folder / COCO_FOLDER / "annotations" / IMAGE_INFO, info, indent=None)
    dump_json(
        folder / "metadata" / "images.json",
        {
            str(im.img_id): {
                "attributes": im.attributes,
                "description": describe(im.attributes),
                "width": im.width,
                "height": im.height,
            }
            for im in images
        },
        indent=None,
        sort_keys=True,
    )


def _render_jpegs(
    image_dir: Path, images: Sequence[CircoImage], seed: int, size: str, progress: bool
) -> None:
    """Render and save the CIRCO gallery as JPEGs with fixed settings."""
    image_dir.mkdir(parents=True, exist_ok=True)
    for im in tqdm(
        images, desc=f"synthetic {size}: CIRCO images", disable=not progress, leave=False
    ):
        picture = render(
            CIRCO_IMAGE_KIND,
            im.attributes,
            im.width,
            im.height,
            seeded_rng(seed, "circo", "render", im.img_id),
        )
        picture.save(
            image_dir / image_file_name(im.img_id),
            format="JPEG",
            quality=JPEG_QUALITY,
            optimize=False,
            progressive=False,
            subsampling=0,
        )


def _circo_summary(
    seed: int,
    size: str,
    spec: CircoSize,
    values: Mapping[str, Sequence[str]],
    images: Sequence[CircoImage],
    queries: Mapping[str, list[dict[str, Any]]],
) -> dict[str, Any]:
    """The ``metadata/synthetic_circo.json`` summary."""
    gts = [len(q["gts"]) for split in CIRCO_SPLITS for q in queries[split]]
    return {
        "generator": CIRCO_GENERATOR_ID,
        "seed": seed,
        "size": size,
        "spec": spec.as_dict(),
        "values": {a: list(v) for a, v in values.items()},
        "counts": {
            "images": len(images),
            **{
                split: {
                    "queries": len(queries[split]),
                    "gts": sum(len(q["gts"]) for q in queries[split]),
                }
                for split in CIRCO_SPLITS
            },
            "min_gts": min(gts),
            "max_gts": max(gts),
        },
    }
