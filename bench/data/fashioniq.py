"""FashionIQ reader for the official layout.

::

    root/captions/cap.{category}.{split}.json     [{"candidate", "target", "captions": [c1, c2]}]
    root/image_splits/split.{category}.{split}.json   ["B00...", ...]
    root/images/<name>.<ext>

The test split has no ``target``. Generated triplets (positive scaling) live next to the
official files as ``captions/cap.extend_<name>.train.json``.
"""

from __future__ import annotations

import os
from pathlib import Path

from bench.data.records import CIRSplit, Query
from bench.data.validation import (
    FindingLog,
    check_field,
    check_images_on_disk,
    iter_records,
    read_json_logged,
)

CATEGORIES = ("dress", "shirt", "toptee")
SPLITS = ("train", "val", "test")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp")


def caption_file(root: Path, category: str, split: str) -> Path:
    return Path(root) / "captions" / f"cap.{category}.{split}.json"


def split_file(root: Path, category: str, split: str) -> Path:
    return Path(root) / "image_splits" / f"split.{category}.{split}.json"


def fashioniq_query_text(captions: tuple[str, ...] | list[str]) -> str:
    """The query text CLIP4Cir evaluates with: "<First> and <second>".

    Each caption is stripped of surrounding blanks and trailing ``.``/``?`` and the
    first one is capitalised, as in the official code; empty captions (a known quirk,
    16 in the real files) drop out of the join instead of leaving a dangling "and".
    """
    parts = [c.strip().rstrip(".?").strip() for c in captions]
    parts = [p for p in parts if p]
    if not parts:
        return ""
    parts[0] = parts[0][:1].upper() + parts[0][1:]
    return " and ".join(parts)


def _index_images(images_dir: Path) -> dict[str, Path]:
    """Map image stem -> file for every image in ``images_dir`` (one directory listing)."""
    found: dict[str, Path] = {}
    if not images_dir.is_dir():
        return found
    with os.scandir(images_dir) as entries:
        for entry in entries:
            stem, ext = os.path.splitext(entry.name)
            if ext.lower() in IMAGE_EXTENSIONS and stem not in found:
                found[stem] = Path(entry.path)
    return found


def load_fashioniq_split(
    root: str | Path,
    category: str,
    split: str,
    *,
    images: bool = True,
    strict: bool = True,
    captions_file: str | None = None,
) -> CIRSplit:
    """Read one FashionIQ category/split.

    ``images=False`` reads annotations only (no image files expected on disk).
    ``strict=True`` raises :class:`bench.core.errors.DataFormatError` on the first problem;
    ``strict=False`` records findings in ``CIRSplit.findings`` and skips bad records.
    ``captions_file`` reads another caption file of the same layout from ``captions/``,
    e.g. ``"cap.extend_llava.train.json"`` (generated triplets).
    """
    root = Path(root)
    if category not in CATEGORIES:
        raise ValueError(f"unknown FashionIQ category {category!r}; expected one of {CATEGORIES}")
    log = FindingLog(strict)

    gallery_file = split_file(root, category, split)
    gallery = _read_gallery(log, gallery_file)
    image_index = _index_images(root / "images") if images else {}
    image_paths = {name: image_index.get(name, root / "images" / f"{name}.png") for name in gallery}
    missing: set[str] = set()
    if images:
        missing = check_images_on_disk(log, gallery_file, image_paths, image_index.values())

    cap_file = (
        root / "captions" / captions_file if captions_file else caption_file(root, category, split)
    )
    queries = _read_queries(log, cap_file, category, split, set(gallery), missing)
    gallery = [name for name in gallery if name not in missing]
    image_paths = {name: image_paths[name] for name in gallery}
    return CIRSplit("fashioniq", split, category, queries, gallery, image_paths, log.findings)


def _read_gallery(log: FindingLog, path: Path) -> list[str]:
    names = read_json_logged(log, path)
    if names is None:
        return []
    if not isinstance(names, list):
        log.error(path, f"expected a JSON list of image names, got {type(names).__name__}")
        return []
    gallery: list[str] = []
    seen: set[str] = set()
    for index, name in enumerate(names):
        if not isinstance(name, str) or not name:
            log.error(path, f"expected a non-empty image name, got {name!r:.60}", record=index)
        elif name in seen:
            log.error(path, f"duplicate image name {name!r}", record=index)
        else:
            seen.add(name)
            gallery.append(name)
    return gallery


def _read_queries(
    log: FindingLog,
    path: Path,
    category: str,
    split: str,
    gallery: set[str],
    missing_images: set[str],
) -> list[Query]:
    needs_target = split != "test"
    queries: list[Query] = []
    empty_captions = 0
    skipped_for_images = 0
    for index, record in iter_records(log, path):
        ok = check_field(log, path, index, record, "candidate", str)
        ok &= check_field(log, path, index, record, "target", str, required=needs_target)
        ok &= check_field(log, path, index, record, "captions", list)
        if not ok:
            continue
        captions = record["captions"]
        if len(captions) != 2 or not all(isinstance(c, str) for c in captions):
            log.error(
                path,
                f"expected a list of 2 strings, got {captions!r:.80}",
                record=index,
                field="captions",
            )
            continue
        empty_captions += sum(1 for c in captions if not c.strip())
        reference, target = record["candidate"], record.get("target")
        bad_ref = False
        for field, name in (("candidate", reference), ("target", target)):
            if name is not None and name not in gallery:
                log.error(
                    path,
                    f"image {name!r} is not in split.{category}.{split}.json",
                    record=index,
                    field=field,
                )
                bad_ref = True
        if bad_ref:
            continue
        if reference in missing_images or target in missing_images:
            skipped_for_images += 1
            continue
        queries.append(
            Query(
                query_id=f"{category}-{split}-{index}",
                index=index,
                reference=reference,
                target=target,
                captions=(captions[0], captions[1]),
            )
        )
    if empty_captions:
        log.warning(
            path,
            f"{empty_captions} empty caption strings (known FashionIQ quirk; kept)",
            field="captions",
            count=empty_captions,
        )
    if skipped_for_images:
        log.warning(
            path,
            f"{skipped_for_images} queries skipped: their reference or target image is missing",
            count=skipped_for_images,
        )
    return queries
