"""Typed records shared by every format: queries, splits, validation findings, training
triplets (human and generated)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from bench.core.errors import DataFormatError

if TYPE_CHECKING:
    from PIL import Image

Severity = Literal["error", "warning"]


@dataclass(frozen=True)
class Query:
    """One composed query: a reference image plus modification text, and its target(s).

    ``target`` is the hard target (``None`` in splits without targets, e.g. test);
    ``captions`` holds the raw modification texts (two for FashionIQ, one for CIRR);
    ``group`` is the CIRR ``img_set`` members (reference included), empty elsewhere;
    ``soft_targets`` is CIRR's ``target_soft`` mapping, ``None`` elsewhere;
    ``targets`` is every ground-truth target (CIRCO ``gt_img_ids``, ``target`` first),
    empty elsewhere.
    """

    query_id: str
    index: int
    reference: str
    target: str | None
    captions: tuple[str, ...]
    group: tuple[str, ...] = ()
    soft_targets: Mapping[str, float] | None = None
    targets: tuple[str, ...] = ()


@dataclass(frozen=True)
class Finding:
    """One validation finding: what is wrong, where, and how often.

    ``error`` findings make a strict reader fail and a lenient one skip the record;
    ``warning`` findings (known data quirks) are reported and the record is kept.
    """

    file: str
    message: str
    record: int | str | None = None
    field: str | None = None
    count: int = 1
    severity: Severity = "error"

    def __str__(self) -> str:
        where = self.file
        if self.record is not None:
            where += f": record {self.record}"
        if self.field is not None:
            where += f": field {self.field!r}"
        return f"{self.severity}: {where}: {self.message}"

    def to_error(self) -> DataFormatError:
        return DataFormatError(self.file, self.message, record=self.record, field=self.field)

    def as_dict(self) -> dict[str, object]:
        return {
            "severity": self.severity,
            "file": self.file,
            "record": self.record,
            "field": self.field,
            "message": self.message,
            "count": self.count,
        }


@dataclass
class CIRSplit:
    """The queries and the gallery of one split (one category for FashionIQ).

    ``gallery`` lists the split's image names in file order; ``image_paths`` maps every
    gallery image name to its path on disk (which need not exist when images are absent).
    """

    dataset: str
    split: str
    category: str | None
    queries: list[Query]
    gallery: list[str]
    image_paths: dict[str, Path]
    findings: list[Finding] = field(default_factory=list)

    @property
    def name(self) -> str:
        return f"{self.category}/{self.split}" if self.category else self.split

    @property
    def has_targets(self) -> bool:
        return all(q.target is not None for q in self.queries)

    def open_image(self, name: str) -> Image.Image:
        """Load one image lazily, as RGB, with an error naming the file when it fails."""
        from PIL import Image, UnidentifiedImageError

        try:
            path = self.image_paths[name]
        except KeyError:
            raise DataFormatError(
                f"{self.dataset}:{self.name}", f"image {name!r} is not in this split"
            ) from None
        try:
            with Image.open(path) as image:
                return image.convert("RGB")
        except FileNotFoundError:
            raise DataFormatError(path, "image file not found") from None
        except (UnidentifiedImageError, OSError) as exc:
            raise DataFormatError(path, f"cannot decode image: {exc}") from None


@dataclass(frozen=True)
class TrainTriplet:
    """A training triplet: reference and target image names and the raw caption(s)."""

    reference: str
    target: str
    captions: tuple[str, ...]
    source: str  # split name it came from (e.g. "dress/train", "generated/<name>")
    generated: bool = False  # captions are alternative template renderings (SPN positives)


@dataclass(frozen=True)
class GeneratedTriplet:
    """One generated triplet (positive scaling). ``text`` is the modification text to train
    with; ``source`` names where it came from (``"dress/extend_<name>"``, ``"extend_<name>"``)."""

    reference: str
    target: str
    text: str
    source: str
    category: str | None = None
    alternative: str = ""
    reference_caption: str = ""
    target_caption: str = ""
