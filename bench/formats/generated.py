"""Generated triplets on disk, next to the official files, in each format's own records.

Where the files go and what the records hold is each format's
(:meth:`~bench.formats.base.DatasetFormat.write_generated_records`; the layouts are
documented in :mod:`bench.formats.fashioniq` and :mod:`bench.formats.cirr`). This module
holds what every format shares: the provenance record (written last; it lists the files),
placing out-of-domain images into the dataset (hard link, else copy), removing the files
of an earlier build of the same name that this build no longer writes, and checking that
every image a generated set uses is on disk. Every file is written atomically.
"""

from __future__ import annotations

import filecmp
import os
import re
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from bench.core.atomic import atomic_path, write_json_atomic
from bench.core.errors import DataFormatError
from bench.core.reading import read_json
from bench.formats.base import get_format
from bench.formats.records import GeneratedTriplet

_SET_NAME = re.compile(r"^[A-Za-z0-9_-]+$")


def check_set_name(name: str) -> str:
    """A generated set's name names files (``cap.extend_<name>...``): letters, digits, ``_``
    and ``-`` only."""
    if not _SET_NAME.match(name):
        raise ValueError(f"generated set name {name!r}: use letters, digits, '_' and '-' only")
    return name


def write_records(path: Path, records: Any, *, indent: int | None = None) -> None:
    """A generated caption / split / provenance file (UTF-8 as is, trailing newline)."""
    write_json_atomic(path, records, indent=indent, ensure_ascii=False, trailing_newline=True)


def provenance_path(root: str | Path, format: str, name: str) -> Path:
    """The provenance record of generated set ``name``."""
    fmt = get_format(format)
    stem = fmt.generated_caption_name(check_set_name(name)).removesuffix(".json")
    return fmt.generated_captions_dir(Path(root)) / f"{stem}.provenance.json"


def place_image(source: Path, dest: Path) -> bool:
    """Hard-link (else copy) ``source`` to ``dest``; False when an identical file is there."""
    if dest.exists():
        if os.path.samefile(source, dest) or filecmp.cmp(source, dest, shallow=False):
            return False
        raise DataFormatError(
            dest, f"a different image of this name is already there (generated from {source})"
        )
    with atomic_path(dest) as tmp:
        try:
            os.link(source, tmp)
        except OSError:
            shutil.copy2(source, tmp)
    return True


def read_provenance(root: str | Path, format: str, name: str) -> dict[str, Any] | None:
    """The provenance record of a generated set, or None when there is none."""
    path = provenance_path(root, format, name)
    if not path.is_file():
        return None
    data = read_json(path)
    return data if isinstance(data, dict) else None


def write_generated(
    root: str | Path,
    format: str,
    name: str,
    triplets: Sequence[GeneratedTriplet],
    *,
    outside_images: Mapping[str, Path] | None = None,
    provenance: Mapping[str, Any] | None = None,
) -> dict[str, Path]:
    """Write ``triplets`` as generated set ``name`` of ``format`` under ``root`` and return the
    files written by role (the provenance last).

    ``outside_images``: name -> source file of every image the triplets use that is not a
    training image of the dataset (out-of-domain pools); they are placed into the dataset
    and listed in split files.
    """
    fmt = get_format(format)
    check_set_name(name)
    root = Path(root)
    old = read_provenance(root, format, name)
    files, placed = fmt.write_generated_records(
        root, name, triplets, dict(outside_images or {}), place_image
    )
    folders = {p.parent for p in files.values()}
    stale = set((old or {}).get("files", {}).values()) - {str(p) for p in files.values()}
    for path_text in stale:  # files of an earlier build of this name that this one lacks
        stale_path = Path(path_text)
        if stale_path.parent in folders and f"extend_{name}" in stale_path.name:
            stale_path.unlink(missing_ok=True)
    prov_path = provenance_path(root, format, name)
    record = {
        **dict(provenance or {}),
        "format": format,
        "name": name,
        "triplets": len(triplets),
        "images_placed": placed,
        "files": {role: str(p) for role, p in files.items()},
    }
    write_records(prov_path, record, indent=2)
    files["provenance"] = prov_path
    return files


def read_generated(
    root: str | Path, format: str, name: str
) -> tuple[list[GeneratedTriplet], dict[str, Path]]:
    """The generated triplets of set ``name`` and the path of every image they use; an
    image missing on disk is an error naming the caption file."""
    fmt = get_format(format)
    root = Path(root)
    triplets, paths = fmt.read_generated_records(root, check_set_name(name))
    used = [n for t in triplets for n in (t.reference, t.target)]
    missing = sorted({n for n in used if n not in paths or not paths[n].is_file()})
    if missing:
        path = fmt.generated_captions_dir(root) / fmt.generated_caption_name(name)
        raise DataFormatError(
            path,
            f"{len(missing)} images of the generated triplets are not on disk, e.g. {missing[:3]}",
        )
    return triplets, {n: paths[n] for n in dict.fromkeys(used)}


def load_records(path: Path) -> list[Any]:
    """The JSON list of records of a generated caption file."""
    records = read_json(path)
    if not isinstance(records, list):
        raise DataFormatError(
            path, f"expected a JSON list of records, got {type(records).__name__}"
        )
    return records


def record_field(path: Path, index: int, record: Any, key: str, kind: type) -> Any:
    """``record[key]``, which must be of type ``kind``; otherwise an error naming the file,
    the record and the field."""
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
