"""Exceptions with messages that name the file, record and field at fault."""

from __future__ import annotations

from pathlib import Path


class CirbenchError(Exception):
    """Base class of every error cirbench raises on purpose."""


class DataFormatError(CirbenchError, ValueError):
    """An annotation file (or image) does not match the format the reader expects.

    The message always names the file; the record index and field when they are known.
    """

    def __init__(
        self,
        file: str | Path,
        message: str,
        *,
        record: int | str | None = None,
        field: str | None = None,
    ) -> None:
        self.file = str(file)
        self.record = record
        self.field = field
        self.detail = message
        where = self.file
        if record is not None:
            where += f": record {record}"
        if field is not None:
            where += f": field {field!r}"
        super().__init__(f"{where}: {message}")


class MetricInputError(CirbenchError, ValueError):
    """Inputs to a metric are inconsistent (shapes, names, targets missing from the gallery)."""
