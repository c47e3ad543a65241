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

    def __reduce__(self) -> tuple[object, ...]:  # picklable: raised in worker processes
        return (_data_format_error, (self.file, self.detail, self.record, self.field))


def _data_format_error(
    file: str, message: str, record: int | str | None, field: str | None
) -> DataFormatError:
    return DataFormatError(file, message, record=record, field=field)


class MetricInputError(CirbenchError, ValueError):
    """Inputs to a metric are inconsistent (shapes, names, targets missing from the gallery)."""


class UnknownNameError(CirbenchError, KeyError):
    """A name (method, backbone, suite, profile, format, metric, phase ...) that is not one
    of the known choices; the message suggests the closest ones ("did you mean")."""

    def __init__(self, kind: str, name: str, choices: list[str] | tuple[str, ...]) -> None:
        self.kind = kind
        self.name = name
        self.choices = sorted(choices)
        super().__init__(unknown_name_message(kind, name, self.choices))

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


def unknown_name_message(kind: str, name: str, choices: list[str] | tuple[str, ...]) -> str:
    """``unknown method 'clip4cirr' (did you mean 'clip4cir'?); known: ...``."""
    import difflib

    close = difflib.get_close_matches(str(name), [str(c) for c in choices], n=3, cutoff=0.6)
    hint = f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""
    return f"unknown {kind} {name!r}{hint}; known: {', '.join(sorted(map(str, choices)))}"
