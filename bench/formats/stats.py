"""Per-split statistics and validation findings for a dataset folder (``cirbench data stats``)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.formats.base import SplitFiles, get_format
from bench.formats.records import CIRSplit, Finding


def _split_entry(split: CIRSplit, captions_present: bool) -> dict[str, Any]:
    return {
        "queries": len(split.queries) if captions_present else None,
        "images": len(split.gallery),
        "errors": sum(f.severity == "error" for f in split.findings),
        "warnings": sum(f.severity == "warning" for f in split.findings),
        "findings": [f.as_dict() for f in split.findings],
    }


def dataset_stats(
    fmt: str,
    root: str | Path,
    *,
    images: bool = True,
    per_split: Callable[[CIRSplit], dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Read every split present under ``root`` leniently and summarise it.

    Returns ``{"format", "root", "images_checked", "splits": {...}, "errors", "warnings"}``
    where ``splits`` is ``{category: {split: entry}}`` for a format with categories
    (FashionIQ) and ``{split: entry}`` otherwise; ``entry["queries"]`` is ``None`` when the
    split has an image list but no caption file (e.g. the CIRR train captions are not
    downloaded). Entries of a format with several ground truths per query (CIRCO) add
    ``mean_gt`` (``None`` for a split without ground truths) and have ``images`` ``None``
    when the gallery is unknown (no image index file and images not checked).
    ``per_split`` adds its keys to the entry of every split whose images were checked (the
    CLI's duplicate count, which needs the image layer).
    """
    root = Path(root)
    dataset = get_format(fmt)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: dataset root folder not found")
    splits: dict[str, Any] = {}
    entries: list[dict[str, Any]] = []
    for files in dataset.split_files(root):
        captions = _present(files.captions)
        if not captions and not (files.images is not None and _present(files.images)):
            continue
        data = dataset.load_split(root, files.split, files.group, images=images, strict=False)
        if not captions:
            data.findings = [f for f in data.findings if f.file != str(files.captions)]
            data.findings.append(_missing_captions(dataset.train_split, files))
        entry = _split_entry(data, captions)
        if per_split is not None and images and data.image_paths:
            entry.update(per_split(data))
        if files.images is None:  # the gallery comes with the annotations (CIRCO)
            if not images and not data.gallery:
                entry["images"] = None
            gts = [len(q.targets) for q in data.queries if q.targets]
            entry["mean_gt"] = round(sum(gts) / len(gts), 4) if gts else None
        if files.group is None:
            splits[files.split] = entry
        else:
            splits.setdefault(files.group, {})[files.split] = entry
        entries.append(entry)
    if not entries:
        wanted = ", ".join(
            sorted({str(f.captions.relative_to(root)) for f in dataset.split_files(root)})[:3]
        )
        raise FileNotFoundError(f"{root}: no {fmt} annotation files found (expected e.g. {wanted})")
    return {
        "format": fmt,
        "root": str(root),
        "images_checked": images,
        "splits": splits,
        "errors": sum(e["errors"] for e in entries),
        "warnings": sum(e["warnings"] for e in entries),
    }


def _present(path: Path) -> bool:
    """Whether ``path`` is there at all (a folder or a broken link in its place is read,
    so that the reader names the problem)."""
    return path.exists() or path.is_symlink()


def _missing_captions(train_split: str | None, files: SplitFiles) -> Finding:
    """A split with an image list but no caption file: a warning for the training split
    (its captions are a separate download, absent from the shared annotations), an error
    for an evaluation split."""
    if files.split == train_split:
        message = "caption file not found: the split's images are listed but not queried"
        return Finding(str(files.captions), message, None, None, 1, "warning")
    message = "caption file not found (the split's image list is there): no queries to score"
    return Finding(str(files.captions), message, None, None, 1, "error")


def _entries(stats: dict[str, Any]) -> list[dict[str, Any]]:
    nested = bool(get_format(stats["format"]).categories)
    return [e for v in stats["splits"].values() for e in (v.values() if nested else [v])]


def format_stats(stats: dict[str, Any]) -> str:
    """A plain-text table of :func:`dataset_stats` output, findings listed underneath."""
    rows: list[tuple[str, ...]] = []
    findings: list[str] = []
    nested = bool(get_format(stats["format"]).categories)
    for key, value in stats["splits"].items():
        items = value.items() if nested else [(key, value)]
        for split, entry in items:
            label = f"{key}/{split}" if nested else split
            queries = "-" if entry["queries"] is None else str(entry["queries"])
            images = "-" if entry["images"] is None else str(entry["images"])
            row = (label, queries, images, str(entry["errors"]))
            if "mean_gt" in entry:
                row += ("-" if entry["mean_gt"] is None else f"{entry['mean_gt']:.2f}",)
            if "duplicates" in entry:
                row += (str(entry["duplicates"]["merged_images"]),)
            rows.append(row)
            for f in entry["findings"]:
                where = f["file"] + (f": record {f['record']}" if f["record"] is not None else "")
                where += f": field {f['field']!r}" if f["field"] else ""
                findings.append(f"  {f['severity']}: {where}: {f['message']}")
    header: tuple[str, ...] = ("split", "queries", "images", "errors")
    if any("mean_gt" in e for e in _entries(stats)):
        header += ("mean gt",)
    if any("duplicates" in e for e in _entries(stats)):
        header += ("duplicates",)
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = [f"{stats['format']} at {stats['root']} (images checked: {stats['images_checked']})"]
    for row in [header, *rows]:
        lines.append(
            "  ".join(
                c.ljust(w) if i == 0 else c.rjust(w)
                for i, (c, w) in enumerate(zip(row, widths, strict=True))
            )
        )
    lines.append(f"{stats['errors']} errors, {stats['warnings']} warnings")
    if findings:
        lines.append("findings:")
        lines.extend(findings)
    return "\n".join(lines)
