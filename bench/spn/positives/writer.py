"""Generated triplets on disk, next to the official files, in each dataset's own format.

FashionIQ (``root`` = the FashionIQ folder)::

    captions/cap.extend_<name>.train.json          every generated triplet, the SPN layout:
        {"candidate", "target", "captions": [text, alternative], "caption1", "caption2",
         "category"}   (caption1 / caption2: the reference / target image captions)
    captions/cap.<cat>.extend_<name>.train.json    the same records, one file per category,
        readable by ``load_fashioniq_split(root, cat, "train", captions_file=...)``
    captions/cap.extend_<name>.train.provenance.json

The official FashionIQ layout has exactly two captions per triplet: ``captions`` holds the
text chosen for the triplet and a second template's rendering (the same text again when a
single template is configured). SPN's training code picks one of a generated triplet's
captions at random rather than joining them as it does for human triplets.

CIRR (``root`` = the CIRR folder, or ``cirr_dataset/`` with annotations in ``cirr/``)::

    captions/cap.rc2.train.extend_<name>.json      {"pairid", "reference", "target_hard",
        "target_soft": {target: 1.0}, "caption", "img_set": {"id", "members": [reference,
        target], "reference_rank": 0, "target_rank": 1}, "caption1", "caption2"}
    captions/cap.rc2.train.extend_<name>.provenance.json

``pairid`` and ``img_set.id`` continue after the largest ones of the official files, so they
never collide with human ones (SPN writes ``pairid: 0`` and ``members: ["xxx"]``, which the
official layout does not allow).

Images that are not training images (out-of-domain pools) are hard-linked (copied across
file systems) into the dataset — FashionIQ ``images/<name><ext>``, CIRR
``extend_<name>/<name><ext>`` — and listed in image-split files:
``image_splits/split.extend_<name>.train.json`` (FashionIQ, all names) and
``image_splits/split.<cat>.extend_<name>.train.json`` (per category), or
``image_splits/split.rc2.train.extend_<name>.json`` (CIRR, name -> relative path). The
official readers then read them as a split of their own: FashionIQ
``load_fashioniq_split(root, cat, "extend_<name>.train")``, CIRR
``load_cirr_split(root, "train.extend_<name>")``.

CIRCO (``root`` = the CIRCO folder; CIRCO has no training split, so a CIRCO-evaluated run
trains zero-shot on generated triplets only): the CIRR records above, next to the
official annotations, with the images of the (necessarily out-of-domain) pool in
``extend_<name>/``::

    annotations/cap.rc2.train.extend_<name>.json          CIRR caption records
    annotations/split.rc2.train.extend_<name>.json        name -> "./extend_<name>/<file>"
    annotations/cap.rc2.train.extend_<name>.provenance.json

Every file is written atomically; the provenance file is written last and lists the files.
"""

from __future__ import annotations

import filecmp
import json
import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.config.spn import check_set_name
from bench.core.errors import DataFormatError
from bench.data import cirr as cirr_reader
from bench.data import fashioniq as fiq_reader

FORMATS = ("fashioniq", "cirr", "circo")


@dataclass(frozen=True)
class GeneratedTriplet:
    """One generated triplet. ``text`` is the modification text to train with; ``source``
    names where it came from (``"dress/extend_<name>"``, ``"extend_<name>"``)."""

    reference: str
    target: str
    text: str
    source: str
    category: str | None = None
    alternative: str = ""
    reference_caption: str = ""
    target_caption: str = ""


def _check_format(format: str) -> None:
    if format not in FORMATS:
        raise ValueError(f"unknown dataset format {format!r}; expected one of {FORMATS}")


def annotation_dir(root: Path, format: str) -> Path:
    """The folder holding ``captions/`` and ``image_splits/`` (CIRCO: ``annotations/``)."""
    if format == "cirr":
        return cirr_reader.annotation_root(root)
    if format == "circo":
        return Path(root) / "annotations"
    return Path(root)


def captions_folder(root: Path, format: str) -> Path:
    """Where the generated caption files (and the provenance) go."""
    ann = annotation_dir(root, format)
    return ann if format == "circo" else ann / "captions"


def splits_folder(root: Path, format: str) -> Path:
    """Where the generated image-split files go."""
    ann = annotation_dir(root, format)
    return ann if format == "circo" else ann / "image_splits"


def caption_file_name(format: str, name: str, category: str | None = None) -> str:
    if format in ("cirr", "circo"):
        return f"cap.rc2.train.extend_{name}.json"
    return (
        f"cap.{category}.extend_{name}.train.json" if category else f"cap.extend_{name}.train.json"
    )


def split_file_name(format: str, name: str, category: str | None = None) -> str:
    if format in ("cirr", "circo"):
        return f"split.rc2.train.extend_{name}.json"
    if category:
        return f"split.{category}.extend_{name}.train.json"
    return f"split.extend_{name}.train.json"


def provenance_path(root: str | Path, format: str, name: str) -> Path:
    _check_format(format)
    stem = caption_file_name(format, check_set_name(name)).removesuffix(".json")
    return captions_folder(Path(root), format) / f"{stem}.provenance.json"


def write_json_atomic(path: Path, data: Any, *, indent: int | None = 2) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=indent, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _place_image(source: Path, dest: Path) -> bool:
    """Hard-link (else copy) ``source`` to ``dest``; False when an identical file is there."""
    if dest.exists():
        if os.path.samefile(source, dest) or filecmp.cmp(source, dest, shallow=False):
            return False
        raise DataFormatError(
            dest, f"a different image of this name is already there (generated from {source})"
        )
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
    try:
        os.link(source, tmp)
    except OSError:
        shutil.copy2(source, tmp)
    os.replace(tmp, dest)
    return True


def _official_max(captions_dir: Path) -> tuple[int, int]:
    """Largest pairid and img_set id in the official CIRR caption files (0 when absent)."""
    pairid = set_id = 0
    for split in cirr_reader.SPLITS:
        path = captions_dir / f"cap.rc2.{split}.json"
        if not path.is_file():
            continue
        try:
            records = json.loads(path.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise DataFormatError(path, f"not valid JSON ({exc})") from None
        for record in records if isinstance(records, list) else []:
            if isinstance(record, dict):
                if isinstance(record.get("pairid"), int):
                    pairid = max(pairid, record["pairid"])
                img_set = record.get("img_set")
                if isinstance(img_set, dict) and isinstance(img_set.get("id"), int):
                    set_id = max(set_id, img_set["id"])
    return pairid, set_id


def _fiq_record(t: GeneratedTriplet) -> dict[str, Any]:
    return {
        "candidate": t.reference,
        "target": t.target,
        "captions": [t.text, t.alternative or t.text],
        "caption1": t.reference_caption,
        "caption2": t.target_caption,
        "category": t.category,
    }


def write_generated(
    root: str | Path,
    format: str,
    name: str,
    triplets: Sequence[GeneratedTriplet],
    *,
    outside_images: Mapping[str, Path] | None = None,
    provenance: Mapping[str, Any] | None = None,
) -> dict[str, Path]:
    """Write ``triplets`` (see the module docstring) and return the files written by role.

    ``outside_images``: name -> source file of every image the triplets use that is not a
    training image of the dataset (out-of-domain pools); they are placed into the dataset
    and listed in split files.
    """
    _check_format(format)
    check_set_name(name)
    root = Path(root)
    captions_dir, splits_dir = captions_folder(root, format), splits_folder(root, format)
    outside = dict(outside_images or {})
    old = read_provenance(root, format, name)
    files: dict[str, Path] = {}
    placed = 0
    if format == "fashioniq":
        main = captions_dir / caption_file_name(format, name)
        write_json_atomic(main, [_fiq_record(t) for t in triplets], indent=None)
        files["captions"] = main
        categories = sorted({t.category for t in triplets if t.category})
        for category in categories:
            path = captions_dir / caption_file_name(format, name, category)
            records = [_fiq_record(t) for t in triplets if t.category == category]
            write_json_atomic(path, records, indent=None)
            files[f"captions.{category}"] = path
        if outside:
            for image, source in sorted(outside.items()):
                placed += _place_image(
                    Path(source), root / "images" / f"{image}{Path(source).suffix}"
                )
            used = sorted({n for t in triplets for n in (t.reference, t.target)})
            path = splits_dir / split_file_name(format, name)
            write_json_atomic(path, used)
            files["image_split"] = path
            for category in categories:
                used = sorted(
                    {n for t in triplets if t.category == category for n in (t.reference, t.target)}
                )
                path = splits_dir / split_file_name(format, name, category)
                write_json_atomic(path, used)
                files[f"image_split.{category}"] = path
    else:
        max_pairid, max_set = _official_max(captions_dir)
        records = []
        for i, t in enumerate(triplets):
            records.append(
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
            )
        path = captions_dir / caption_file_name(format, name)
        write_json_atomic(path, records, indent=None)
        files["captions"] = path
        if outside:
            folder = f"extend_{name}"
            mapping = {}
            for image, source in sorted(outside.items()):
                file_name = f"{image}{Path(source).suffix}"
                placed += _place_image(Path(source), root / folder / file_name)
                mapping[image] = f"./{folder}/{file_name}"
            used = {n for t in triplets for n in (t.reference, t.target)}
            missing = sorted(used - set(mapping))
            if missing:
                raise ValueError(
                    f"no image file for {len(missing)} generated images, e.g. {missing[:3]}"
                )
            path = splits_dir / split_file_name(format, name)
            write_json_atomic(path, {n: mapping[n] for n in sorted(used)})
            files["image_split"] = path
    prov_path = provenance_path(root, format, name)
    stale = set((old or {}).get("files", {}).values()) - {str(p) for p in files.values()}
    for path_text in stale:  # files of an earlier build of this name that this one lacks
        stale_path = Path(path_text)
        if stale_path.parent in (captions_dir, splits_dir) and f"extend_{name}" in stale_path.name:
            stale_path.unlink(missing_ok=True)
    record = {
        **dict(provenance or {}),
        "format": format,
        "name": name,
        "triplets": len(triplets),
        "images_placed": placed,
        "files": {role: str(p) for role, p in files.items()},
    }
    write_json_atomic(prov_path, record)
    files["provenance"] = prov_path
    return files


def read_provenance(root: str | Path, format: str, name: str) -> dict[str, Any] | None:
    """The provenance record of a generated set, or None when there is none."""
    path = provenance_path(root, format, name)
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise DataFormatError(path, f"not valid JSON ({exc})") from None
    return data if isinstance(data, dict) else None


def _index_images(folder: Path) -> dict[str, Path]:
    """Image stem -> file for the images of a FashionIQ ``images/`` folder."""
    found: dict[str, Path] = {}
    if folder.is_dir():
        with os.scandir(folder) as entries:
            for entry in entries:
                stem, ext = os.path.splitext(entry.name)
                if ext.lower() in fiq_reader.IMAGE_EXTENSIONS and stem not in found:
                    found[stem] = Path(entry.path)
    return found


def _load_records(path: Path) -> list[Any]:
    try:
        records = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataFormatError(path, "generated caption file not found") from None
    except ValueError as exc:
        raise DataFormatError(path, f"not valid JSON ({exc})") from None
    if not isinstance(records, list):
        raise DataFormatError(
            path, f"expected a JSON list of records, got {type(records).__name__}"
        )
    return records


def _field(path: Path, index: int, record: Any, key: str, kind: type) -> Any:
    if not isinstance(record, dict):
        raise DataFormatError(
            path, f"expected an object, got {type(record).__name__}", record=index
        )
    if key not in record:
        raise DataFormatError(path, "missing field", record=index, field=key)
    if not isinstance(record[key], kind):
        raise DataFormatError(
            path,
            f"expected {kind.__name__}, got {type(record[key]).__name__}",
            record=index,
            field=key,
        )
    return record[key]


def read_generated(
    root: str | Path, format: str, name: str
) -> tuple[list[GeneratedTriplet], dict[str, Path]]:
    """The generated triplets of set ``name`` and the path of every image they use."""
    _check_format(format)
    check_set_name(name)
    root = Path(root)
    path = captions_folder(root, format) / caption_file_name(format, name)
    splits_dir = splits_folder(root, format)
    records = _load_records(path)
    triplets: list[GeneratedTriplet] = []
    if format == "fashioniq":
        for i, record in enumerate(records):
            reference = _field(path, i, record, "candidate", str)
            target = _field(path, i, record, "target", str)
            captions = _field(path, i, record, "captions", list)
            if not captions or not all(isinstance(c, str) for c in captions):
                raise DataFormatError(
                    path, "expected a list of strings", record=i, field="captions"
                )
            category = record.get("category")
            source = f"{category}/extend_{name}" if category else f"extend_{name}"
            triplets.append(
                GeneratedTriplet(
                    reference,
                    target,
                    captions[0],
                    source,
                    category,
                    captions[-1],
                    str(record.get("caption1", "")),
                    str(record.get("caption2", "")),
                )
            )
        index = _index_images(root / "images")
        paths = {n: index[n] for t in triplets for n in (t.reference, t.target) if n in index}
    else:
        for i, record in enumerate(records):
            reference = _field(path, i, record, "reference", str)
            target = _field(path, i, record, "target_hard", str)
            text = record.get("caption")
            if isinstance(text, list):  # the SPN authors' own files hold a list of texts
                text = text[0] if text and all(isinstance(c, str) for c in text) else None
            if not isinstance(text, str):
                raise DataFormatError(path, "expected a string", record=i, field="caption")
            triplets.append(
                GeneratedTriplet(
                    reference,
                    target,
                    text,
                    f"extend_{name}",
                    None,
                    text,
                    str(record.get("caption1", "")),
                    str(record.get("caption2", "")),
                )
            )
        paths = {}
        for split_path in (
            splits_dir / "split.rc2.train.json",
            splits_dir / split_file_name(format, name),
        ):
            if split_path.is_file():
                mapping = json.loads(split_path.read_text(encoding="utf-8"))
                if not isinstance(mapping, dict):
                    raise DataFormatError(split_path, "expected a JSON object name -> path")
                for image, relative in mapping.items():
                    paths[image] = Path(os.path.normpath(root / relative))
    used = [n for t in triplets for n in (t.reference, t.target)]
    missing = sorted({n for n in used if n not in paths or not paths[n].is_file()})
    if missing:
        raise DataFormatError(
            path,
            f"{len(missing)} images of the generated triplets are not on disk, e.g. {missing[:3]}",
        )
    return triplets, {n: paths[n] for n in dict.fromkeys(used)}
