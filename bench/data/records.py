"""Typed records shared by every dataset reader: queries, splits and validation findings."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Query:
    """One composed query: a reference image plus modification text, and its target(s).

    ``target`` is the hard target (``None`` in splits without targets, e.g. test);
    ``captions`` holds the raw modification texts (two for FashionIQ, one for CIRR);
    ``group`` is the CIRR ``img_set`` members (reference included), empty elsewhere;
    ``soft_targets`` is CIRR's ``target_soft`` mapping, ``None`` elsewhere.
    """

    query_id: str
    index: int
    reference: str
    target: str | None
    captions: tuple[str, ...]
    group: tuple[str, ...] = ()
    soft_targets: Mapping[str, float] | None = None


@dataclass(frozen=True)
class Finding:
    """One validation finding: what is wrong, where, and how often."""

    file: str
    message: str
    record: int | str | None = None
    field: str | None = None
    count: int = 1

    def __str__(self) -> str:
        where = self.file
        if self.record is not None:
            where += f": record {self.record}"
        if self.field is not None:
            where += f": field {self.field!r}"
        times = f" ({self.count} occurrences)" if self.count > 1 else ""
        return f"{where}: {self.message}{times}"


@dataclass
class CIRSplit:
    """The queries and the gallery of one split (one category for FashionIQ).

    ``gallery`` lists the split's image names in file order; ``image_paths`` maps every
    known image name to its path on disk (which may not exist when images are absent).
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
