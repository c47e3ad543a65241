"""Collects validation findings; strict mode raises on the first error, lenient mode records it."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from bench.core.errors import DataFormatError
from bench.formats.records import Finding

#: How many example names a "missing images" finding quotes.
EXAMPLES_SHOWN = 5


class FindingLog:
    """Gathers findings for one split. ``strict=True`` turns every error into an exception."""

    def __init__(self, strict: bool) -> None:
        self.strict = strict
        self.findings: list[Finding] = []

    def error(
        self,
        file: str | Path,
        message: str,
        *,
        record: int | str | None = None,
        field: str | None = None,
        count: int = 1,
    ) -> None:
        finding = Finding(str(file), message, record, field, count, "error")
        if self.strict:
            raise finding.to_error()
        self.findings.append(finding)

    def warning(
        self,
        file: str | Path,
        message: str,
        *,
        record: int | str | None = None,
        field: str | None = None,
        count: int = 1,
    ) -> None:
        self.findings.append(Finding(str(file), message, record, field, count, "warning"))


def read_json(path: Path) -> Any:
    """Read a JSON file; a missing file or malformed JSON raises an error naming the file."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataFormatError(path, "file not found") from None
    except UnicodeDecodeError as exc:
        raise DataFormatError(path, f"not UTF-8 text: {exc}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataFormatError(
            path, f"malformed JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"
        ) from None


def read_json_logged(log: FindingLog, path: Path) -> Any | None:
    """:func:`read_json`, but a lenient log records the problem and gets ``None`` back."""
    try:
        return read_json(path)
    except DataFormatError as exc:
        if log.strict:
            raise
        log.error(exc.file, exc.detail)
        return None


def iter_records(log: FindingLog, path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(index, record) for every JSON object of a caption / annotation file that is a list
    of records; a missing or malformed file, a non-list or a non-object record is logged
    (strict: raised) and yields nothing for it."""
    records = read_json_logged(log, path)
    if records is None:
        return
    if not isinstance(records, list):
        log.error(path, f"expected a JSON list of records, got {type(records).__name__}")
        return
    for index, record in enumerate(records):
        if isinstance(record, dict):
            yield index, record
        else:
            log.error(path, f"expected an object, got {type(record).__name__}", record=index)


def type_name(value: object) -> str:
    return type(value).__name__


def check_field(
    log: FindingLog,
    file: Path,
    index: int,
    record: dict[str, Any],
    field: str,
    expected: type | tuple[type, ...],
    *,
    required: bool = True,
    field_prefix: str = "",
) -> bool:
    """Check that ``record[field]`` exists and has the expected type; log an error if not.

    ``field_prefix`` qualifies nested fields in messages (``"img_set."``).
    """
    if field not in record:
        if required:
            log.error(file, "missing field", record=index, field=field_prefix + field)
            return False
        return True
    value = record[field]
    # bool is an int subclass: never accept it where a number or string is expected.
    if isinstance(value, bool) or not isinstance(value, expected):
        names = (
            " or ".join(t.__name__ for t in expected)
            if isinstance(expected, tuple)
            else expected.__name__
        )
        log.error(
            file,
            f"expected {names}, got {type_name(value)} ({value!r:.60})",
            record=index,
            field=field_prefix + field,
        )
        return False
    return True


def check_images_on_disk(
    log: FindingLog, split_file: Path, paths: dict[str, Path], existing: Iterable[Path] | None
) -> set[str]:
    """Report gallery images whose file is absent (one finding with a count); return their names.

    ``existing`` is the set of files known to exist (listing a folder once is much faster
    than one ``stat`` per image); ``None`` means check each path.
    """
    present = set(existing) if existing is not None else None
    missing = sorted(
        name
        for name, path in paths.items()
        if not (path in present if present is not None else path.is_file())
    )
    if missing:
        shown = ", ".join(missing[:EXAMPLES_SHOWN])
        more = f" and {len(missing) - EXAMPLES_SHOWN} more" if len(missing) > EXAMPLES_SHOWN else ""
        log.error(
            split_file,
            f"{len(missing)} of {len(paths)} images listed here are missing on disk "
            f"(e.g. {shown}{more})",
            count=len(missing),
        )
    return set(missing)
