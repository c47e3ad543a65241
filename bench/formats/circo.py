"""CIRCO reader for the official layout (github.com/miccunifi/CIRCO).

::

    root/annotations/{val,test}.json   [{"id", "reference_img_id", "relative_caption",
                                         "shared_concept", "target_img_id", "gt_img_ids",
                                         "semantic_aspects"}]  (test: no target / gts / aspects)
    root/COCO2017_unlabeled/annotations/image_info_unlabeled2017.json   {"images": [{"id",
                                                                        "file_name", ...}]}
    root/COCO2017_unlabeled/unlabeled2017/<id:012d>.jpg

Both splits rank the same gallery: the whole COCO 2017 unlabeled set (123,403 images).
Image names are the COCO ids as decimal strings without padding (``"355099"``), as the
official ``CIRCODataset`` names them (``str(img_id)``) and as a submission lists them
(ints). ``Query.target`` is ``target_img_id``, ``Query.targets`` all of ``gt_img_ids``
(target first), ``Query.captions`` ``(relative_caption,)``, ``Query.query_id`` ``str(id)``.

Gallery, in this order of preference:

* the image index ``image_info_unlabeled2017.json`` when present (its order, its
  ``file_name``; the official code ranks exactly these images), with ``images=True``
  checked against one listing of ``unlabeled2017/``;
* otherwise, with ``images=True``, every ``<12 digits>.jpg`` in ``unlabeled2017/``
  (listed once, sorted by id);
* otherwise (``images=False`` and no index) EMPTY: the gallery is unknown, nothing is
  checked against it (``cirbench data stats`` then reports the images as ``-``).

Known quirks and their severity: a ``target_img_id`` missing from ``gt_img_ids`` is an
error (the mAP ground truth would not contain the target); a target that is not the first
gt, a reference among its own gts, and an ``id`` that differs from the record's position
(the official evaluation looks queries up by position) are warnings. The real files have
none of them.

:class:`CircoFormat` is the format object: mAP@5/10/25/50 over multiple ground truths;
no training split, so a CIRCO run trains zero-shot on generated triplets, written as CIRR
caption records next to the annotations (``annotations/cap.rc2.train.extend_<name>.json``,
``annotations/split.rc2.train.extend_<name>.json``: name -> ``./extend_<name>/<file>``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bench.core.errors import DataFormatError
from bench.formats.base import DatasetFormat, EvalOptions, ImageSizes, SplitFiles, register_format
from bench.formats.cirr import (
    generated_caption_name,
    read_generated_cirr_records,
    write_generated_cirr_records,
)
from bench.formats.records import CIRSplit, GeneratedTriplet, Query
from bench.formats.validation import (
    EXAMPLES_SHOWN,
    FindingLog,
    check_field,
    check_images_on_disk,
    iter_records,
    read_json,
    read_json_logged,
)
from bench.metrics import (
    QueryValues,
    check_circo_submission,
    circo_query_values,
    circo_query_values_from_features,
    circo_submission_from_features,
    circo_submission_from_scores,
    max_similarity,
    write_circo_submission,
)

SPLITS = ("val", "test")
NO_TARGET_SPLITS = ("test",)
COCO_FOLDER = "COCO2017_unlabeled"
IMAGE_FOLDER = "unlabeled2017"
IMAGE_INFO = "image_info_unlabeled2017.json"
#: The template SEARLE (by the CIRCO authors) encodes a CIRCO query with; "$" is the
#: reference's pseudo-word. The shared concept is not part of it.
QUERY_TEMPLATE = "a photo of {reference} that {caption}"
#: Images of the COCO 2017 unlabeled set, CIRCO's gallery.
COCO_UNLABELED_IMAGES = 123_403
_FILE_NAME = re.compile(r"(\d{12})\.jpg")


def annotation_file(root: str | Path, split: str) -> Path:
    return Path(root) / "annotations" / f"{split}.json"


def coco_root(root: str | Path, image_root: str | Path | None = None) -> Path:
    """The folder holding ``annotations/image_info_unlabeled2017.json`` and ``unlabeled2017/``."""
    return Path(image_root) if image_root is not None else Path(root) / COCO_FOLDER


def image_info_file(root: str | Path, image_root: str | Path | None = None) -> Path:
    return coco_root(root, image_root) / "annotations" / IMAGE_INFO


def image_name(img_id: int) -> str:
    """The gallery name of a COCO image id: the id as a decimal string."""
    return str(img_id)


def image_file_name(img_id: int) -> str:
    """The official file name of a COCO 2017 image: ``<id:012d>.jpg``."""
    return f"{img_id:012d}.jpg"


def circo_query_text(relative_caption: str, *, reference: str = "$") -> str:
    """The query text of SEARLE's CIRCO evaluation: "a photo of $ that <relative caption>".

    ``reference`` is the word standing for the reference image (SEARLE's pseudo-token
    ``$``; a caption of the image for caption-based methods). The caption is used as is.
    """
    return QUERY_TEMPLATE.format(reference=reference, caption=relative_caption)


def load_circo_shared_concepts(root: str | Path, split: str) -> dict[str, str]:
    """Query id -> ``shared_concept`` of one split (records without one are left out)."""
    records = read_json(annotation_file(root, split))
    if not isinstance(records, list):
        raise DataFormatError(annotation_file(root, split), "expected a JSON list of records")
    return {
        str(r["id"]): r["shared_concept"]
        for r in records
        if isinstance(r, dict)
        and isinstance(r.get("id"), int)
        and isinstance(r.get("shared_concept"), str)
    }


def load_circo_split(
    root: str | Path,
    split: str,
    *,
    images: bool = True,
    strict: bool = True,
    image_root: str | Path | None = None,
) -> CIRSplit:
    """Read one CIRCO split (``"val"`` or ``"test"``).

    ``images=False`` reads annotations only (the gallery then comes from the image index
    file, or is empty without it). ``strict=True`` raises
    :class:`bench.core.errors.DataFormatError` on the first problem (file, record, field);
    ``strict=False`` records findings in ``CIRSplit.findings`` and skips bad records.
    ``image_root`` is the COCO folder holding ``annotations/`` and ``unlabeled2017/``
    (default ``root/COCO2017_unlabeled``).
    """
    root = Path(root)
    if split not in SPLITS:
        raise ValueError(f"unknown CIRCO split {split!r}; expected one of {SPLITS}")
    log = FindingLog(strict)
    coco = coco_root(root, image_root)
    image_dir = coco / IMAGE_FOLDER
    info_file = image_info_file(root, image_root)
    listing = _list_images(log, image_dir) if images else None

    indexed = info_file.is_file()
    missing: set[str] = set()
    if indexed:
        image_paths = _read_image_info(log, info_file, image_dir)
        if images:
            missing = check_images_on_disk(
                log, info_file, image_paths, listing.values() if listing is not None else ()
            )
    else:
        image_paths = dict(listing) if listing is not None else {}
    known = set(image_paths) if (indexed or images) else None

    ann_file = annotation_file(root, split)
    queries = _read_queries(log, ann_file, split, known, indexed, missing, image_dir)
    gallery = [name for name in image_paths if name not in missing]
    image_paths = {name: image_paths[name] for name in gallery}
    return CIRSplit("circo", split, None, queries, gallery, image_paths, log.findings)


def _list_images(log: FindingLog, image_dir: Path) -> dict[str, Path] | None:
    """Name -> file of every ``<12 digits>.jpg`` in ``image_dir`` (one listing, by id)."""
    if not image_dir.is_dir():
        log.error(image_dir, "image folder not found")
        return None
    found: dict[int, Path] = {}
    with os.scandir(image_dir) as entries:
        for entry in entries:
            match = _FILE_NAME.fullmatch(entry.name)
            if match:
                found[int(match.group(1))] = Path(entry.path)
    return {image_name(i): found[i] for i in sorted(found)}


def _read_image_info(log: FindingLog, path: Path, image_dir: Path) -> dict[str, Path]:
    data = read_json_logged(log, path)
    if data is None:
        return {}
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        log.error(path, 'expected a JSON object with an "images" list', field="images")
        return {}
    paths: dict[str, Path] = {}
    for index, entry in enumerate(data["images"]):
        if not isinstance(entry, dict):
            log.error(path, f"expected an object, got {type(entry).__name__}", record=index)
            continue
        ok = check_field(log, path, index, entry, "id", int, field_prefix="images.")
        ok &= check_field(log, path, index, entry, "file_name", str, field_prefix="images.")
        if not ok:
            continue
        name = image_name(entry["id"])
        file_name = entry["file_name"]
        if os.path.isabs(file_name) or ".." in Path(file_name).parts:
            message = f"image path {file_name!r:.80} leaves the image folder {image_dir}"
            log.error(path, message, record=index, field="images.file_name")
            continue
        if name in paths:
            log.error(path, f"duplicate image id {entry['id']}", record=index, field="images.id")
            continue
        paths[name] = image_dir / entry["file_name"]
    return paths


def _image_id(log: FindingLog, path: Path, index: int, value: Any, field: str) -> int | None:
    """A non-negative int image id, or None after logging an error."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        log.error(
            path,
            f"expected a non-negative integer image id, got {value!r:.60}",
            record=index,
            field=field,
        )
        return None
    return value


class _QueryChecker:
    """The per-record checks of one CIRCO annotation file, and what they count over it.

    ``known``: the gallery names to check images against (None: not checked); ``indexed``:
    they come from the image index (an unknown image is then an error of its record, else
    an image missing from the folder, reported once by :meth:`summarize`).
    """

    def __init__(
        self,
        log: FindingLog,
        path: Path,
        split: str,
        known: set[str] | None,
        indexed: bool,
        missing_images: set[str],
    ) -> None:
        self.log = log
        self.path = path
        self.needs_targets = split not in NO_TARGET_SPLITS
        self.known = known
        self.indexed = indexed
        self.missing_images = missing_images
        self.seen_ids: set[int] = set()
        self.target_not_first = self.reference_in_gts = 0
        self.id_not_position = self.empty_captions = 0
        self.not_on_disk: dict[int, list[str]] = {}  # record -> names absent from the folder
        self.skipped_for_images = 0

    def check(self, index: int, record: dict[str, Any]) -> Query | None:
        """The query of one record, or None after logging why it is skipped."""
        log, path, needs_targets = self.log, self.path, self.needs_targets
        ok = check_field(log, path, index, record, "id", int)
        ok &= check_field(log, path, index, record, "reference_img_id", int)
        ok &= check_field(log, path, index, record, "relative_caption", str)
        ok &= check_field(log, path, index, record, "shared_concept", str)
        ok &= check_field(log, path, index, record, "target_img_id", int, required=needs_targets)
        ok &= check_field(log, path, index, record, "gt_img_ids", list, required=needs_targets)
        ok &= check_field(log, path, index, record, "semantic_aspects", list, required=False)
        if not ok:
            return None
        qid = record["id"]
        if qid in self.seen_ids:
            log.error(path, f"duplicate query id {qid}", record=index, field="id")
            return None
        reference = _image_id(log, path, index, record["reference_img_id"], "reference_img_id")
        if reference is None:
            return None
        target: int | None = None
        gts: list[int] = []
        if "target_img_id" in record or "gt_img_ids" in record:
            checked = self._targets(index, record, reference)
            if checked is None:
                return None
            target, gts = checked
        aspects = record.get("semantic_aspects", [])
        if not all(isinstance(a, str) for a in aspects):
            log.error(path, "expected a list of strings", record=index, field="semantic_aspects")
            return None
        names = [("reference_img_id", image_name(reference))]
        if target is not None:
            names.append(("target_img_id", image_name(target)))
            names += [("gt_img_ids", image_name(g)) for g in gts]
        if self.known is not None:
            absent_names = [(f, n) for f, n in names if n not in self.known]
            if absent_names and self.indexed:
                field, name = absent_names[0]
                log.error(path, f"image {name} is not in {IMAGE_INFO}", record=index, field=field)
                return None
            if absent_names:
                self.not_on_disk[index] = sorted({n for _, n in absent_names}, key=int)
                return None
        if {n for _, n in names} & self.missing_images:
            self.skipped_for_images += 1
            return None
        self.seen_ids.add(qid)
        self.id_not_position += qid != index
        self.empty_captions += not record["relative_caption"].strip()
        return Query(
            query_id=str(qid),
            index=index,
            reference=image_name(reference),
            target=image_name(target) if target is not None else None,
            captions=(record["relative_caption"],),
            targets=tuple(image_name(g) for g in gts),
        )

    def _targets(
        self, index: int, record: dict[str, Any], reference: int
    ) -> tuple[int, list[int]] | None:
        """(target, ground truths) of a record that has them, or None after logging why not."""
        log, path = self.log, self.path
        if not ("target_img_id" in record and "gt_img_ids" in record):
            absent = "gt_img_ids" if "target_img_id" in record else "target_img_id"
            log.error(path, "missing field (needed with its pair)", record=index, field=absent)
            return None
        target = _image_id(log, path, index, record["target_img_id"], "target_img_id")
        if target is None:
            return None
        raw = record["gt_img_ids"]
        ids = [_image_id(log, path, index, g, "gt_img_ids") for g in raw]
        if any(g is None for g in ids):
            return None
        gts = [g for g in ids if g is not None]
        if not gts:
            log.error(path, "empty list of ground truths", record=index, field="gt_img_ids")
            return None
        if len(set(gts)) != len(gts):
            dups = sorted({g for g in gts if gts.count(g) > 1})
            log.error(
                path,
                f"repeated ground truth ids {dups[:EXAMPLES_SHOWN]}",
                record=index,
                field="gt_img_ids",
            )
            return None
        if target not in gts:
            log.error(
                path,
                f"target_img_id {target} is not among the gt_img_ids",
                record=index,
                field="gt_img_ids",
            )
            return None
        self.target_not_first += gts[0] != target
        self.reference_in_gts += reference in gts
        return target, gts

    def summarize(self, image_dir: Path) -> None:
        """Log what the checks counted over the file (the images missing from ``image_dir``
        once, the kept quirks and the skipped queries as warnings)."""
        log, path = self.log, self.path
        if self.not_on_disk:
            not_on_disk = self.not_on_disk
            absent = sorted({n for names in not_on_disk.values() for n in names}, key=int)
            shown = ", ".join(image_file_name(int(n)) for n in absent[:EXAMPLES_SHOWN])
            more = (
                f" and {len(absent) - EXAMPLES_SHOWN} more" if len(absent) > EXAMPLES_SHOWN else ""
            )
            log.error(
                path,
                f"{len(absent)} images used by {len(not_on_disk)} queries are missing from "
                f"{image_dir} (e.g. {shown}{more}); those queries are skipped",
                count=len(absent),
            )
        for count, message, field in (
            (
                self.target_not_first,
                "queries whose target_img_id is not the first gt (kept)",
                "gt_img_ids",
            ),
            (
                self.reference_in_gts,
                "queries whose reference is among its gts (kept)",
                "gt_img_ids",
            ),
            (
                self.id_not_position,
                "queries whose id differs from their position (the official evaluation looks "
                "queries up by position; kept)",
                "id",
            ),
            (self.empty_captions, "empty relative captions (kept)", "relative_caption"),
        ):
            if count:
                log.warning(path, f"{count} {message}", field=field, count=count)
        if self.skipped_for_images:
            log.warning(
                path,
                f"{self.skipped_for_images} queries skipped: an image they use is missing on disk",
                count=self.skipped_for_images,
            )


def _read_queries(
    log: FindingLog,
    path: Path,
    split: str,
    known: set[str] | None,
    indexed: bool,
    missing_images: set[str],
    image_dir: Path,
) -> list[Query]:
    checker = _QueryChecker(log, path, split, known, indexed, missing_images)
    queries: list[Query] = []
    for index, record in iter_records(log, path):
        query = checker.check(index, record)
        if query is not None:
            queries.append(query)
    checker.summarize(image_dir)
    return queries


@register_format
class CircoFormat(DatasetFormat):
    """CIRCO (Baldrati et al., ICCV 2023): COCO images, several ground truths per query;
    an evaluation benchmark (no training split)."""

    name = "circo"
    title = "CIRCO"
    order = 2
    splits = SPLITS
    train_split = None
    headline_metric = "mAP@10"
    report_columns = ("mAP@5", "mAP@10", "mAP@25", "mAP@50")
    #: the synthetic CIRCO gallery holds one-object images: the pool's FashionIQ-style kind
    synthetic_pool_kind = "fashioniq"
    reference_folders = ("CIRCO", "circo")
    #: COCO 2017: long side 640, mostly 4:3 / 3:2 landscape, a quarter portrait
    image_sizes = ImageSizes((640, 640), ((0.7, 1.33, 1.5), (0.25, 0.66, 0.75), (0.05, 0.9, 1.1)))
    gallery_size = COCO_UNLABELED_IMAGES

    def named_images(self, root: Path) -> dict[str, Path]:
        """The references and ground truths of both splits (the gallery is the COCO
        folder, not named by the annotations)."""
        image_dir = coco_root(root) / IMAGE_FOLDER
        names: dict[str, Path] = {}
        for split in self.splits:
            data = self.load_split(root, split, images=False, strict=False)
            for q in data.queries:
                for name in (q.reference, *q.targets):
                    names[name] = image_dir / image_file_name(int(name))
        return names

    def gallery_fillers(self, root: Path, named: Mapping[str, Path], count: int) -> dict[str, Path]:
        """``count`` COCO ids not in ``named``, the smallest free ones from 1 up (real
        unlabeled ids run to about 581k), as ``<id:012d>.jpg`` in the image folder."""
        image_dir = coco_root(root) / IMAGE_FOLDER
        out: dict[str, Path] = {}
        img_id = 0
        while len(out) < count:
            img_id += 1
            if str(img_id) not in named:
                out[str(img_id)] = image_dir / image_file_name(img_id)
        return out

    def load_split(
        self,
        root: Path,
        split: str,
        group: str | None = None,
        *,
        images: bool = True,
        strict: bool = True,
    ) -> CIRSplit:
        return load_circo_split(root, split, images=images, strict=strict)

    def split_files(self, root: Path) -> list[SplitFiles]:
        return [SplitFiles(None, s, annotation_file(root, s), None) for s in SPLITS]

    def split_query_values(
        self,
        split: CIRSplit,
        queries: np.ndarray,
        gallery: np.ndarray,
        options: EvalOptions,
        rows: Callable[[Sequence[str]], np.ndarray],
    ) -> QueryValues:
        """AP@K per query as the CIRCO server computes it (normalised by min(k, #gt))."""
        refs = [q.reference for q in split.queries]
        targets = [list(q.targets) for q in split.queries]
        ids = [q.query_id for q in split.queries]
        if gallery.ndim == 3:  # token sets scored by their best token (SPRC)
            scores = max_similarity(queries, gallery)
            return QueryValues.of(ids, circo_query_values(scores, split.gallery, refs, targets))
        values = circo_query_values_from_features(queries, gallery, split.gallery, refs, targets)
        return QueryValues.of(ids, values)

    def write_submission(
        self, split: CIRSplit, queries: np.ndarray, gallery: np.ndarray, out_dir: Path, name: str
    ) -> list[Path]:
        """The CIRCO server's file: the top 50 image ids of every query (the reference is
        not removed, as the official evaluation ranks it)."""
        if gallery.ndim == 3:  # token sets scored by their best token (SPRC)
            top50 = circo_submission_from_scores(max_similarity(queries, gallery), split.gallery)
        else:
            top50 = circo_submission_from_features(queries, gallery, split.gallery)
        query_ids = [int(q.query_id) for q in split.queries]
        path = write_circo_submission(
            Path(out_dir) / f"circo_submission_{name}.json", query_ids, top50
        )
        check_circo_submission(path, expected_query_ids=query_ids)
        return [path]

    def generated_captions_dir(self, root: Path) -> Path:
        return Path(root) / "annotations"

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
        folder = self.generated_captions_dir(root)
        return write_generated_cirr_records(
            root, folder, folder, name, triplets, outside_images, place
        )

    def read_generated_records(
        self, root: Path, name: str
    ) -> tuple[list[GeneratedTriplet], dict[str, Path]]:
        folder = self.generated_captions_dir(root)
        return read_generated_cirr_records(root, folder, folder, name)
