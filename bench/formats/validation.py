"""Collects validation findings; strict mode raises on the first error, lenient mode records it."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from bench.core.errors import DataFormatError
from bench.core.reading import read_json
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


def read_json_logged(log: FindingLog, path: Path) -> Any | None:
    """:func:`~bench.core.reading.read_json`, but a lenient log records the problem and
    gets ``None`` back (a file holding ``null`` is an error too: nothing in it)."""
    try:
        value = read_json(path)
    except DataFormatError as exc:
        if log.strict:
            raise
        log.error(exc.file, exc.detail)
        return None
    if value is None:
        log.error(path, "the file holds null, expected its records")
    return value


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
    if not records:
        log.error(path, "the file holds no records (an empty list)")
        return
    for index, record in enumerate(records):
        if isinstance(record, dict):
            yield index, record
        else:
            log.error(path, f"expected an object, got {type(record).__name__}", record=index)


class DuplicateQueries:
    """Queries that repeat an earlier one of their file (same reference, target and
    texts): an error where the split has targets (a query scored twice), a warning where
    it has none (the official FashionIQ test files repeat 12 queries, CIRR test1 4)."""

    def __init__(self, log: FindingLog, path: Path) -> None:
        self.log = log
        self.path = path
        self.first: dict[tuple[Any, ...], int] = {}
        self.untargeted: list[int] = []

    def seen(self, index: int, reference: str, target: str | None, texts: tuple[str, ...]) -> bool:
        """Whether record ``index`` repeats an earlier query (an error logged if so)."""
        key = (reference, target, texts)
        if key not in self.first:
            self.first[key] = index
            return False
        if target is not None:
            self.log.error(
                self.path,
                f"repeats record {self.first[key]} (same reference, target and text)",
                record=index,
            )
            return True
        self.untargeted.append(index)
        return False

    def summarize(self) -> None:
        if self.untargeted:
            shown = ", ".join(map(str, self.untargeted[:EXAMPLES_SHOWN]))
            self.log.warning(
                self.path,
                f"{len(self.untargeted)} queries repeat an earlier one (records {shown}; "
                "known quirk of the official test files; kept)",
                count=len(self.untargeted),
            )


def blank_text_warning(log: FindingLog, path: Path, records: list[int], field: str) -> None:
    """One warning for the records whose query text is empty or blank (a known quirk of
    the official files: 16 FashionIQ captions, one CIRR test1 caption)."""
    if records:
        shown = ", ".join(map(str, records[:EXAMPLES_SHOWN]))
        log.warning(
            path,
            f"{len(records)} empty or blank captions (records {shown}; known quirk of the "
            "official files; kept)",
            field=field,
            count=len(records),
        )


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
