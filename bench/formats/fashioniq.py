"""FashionIQ reader for the official layout.

::

    root/captions/cap.{category}.{split}.json     [{"candidate", "target", "captions": [c1, c2]}]
    root/image_splits/split.{category}.{split}.json   ["B00...", ...]
    root/images/<name>.<ext>

The test split has no ``target``. :class:`FashionIQFormat` is the format object: CLIP4Cir's
training and evaluation texts, the three gallery protocols, the per-category average.

Generated triplets (positive scaling) live next to the official files::

    captions/cap.extend_<name>.train.json          every generated triplet, the SPN layout:
        {"candidate", "target", "captions": [text, alternative], "caption1", "caption2",
         "category"}   (caption1 / caption2: the reference / target image captions)
    captions/cap.<cat>.extend_<name>.train.json    the same records, one file per category,
        readable by ``load_fashioniq_split(root, cat, "train", captions_file=...)``
    captions/cap.extend_<name>.train.provenance.json

The official layout has exactly two captions per triplet: ``captions`` holds the text
chosen for the triplet and a second template's rendering (the same text again when a
single template is configured). SPN's training code picks one of a generated triplet's
captions at random rather than joining them as it does for human triplets. Images of an
out-of-domain pool are placed in ``images/<name><ext>`` and listed in
``image_splits/split.extend_<name>.train.json`` (all names) and
``image_splits/split.<cat>.extend_<name>.train.json`` (per category): the reader then
reads them as a split of their own (``load_fashioniq_split(root, cat, "extend_<name>.train")``).
"""

from __future__ import annotations

import os
import random
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
    fashioniq_average,
    fashioniq_protocol_gallery,
    fashioniq_query_values_for_protocol,
    fashioniq_query_values_from_features,
    get_fashioniq_protocol,
    max_similarity,
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
    if not names:
        log.error(path, "the file lists no images (an empty list)")
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
    blank: list[int] = []
    duplicates = DuplicateQueries(log, path)
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
        if any(not c.strip() for c in captions):
            blank.append(index)
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
        if bad_ref or duplicates.seen(index, reference, target, tuple(captions)):
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
    blank_text_warning(log, path, blank, "captions")
    duplicates.summarize()
    if skipped_for_images:
        log.warning(
            path,
            f"{skipped_for_images} queries skipped: their reference or target image is missing",
            count=skipped_for_images,
        )
    return queries


def _generated_record(t: GeneratedTriplet) -> dict[str, Any]:
    return {
        "candidate": t.reference,
        "target": t.target,
        "captions": [t.text, t.alternative or t.text],
        "caption1": t.reference_caption,
        "caption2": t.target_caption,
        "category": t.category,
    }


def _generated_triplet(path: Path, index: int, record: Any, name: str) -> GeneratedTriplet:
    reference = record_field(path, index, record, "candidate", str)
    target = record_field(path, index, record, "target", str)
    captions = record_field(path, index, record, "captions", list)
    if not captions or not all(isinstance(c, str) for c in captions):
        raise DataFormatError(path, "expected a list of strings", record=index, field="captions")
    category = record.get("category")
    source = f"{category}/extend_{name}" if category else f"extend_{name}"
    return GeneratedTriplet(
        reference,
        target,
        captions[0],
        source,
        category,
        captions[-1],
        str(record.get("caption1", "")),
        str(record.get("caption2", "")),
    )


@register_format
class FashionIQFormat(DatasetFormat):
    """FashionIQ (Wu et al., CVPR 2021): three categories, two captions per triplet."""

    name = "fashioniq"
    title = "FashionIQ"
    order = 0
    splits = SPLITS
    categories = CATEGORIES
    headline_metric = "Rmean"
    report_columns = (
        *(f"{c}_R@{k}" for c in CATEGORIES for k in (10, 50)),
        "avg_R@10",
        "avg_R@50",
        "Rmean",
    )
    synthetic_pool_kind = "fashioniq"
    reference_folders = ("fashionIQ_dataset", "fashioniq", "FashionIQ")
    #: product photos: mostly portrait, many more elongated than TargetPad's 1.25
    image_sizes = ImageSizes((300, 1000), ((0.6, 0.55, 0.85), (0.3, 0.9, 1.1), (0.1, 1.2, 1.6)))

    def load_split(
        self,
        root: Path,
        split: str,
        group: str | None = None,
        *,
        images: bool = True,
        strict: bool = True,
    ) -> CIRSplit:
        if group is None:
            raise ValueError("FashionIQ splits are per category: give a category")
        return load_fashioniq_split(root, group, split, images=images, strict=strict)

    def split_files(self, root: Path) -> list[SplitFiles]:
        return [
            SplitFiles(c, s, caption_file(root, c, s), split_file(root, c, s))
            for c in CATEGORIES
            for s in SPLITS
        ]

    def train_image_paths(self, root: Path) -> dict[str, Path]:
        names: dict[str, Path] = {}
        for category in CATEGORIES:
            path = split_file(root, category, "train")
            if path.is_file():
                for n in read_json(path):
                    names[n] = root / "images" / n
        return names

    def training_text(self, captions: tuple[str, ...], rng: random.Random) -> str:
        """One of CLIP4Cir's four variants at random: "c1 and c2", "c2 and c1", "c1", "c2"."""
        return self.training_texts(captions)[rng.randrange(4)]

    def training_texts(self, captions: tuple[str, ...]) -> tuple[str, ...]:
        first, second = captions
        variants = [(first, second), (second, first), (first,), (second,)]
        return tuple(fashioniq_query_text(v) for v in variants)

    def eval_text(self, captions: tuple[str, ...]) -> str:
        """CLIP4Cir's "C1 and c2"."""
        return fashioniq_query_text(captions)

    def protocol_name(self, options: EvalOptions) -> str:
        return get_fashioniq_protocol(options.protocol).name

    def split_query_values(
        self,
        split: CIRSplit,
        queries: np.ndarray,
        gallery: np.ndarray,
        options: EvalOptions,
        rows: Callable[[Sequence[str]], np.ndarray],
    ) -> QueryValues:
        """Hits at R@10, R@50 under ``options.protocol`` (the gallery it ranks, the
        reference kept or dropped); a gallery of token sets ``(G, T, D)`` is scored exactly
        by its best token, single vectors through the faiss top-K path."""
        proto = get_fashioniq_protocol(options.protocol)
        refs = [q.reference for q in split.queries]
        targets = [q.target for q in split.queries]
        ids = [q.query_id for q in split.queries]
        if gallery.ndim == 3:  # token sets scored by their best token (SPRC)
            scores = max_similarity(queries, gallery)
            return QueryValues.of(
                ids,
                fashioniq_query_values_for_protocol(proto, scores, split.gallery, refs, targets),
            )
        names = fashioniq_protocol_gallery(proto, split.gallery, refs, targets)
        if len(names) != len(split.gallery):
            gallery = gallery[rows(names)]
        values = fashioniq_query_values_from_features(
            queries,
            gallery,
            names,
            targets,
            reference_names=refs,
            drop_reference=proto.drop_reference,
        )
        return QueryValues.of(ids, values)

    def aggregate(self, per_group: Mapping[str | None, Mapping[str, Any]]) -> dict[str, Any]:
        """Per-category metrics, their averages and Rmean = (avg R@10 + avg R@50) / 2."""
        return fashioniq_average({str(k): v for k, v in per_group.items()})

    def generated_captions_dir(self, root: Path) -> Path:
        return Path(root) / "captions"

    def generated_caption_name(self, name: str, group: str | None = None) -> str:
        return f"cap.{group}.extend_{name}.train.json" if group else f"cap.extend_{name}.train.json"

    def generated_split_name(self, name: str, group: str | None = None) -> str:
        if group:
            return f"split.{group}.extend_{name}.train.json"
        return f"split.extend_{name}.train.json"

    def write_generated_records(
        self,
        root: Path,
        name: str,
        triplets: Sequence[GeneratedTriplet],
        outside_images: Mapping[str, Path],
        place: Callable[[Path, Path], bool],
    ) -> tuple[dict[str, Path], int]:
        captions_dir, splits_dir = self.generated_captions_dir(root), Path(root) / "image_splits"
        main = captions_dir / self.generated_caption_name(name)
        write_records(main, [_generated_record(t) for t in triplets])
        files = {"captions": main}
        categories = sorted({t.category for t in triplets if t.category})
        for category in categories:
            path = captions_dir / self.generated_caption_name(name, category)
            write_records(path, [_generated_record(t) for t in triplets if t.category == category])
            files[f"captions.{category}"] = path
        placed = 0
        if outside_images:
            for image, source in sorted(outside_images.items()):
                placed += place(Path(source), root / "images" / f"{image}{Path(source).suffix}")
            for category in (None, *categories):
                used = sorted(
                    {
                        n
                        for t in triplets
                        if category is None or t.category == category
                        for n in (t.reference, t.target)
                    }
                )
                path = splits_dir / self.generated_split_name(name, category)
                write_records(path, used, indent=2)
                files["image_split" + (f".{category}" if category else "")] = path
        return files, placed

    def read_generated_records(
        self, root: Path, name: str
    ) -> tuple[list[GeneratedTriplet], dict[str, Path]]:
        path = self.generated_captions_dir(root) / self.generated_caption_name(name)
        triplets = [
            _generated_triplet(path, i, record, name) for i, record in enumerate(load_records(path))
        ]
        index = _index_images(Path(root) / "images")
        paths = {n: index[n] for t in triplets for n in (t.reference, t.target) if n in index}
        return triplets, paths
