"""CIRR reader for the official layout.

::

    captions/cap.rc2.{train,val,test1}.json   [{"pairid", "reference", "target_hard",
                                                "target_soft", "caption", "img_set": {"id",
                                                "members", "reference_rank", "target_rank"}}]
    image_splits/split.rc2.{train,val,test1}.json   {"<name>": "./dev/<name>.png", ...}

``root`` may be the folder holding ``captions/`` and ``image_splits/`` (image paths are
then relative to it), or the official ``cirr_dataset/`` folder whose annotations sit in
``cirr/`` and whose images (``train/``, ``dev/``, ``test1/``) sit beside it. test1
records have no ``target_hard``, ``target_soft`` nor ``img_set.target_rank``.
Generated triplets live next to the official files as
``captions/cap.rc2.train.extend_<name>.json``.
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

SPLITS = ("train", "val", "test1")
NO_TARGET_SPLITS = ("test1",)


def annotation_root(root: str | Path) -> Path:
    """The folder holding ``captions/`` and ``image_splits/`` (``root`` or ``root/cirr``)."""
    root = Path(root)
    nested = root / "cirr"
    if not (root / "image_splits").is_dir() and (nested / "image_splits").is_dir():
        return nested
    return root


def caption_file(root: str | Path, split: str) -> Path:
    return annotation_root(root) / "captions" / f"cap.rc2.{split}.json"


def split_file(root: str | Path, split: str) -> Path:
    return annotation_root(root) / "image_splits" / f"split.rc2.{split}.json"


def load_cirr_split(
    root: str | Path,
    split: str,
    *,
    images: bool = True,
    strict: bool = True,
    image_root: str | Path | None = None,
    captions_file: str | None = None,
) -> CIRSplit:
    """Read one CIRR split.

    ``images=False`` reads annotations only; ``strict`` raises on the first problem, a
    lenient read records findings and skips bad records. ``image_root`` overrides the
    folder the split file's relative paths resolve against (default ``root``).
    ``captions_file`` reads another caption file from ``captions/``, e.g.
    ``"cap.rc2.train.extend_llava.json"``.
    """
    root = Path(root)
    image_root = Path(image_root) if image_root is not None else root
    log = FindingLog(strict)

    gallery_path = split_file(root, split)
    image_paths = _read_split_mapping(log, gallery_path, image_root)
    missing: set[str] = set()
    if images:
        missing = check_images_on_disk(log, gallery_path, image_paths, None)

    cap_path = (
        annotation_root(root) / "captions" / captions_file
        if captions_file
        else caption_file(root, split)
    )
    has_targets = split not in NO_TARGET_SPLITS
    queries = _read_queries(log, cap_path, split, has_targets, set(image_paths), missing)
    gallery = [name for name in image_paths if name not in missing]
    image_paths = {name: image_paths[name] for name in gallery}
    return CIRSplit("cirr", split, None, queries, gallery, image_paths, log.findings)


def _read_split_mapping(log: FindingLog, path: Path, image_root: Path) -> dict[str, Path]:
    mapping = read_json_logged(log, path)
    if mapping is None:
        return {}
    if not isinstance(mapping, dict):
        log.error(path, f"expected a JSON object name -> path, got {type(mapping).__name__}")
        return {}
    paths: dict[str, Path] = {}
    for name, relative in mapping.items():
        if not isinstance(relative, str) or not relative:
            log.error(path, f"expected a relative image path, got {relative!r:.60}", record=name)
            continue
        paths[name] = Path(os.path.normpath(image_root / relative))
    return paths


def _read_queries(
    log: FindingLog,
    path: Path,
    split: str,
    has_targets: bool,
    gallery: set[str],
    missing_images: set[str],
) -> list[Query]:
    split_name = f"split.rc2.{split}.json"
    queries: list[Query] = []
    seen_pairids: set[int] = set()
    soft_disagrees = 0
    skipped_for_images = 0
    for index, record in iter_records(log, path):
        ok = check_field(log, path, index, record, "pairid", int)
        ok &= check_field(log, path, index, record, "reference", str)
        ok &= check_field(log, path, index, record, "caption", str)
        ok &= check_field(log, path, index, record, "img_set", dict)
        ok &= check_field(log, path, index, record, "target_hard", str, required=has_targets)
        ok &= check_field(log, path, index, record, "target_soft", dict, required=has_targets)
        if not ok:
            continue
        img_set = record["img_set"]
        ok = check_field(log, path, index, img_set, "id", int, field_prefix="img_set.")
        ok &= check_field(log, path, index, img_set, "members", list, field_prefix="img_set.")
        ok &= check_field(log, path, index, img_set, "reference_rank", int, field_prefix="img_set.")
        ok &= check_field(
            log,
            path,
            index,
            img_set,
            "target_rank",
            int,
            required=has_targets,
            field_prefix="img_set.",
        )
        if not ok:
            continue
        pairid = record["pairid"]
        if pairid in seen_pairids:
            log.error(path, f"duplicate pairid {pairid}", record=index, field="pairid")
            continue
        members = img_set["members"]
        if not all(isinstance(m, str) for m in members):
            log.error(path, "expected a list of image names", record=index, field="img_set.members")
            continue
        reference, target = record["reference"], record.get("target_hard")
        names = [("reference", reference), ("target_hard", target)]
        names += [("img_set.members", m) for m in members]
        absent = [(field, n) for field, n in names if n is not None and n not in gallery]
        if absent:
            field, name = absent[0]
            log.error(path, f"image {name!r} is not in {split_name}", record=index, field=field)
            continue
        if reference not in members:
            log.error(
                path,
                f"reference {reference!r} is not among the img_set members",
                record=index,
                field="img_set.members",
            )
            continue
        soft = record.get("target_soft")
        if soft is not None and not all(
            isinstance(k, str) and isinstance(v, int | float) for k, v in soft.items()
        ):
            log.error(path, "expected name -> number", record=index, field="target_soft")
            continue
        if soft is not None and soft.get(target) != 1.0:
            soft_disagrees += 1
        if {reference, target, *members} & missing_images:
            skipped_for_images += 1
            continue
        seen_pairids.add(pairid)
        queries.append(
            Query(
                query_id=str(pairid),
                index=index,
                reference=reference,
                target=target,
                captions=(record["caption"],),
                group=tuple(members),
                soft_targets=dict(soft) if soft is not None else None,
            )
        )
    if soft_disagrees:
        log.warning(
            path,
            f"{soft_disagrees} queries whose target_hard is not a soft target of weight 1.0 "
            "(known CIRR quirk; target_hard is scored by default)",
            field="target_soft",
            count=soft_disagrees,
        )
    if skipped_for_images:
        log.warning(
            path,
            f"{skipped_for_images} queries skipped: an image they use is missing on disk",
            count=skipped_for_images,
        )
    return queries
