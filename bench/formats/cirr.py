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
:class:`CirrFormat` is the format object (R@K with the reference removed, Rsubset@K within
the img_set, Rmean = (R@5 + Rsubset@1) / 2; ``hard`` or ``soft`` targets).

Generated triplets live next to the official files::

    captions/cap.rc2.train.extend_<name>.json      {"pairid", "reference", "target_hard",
        "target_soft": {target: 1.0}, "caption", "img_set": {"id", "members": [reference,
        target], "reference_rank": 0, "target_rank": 1}, "caption1", "caption2"}
    captions/cap.rc2.train.extend_<name>.provenance.json

``pairid`` and ``img_set.id`` continue after the largest ones of the official files, so they
never collide with human ones (SPN writes ``pairid: 0`` and ``members: ["xxx"]``, which the
official layout does not allow). Images of an out-of-domain pool are placed in
``extend_<name>/<name><ext>`` and listed in ``image_splits/split.rc2.train.extend_<name>.json``
(name -> relative path): the reader then reads them as a split of their own
(``load_cirr_split(root, "train.extend_<name>")``). :func:`write_generated_cirr_records` /
:func:`read_generated_cirr_records` are shared with CIRCO, which stores the same records.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bench.core.errors import DataFormatError
from bench.core.reading import read_json
from bench.formats.base import DatasetFormat, EvalOptions, ImageSizes, SplitFiles, register_format
from bench.formats.generated import load_records, record_field, write_records
from bench.formats.records import CIRSplit, GeneratedTriplet, Query
from bench.formats.validation import (
    DuplicateQueries,
    FindingLog,
    blank_text_warning,
    check_field,
    check_images_on_disk,
    iter_records,
    read_json_logged,
)
from bench.metrics import (
    QueryValues,
    check_cirr_submission,
    cirr_query_values,
    cirr_query_values_from_features,
    cirr_submission_from_scores,
    max_similarity,
    subset_topk_names,
    topk_names,
    with_cirr_rmean,
    write_cirr_submission,
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
    if not mapping:
        log.error(path, "the file lists no images (an empty object)")
    paths: dict[str, Path] = {}
    base = os.path.normpath(image_root)
    for name, relative in mapping.items():
        if not isinstance(relative, str) or not relative:
            log.error(path, f"expected a relative image path, got {relative!r:.60}", record=name)
            continue
        resolved = os.path.normpath(os.path.join(base, relative))
        if os.path.isabs(relative) or os.path.commonpath([base, resolved]) != base:
            log.error(
                path,
                f"image path {relative!r:.80} leaves the dataset root {base}",
                record=name,
            )
            continue
        paths[name] = Path(resolved)
    return paths


class _QueryChecker:
    """The per-record checks of one CIRR caption file, and what they count over it."""

    def __init__(
        self,
        log: FindingLog,
        path: Path,
        split: str,
        has_targets: bool,
        gallery: set[str],
        missing_images: set[str],
    ) -> None:
        self.log = log
        self.path = path
        self.split_name = f"split.rc2.{split}.json"
        self.has_targets = has_targets
        self.gallery = gallery
        self.missing_images = missing_images
        self.seen_pairids: set[int] = set()
        self.duplicates = DuplicateQueries(log, path)
        self.blank: list[int] = []
        self.soft_disagrees = 0
        self.skipped_for_images = 0

    def _fields_ok(self, index: int, record: dict[str, Any]) -> bool:
        """Whether the record's fields and its img_set's have their types (logs those that
        do not; the img_set is checked only when the record's fields are fine)."""
        log, path, has_targets = self.log, self.path, self.has_targets
        ok = check_field(log, path, index, record, "pairid", int)
        ok &= check_field(log, path, index, record, "reference", str)
        ok &= check_field(log, path, index, record, "caption", str)
        ok &= check_field(log, path, index, record, "img_set", dict)
        ok &= check_field(log, path, index, record, "target_hard", str, required=has_targets)
        ok &= check_field(log, path, index, record, "target_soft", dict, required=has_targets)
        if not ok:
            return False
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
        return ok

    def check(self, index: int, record: dict[str, Any]) -> Query | None:
        """The query of one record, or None after logging why it is skipped."""
        log, path = self.log, self.path
        if not self._fields_ok(index, record):
            return None
        pairid = record["pairid"]
        if pairid in self.seen_pairids:
            log.error(path, f"duplicate pairid {pairid}", record=index, field="pairid")
            return None
        members = record["img_set"]["members"]
        if not all(isinstance(m, str) for m in members):
            log.error(path, "expected a list of image names", record=index, field="img_set.members")
            return None
        reference, target = record["reference"], record.get("target_hard")
        names = [("reference", reference), ("target_hard", target)]
        names += [("img_set.members", m) for m in members]
        absent = [(field, n) for field, n in names if n is not None and n not in self.gallery]
        if absent:
            field, name = absent[0]
            message = f"image {name!r} is not in {self.split_name}"
            log.error(path, message, record=index, field=field)
            return None
        for role, name in (("reference", reference), ("target_hard", target)):
            if name is not None and name not in members:
                log.error(
                    path,
                    f"{role} {name!r} is not among the img_set members",
                    record=index,
                    field="img_set.members",
                )
                return None
        soft = record.get("target_soft")
        if soft is not None and not all(
            isinstance(k, str) and isinstance(v, int | float) and not isinstance(v, bool)
            for k, v in soft.items()
        ):
            log.error(path, "expected name -> number", record=index, field="target_soft")
            return None
        outside = [k for k in soft or {} if k not in self.gallery]
        if outside:
            message = f"soft target {outside[0]!r} is not in {self.split_name}"
            log.error(path, message, record=index, field="target_soft")
            return None
        if not record["caption"].strip():
            self.blank.append(index)
        if self.duplicates.seen(index, reference, target, (record["caption"],)):
            return None
        if soft is not None and soft.get(target) != 1.0:
            self.soft_disagrees += 1
        if {reference, target, *members} & self.missing_images:
            self.skipped_for_images += 1
            return None
        self.seen_pairids.add(pairid)
        return Query(
            query_id=str(pairid),
            index=index,
            reference=reference,
            target=target,
            captions=(record["caption"],),
            group=tuple(members),
            soft_targets=dict(soft) if soft is not None else None,
        )

    def summarize(self) -> None:
        """Log what the checks counted over the file as warnings."""
        blank_text_warning(self.log, self.path, self.blank, "caption")
        self.duplicates.summarize()
        if self.soft_disagrees:
            self.log.warning(
                self.path,
                f"{self.soft_disagrees} queries whose target_hard is not a soft target of weight "
                "1.0 (known CIRR quirk; target_hard is scored by default)",
                field="target_soft",
                count=self.soft_disagrees,
            )
        if self.skipped_for_images:
            self.log.warning(
                self.path,
                f"{self.skipped_for_images} queries skipped: an image they use is missing on disk",
                count=self.skipped_for_images,
            )


def _read_queries(
    log: FindingLog,
    path: Path,
    split: str,
    has_targets: bool,
    gallery: set[str],
    missing_images: set[str],
) -> list[Query]:
    checker = _QueryChecker(log, path, split, has_targets, gallery, missing_images)
    queries: list[Query] = []
    for index, record in iter_records(log, path):
        query = checker.check(index, record)
        if query is not None:
            queries.append(query)
    checker.summarize()
    return queries


# ----------------------------------------------------------------------------- generated sets


def _official_max(captions_dir: Path) -> tuple[int, int]:
    """Largest pairid and img_set id in the official CIRR caption files (0 when absent)."""
    pairid = set_id = 0
    for split in SPLITS:
        path = captions_dir / f"cap.rc2.{split}.json"
        if not path.is_file():
            continue
        records = read_json(path)
        for record in records if isinstance(records, list) else []:
            if isinstance(record, dict):
                if isinstance(record.get("pairid"), int):
                    pairid = max(pairid, record["pairid"])
                img_set = record.get("img_set")
                if isinstance(img_set, dict) and isinstance(img_set.get("id"), int):
                    set_id = max(set_id, img_set["id"])
    return pairid, set_id


def generated_caption_name(name: str) -> str:
    return f"cap.rc2.train.extend_{name}.json"


def generated_split_name(name: str) -> str:
    return f"split.rc2.train.extend_{name}.json"


def write_generated_cirr_records(
    root: Path,
    captions_dir: Path,
    splits_dir: Path,
    name: str,
    triplets: Sequence[GeneratedTriplet],
    outside_images: Mapping[str, Path],
    place: Callable[[Path, Path], bool],
) -> tuple[dict[str, Path], int]:
    """CIRR caption records of generated triplets (see the module docstring)."""
    max_pairid, max_set = _official_max(captions_dir)
    records = [
        {
            "pairid": max_pairid + 1 + i,
            "reference": t.reference,
            "target_hard": t.target,
            "target_soft": {t.target: 1.0},
            "caption": t.text,
            "img_set": {
                "id": max_set + 1 + i,
                "members": [t.reference, t.target],
                "reference_rank": 0,
                "target_rank": 1,
            },
            "caption1": t.reference_caption,
            "caption2": t.target_caption,
        }
        for i, t in enumerate(triplets)
    ]
    path = captions_dir / generated_caption_name(name)
    write_records(path, records)
    files, placed = {"captions": path}, 0
    if outside_images:
        folder = f"extend_{name}"
        mapping = {}
        for image, source in sorted(outside_images.items()):
            file_name = f"{image}{Path(source).suffix}"
            placed += place(Path(source), root / folder / file_name)
            mapping[image] = f"./{folder}/{file_name}"
        used = {n for t in triplets for n in (t.reference, t.target)}
        missing = sorted(used - set(mapping))
        if missing:
            raise ValueError(
                f"no image file for {len(missing)} generated images, e.g. {missing[:3]}"
            )
        path = splits_dir / generated_split_name(name)
        write_records(path, {n: mapping[n] for n in sorted(used)}, indent=2)
        files["image_split"] = path
    return files, placed


def _generated_triplet(path: Path, index: int, record: Any, name: str) -> GeneratedTriplet:
    reference = record_field(path, index, record, "reference", str)
    target = record_field(path, index, record, "target_hard", str)
    text = record.get("caption")
    if isinstance(text, list):  # the SPN authors' own files hold a list of texts
        text = text[0] if text and all(isinstance(c, str) for c in text) else None
    if not isinstance(text, str):
        raise DataFormatError(path, "expected a string", record=index, field="caption")
    return GeneratedTriplet(
        reference,
        target,
        text,
        f"extend_{name}",
        None,
        text,
        str(record.get("caption1", "")),
        str(record.get("caption2", "")),
    )


def read_generated_cirr_records(
    root: Path, captions_dir: Path, splits_dir: Path, name: str
) -> tuple[list[GeneratedTriplet], dict[str, Path]]:
    """The triplets of a CIRR-record generated set and their images' paths (from the
    official train split and the set's own split file)."""
    path = captions_dir / generated_caption_name(name)
    triplets = [
        _generated_triplet(path, i, record, name) for i, record in enumerate(load_records(path))
    ]
    paths: dict[str, Path] = {}
    for split_path in (
        splits_dir / "split.rc2.train.json",
        splits_dir / generated_split_name(name),
    ):
        if split_path.is_file():
            mapping = read_json(split_path)
            if not isinstance(mapping, dict):
                raise DataFormatError(split_path, "expected a JSON object name -> path")
            for image, relative in mapping.items():
                paths[image] = Path(os.path.normpath(root / relative))
    return triplets, paths


# ----------------------------------------------------------------------------- the format


@register_format
class CirrFormat(DatasetFormat):
    """CIRR (Liu et al., ICCV 2021): real-life images, img_sets of six similar images."""

    name = "cirr"
    title = "CIRR"
    order = 1
    splits = SPLITS
    headline_metric = "Rmean"
    report_columns = ("R@1", "R@5", "R@10", "R@50", "Rsubset@1", "Rsubset@2", "Rsubset@3", "Rmean")
    synthetic_pool_kind = "cirr"
    reference_folders = ("cirr_dataset", "cirr", "CIRR")
    #: NLVR2's web photos: mostly landscape, of varied sizes
    image_sizes = ImageSizes((300, 1200), ((0.7, 1.2, 1.8), (0.2, 0.9, 1.1), (0.1, 0.6, 0.8)))

    def annotation_folder(self, root: Path) -> Path:
        """``cirr_dataset/cirr/``: captions and image splits beside the image folders."""
        return root / "cirr"

    def load_split(
        self,
        root: Path,
        split: str,
        group: str | None = None,
        *,
        images: bool = True,
        strict: bool = True,
    ) -> CIRSplit:
        return load_cirr_split(root, split, images=images, strict=strict)

    def split_files(self, root: Path) -> list[SplitFiles]:
        return [SplitFiles(None, s, caption_file(root, s), split_file(root, s)) for s in SPLITS]

    def train_image_paths(self, root: Path) -> dict[str, Path]:
        path = split_file(root, "train")
        if not path.is_file():
            return {}
        return {n: root / p for n, p in read_json(path).items()}

    def protocol_name(self, options: EvalOptions) -> str:
        return f"{options.targets}_targets"  # the reference always removed

    def split_query_values(
        self,
        split: CIRSplit,
        queries: np.ndarray,
        gallery: np.ndarray,
        options: EvalOptions,
        rows: Callable[[Sequence[str]], np.ndarray],
    ) -> QueryValues:
        """Hits at R@1/5/10/50 and Rsubset@1/2/3 against ``target_hard`` (``options.targets
        == "soft"``: any soft target of weight 1.0, the hard one when none has)."""
        targets: list[str | list[str]] = [
            [n for n, w in (q.soft_targets or {}).items() if w == 1.0] or [q.target]
            if options.targets == "soft"
            else q.target
            for q in split.queries
        ]
        refs = [q.reference for q in split.queries]
        groups = [list(q.group) for q in split.queries]
        ids = [q.query_id for q in split.queries]
        if gallery.ndim == 3:  # token sets scored by their best token (SPRC)
            scores = max_similarity(queries, gallery)
            return QueryValues.of(
                ids, cirr_query_values(scores, split.gallery, refs, targets, groups)
            )
        values = cirr_query_values_from_features(
            queries, gallery, split.gallery, refs, targets, groups
        )
        return QueryValues.of(ids, values)

    def group_metrics(self, means: Mapping[str, Any]) -> dict[str, Any]:
        """The recalls and Rmean = (R@5 + Rsubset@1) / 2."""
        return with_cirr_rmean(means)

    def write_submission(
        self, split: CIRSplit, queries: np.ndarray, gallery: np.ndarray, out_dir: Path, name: str
    ) -> list[Path]:
        """The CIRR server's ``recall`` (top 50) and ``recall_subset`` (top 3 within the
        img_set) files, the reference excluded from both rankings."""
        refs = [q.reference for q in split.queries]
        groups = [list(q.group) for q in split.queries]
        pair_ids = [int(q.query_id) for q in split.queries]
        if gallery.ndim == 3:  # token sets scored by their best token (SPRC)
            scores = max_similarity(queries, gallery)
            top50, top3 = cirr_submission_from_scores(scores, split.gallery, pair_ids, refs, groups)
        else:
            top50 = topk_names(queries, gallery, split.gallery, 50, refs)
            top3 = subset_topk_names(queries, gallery, split.gallery, refs, groups, 3)
        paths = write_cirr_submission(out_dir, pair_ids, top50, top3, name=name)
        for path in paths:
            check_cirr_submission(path, expected_pair_ids=pair_ids, gallery_names=split.gallery)
        return list(paths)

    def generated_captions_dir(self, root: Path) -> Path:
        return annotation_root(root) / "captions"

    def generated_caption_name(self, name: str, group: str | None = None) -> str:
        return generated_caption_name(name)

    def write_generated_records(
        self,
        root: Path,
        name: str,
        triplets: Sequence[GeneratedTriplet],
        outside_images: Mapping[str, Path],
        place: Callable[[Path, Path], bool],
    ) -> tuple[dict[str, Path], int]:
        captions_dir = self.generated_captions_dir(root)
        splits_dir = annotation_root(root) / "image_splits"
        return write_generated_cirr_records(
            root, captions_dir, splits_dir, name, triplets, outside_images, place
        )

    def read_generated_records(
        self, root: Path, name: str
    ) -> tuple[list[GeneratedTriplet], dict[str, Path]]:
        splits_dir = annotation_root(root) / "image_splits"
        return read_generated_cirr_records(
            root, self.generated_captions_dir(root), splits_dir, name
        )
