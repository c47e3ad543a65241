"""Per-split statistics and validation findings for a dataset folder (``cirbench data stats``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.data import circo, cirr, fashioniq
from bench.data.records import CIRSplit

FORMATS = ("fashioniq", "cirr", "circo")


def _split_entry(split: CIRSplit, captions_present: bool) -> dict[str, Any]:
    return {
        "queries": len(split.queries) if captions_present else None,
        "images": len(split.gallery),
        "errors": sum(f.severity == "error" for f in split.findings),
        "warnings": sum(f.severity == "warning" for f in split.findings),
        "findings": [f.as_dict() for f in split.findings],
    }


def dataset_stats(fmt: str, root: str | Path, *, images: bool = True) -> dict[str, Any]:
    """Read every split present under ``root`` leniently and summarise it.

    Returns ``{"format", "root", "images_checked", "splits": {...}, "errors", "warnings"}``
    where ``splits`` is ``{category: {split: entry}}`` for FashionIQ and ``{split: entry}``
    for CIRR and CIRCO; ``entry["queries"]`` is ``None`` when the split has an image list
    but no caption file (e.g. the CIRR train captions are not downloaded). CIRCO entries
    add ``mean_gt`` (mean number of ground truths per query; ``None`` for test) and have
    ``images`` ``None`` when the gallery is unknown (no image index file and images not
    checked).
    """
    root = Path(root)
    if fmt not in FORMATS:
        raise ValueError(f"unknown dataset format {fmt!r}; expected one of {FORMATS}")
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: dataset root folder not found")
    splits: dict[str, Any] = {}
    entries: list[dict[str, Any]] = []
    if fmt == "fashioniq":
        for category in fashioniq.CATEGORIES:
            for split in fashioniq.SPLITS:
                if not _present(fashioniq.caption_file(root, category, split)) and not _present(
                    fashioniq.split_file(root, category, split)
                ):
                    continue
                data = fashioniq.load_fashioniq_split(
                    root, category, split, images=images, strict=False
                )
                entry = _split_entry(data, _present(fashioniq.caption_file(root, category, split)))
                splits.setdefault(category, {})[split] = entry
                entries.append(entry)
    elif fmt == "circo":
        for split in circo.SPLITS:
            if not _present(circo.annotation_file(root, split)):
                continue
            data = circo.load_circo_split(root, split, images=images, strict=False)
            entry = _split_entry(data, True)
            if not images and not _present(circo.image_info_file(root)):
                entry["images"] = None
            gts = [len(q.targets) for q in data.queries if q.targets]
            entry["mean_gt"] = round(sum(gts) / len(gts), 4) if gts else None
            splits[split] = entry
            entries.append(entry)
    else:
        for split in cirr.SPLITS:
            cap, img = cirr.caption_file(root, split), cirr.split_file(root, split)
            if not _present(cap) and not _present(img):
                continue
            data = cirr.load_cirr_split(root, split, images=images, strict=False)
            if not _present(cap):
                data.findings = [f for f in data.findings if f.file != str(cap)]
            entry = _split_entry(data, _present(cap))
            splits[split] = entry
            entries.append(entry)
    if not entries:
        raise FileNotFoundError(
            f"{root}: no {fmt} annotation files found (expected "
            + ("annotations/{val,test}.json)" if fmt == "circo" else "captions/ and image_splits/)")
        )
    return {
        "format": fmt,
        "root": str(root),
        "images_checked": images,
        "splits": splits,
        "errors": sum(e["errors"] for e in entries),
        "warnings": sum(e["warnings"] for e in entries),
    }


def _present(path: Path) -> bool:
    return path.is_file()


def format_stats(stats: dict[str, Any]) -> str:
    """A plain-text table of :func:`dataset_stats` output, findings listed underneath."""
    rows: list[tuple[str, ...]] = []
    findings: list[str] = []
    nested = stats["format"] == "fashioniq"
    for key, value in stats["splits"].items():
        items = value.items() if nested else [(key, value)]
        for split, entry in items:
            label = f"{key}/{split}" if nested else split
            queries = "-" if entry["queries"] is None else str(entry["queries"])
            images = "-" if entry["images"] is None else str(entry["images"])
            row = (label, queries, images, str(entry["errors"]))
            if "mean_gt" in entry:
                row += ("-" if entry["mean_gt"] is None else f"{entry['mean_gt']:.2f}",)
            rows.append(row)
            for f in entry["findings"]:
                where = f["file"] + (f": record {f['record']}" if f["record"] is not None else "")
                where += f": field {f['field']!r}" if f["field"] else ""
                findings.append(f"  {f['severity']}: {where}: {f['message']}")
    header: tuple[str, ...] = ("split", "queries", "images", "errors")
    if stats["format"] == "circo":
        header += ("mean gt",)
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
