"""Test-server submission files: the shared ranked-list checker, findings, atomic JSON I/O.

A submission is a JSON object ``{query id: ranked list of predictions, best first}``. The
CIRR test1 server (:mod:`bench.metrics.cirr`, ``"version": "rc2"``) and the CIRCO
evaluation server (:mod:`bench.metrics.circo`) differ only in what a list holds and how
long it is, which a :class:`RankedListFormat` describes. :func:`check_ranked_lists` checks
every list of a payload (id syntax, list type and length, item syntax, repeats, gallery
membership, plus a format's own per-list checks) and :func:`check_expected_ids` the set of
ids; problems are :class:`Finding` s naming the file, query id and field. Files are
written atomically and read back with duplicate JSON keys rejected.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable, Container, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.core.errors import DataFormatError
from bench.metrics.kernels import SHOW

#: A query's id: a CIRR pairid or a CIRCO query id, as an int or a decimal string.
PairId = int | str
#: A non-negative decimal integer without leading zeros (query ids, CIRCO image ids).
ID_PATTERN = re.compile(r"(0|[1-9][0-9]*)")
#: A format's own checks of one list (query id, parsed items) -> messages, field "prediction".
EntryCheck = Callable[[str, list[Any]], list[str]]


@dataclass(frozen=True)
class Finding:
    """One problem of a submission file; ``str()`` reads like a ``DataFormatError``."""

    file: str
    message: str
    record: str | None = None
    field: str | None = None

    def __str__(self) -> str:
        return str(DataFormatError(self.file, self.message, record=self.record, field=self.field))


@dataclass(frozen=True)
class RankedListFormat:
    """What one format's ranked lists hold and how long they are, and how messages name them."""

    id_label: str  # a key in messages: "pair id" / "query id"
    id_field: str  # the field of findings about the set of ids: "pairid" / "query_id"
    item: str  # one list item in messages: "name" / "image id"
    item_kind: str  # what every item must be: "strings" / "non-negative integers"
    parse: Callable[[Any], Any]  # an item's value, None when it is malformed
    length: int | None  # the exact list length; None: not checked
    length_note: str = ""  # ends the length message, e.g. " for 'recall'"


# --------------------------------------------------------------------------- checking


def not_an_object(file: str, payload: Any) -> list[Finding]:
    """The finding of a payload that is not a JSON object; [] when it is one."""
    if isinstance(payload, dict):
        return []
    return [Finding(file, f"top level must be a JSON object, got {type(payload).__name__}")]


def check_ranked_lists(
    file: str,
    entries: Mapping[str, Any],
    fmt: RankedListFormat,
    *,
    gallery: Container[Any] | None = None,
    entry_check: EntryCheck | None = None,
) -> list[Finding]:
    """Findings of every ``{query id: ranked list}`` entry, in order.

    Per entry: the key must be a non-negative integer and the value a list of exactly
    ``fmt.length`` items that ``fmt.parse`` accepts, without repeats, all in ``gallery``
    (parsed values) when it is given; ``entry_check`` adds a format's own checks.
    """
    found: list[Finding] = []
    for key, value in entries.items():
        found.extend(_entry_findings(file, key, value, fmt, gallery, entry_check))
    return found


def _entry_findings(
    file: str,
    key: str,
    value: Any,
    fmt: RankedListFormat,
    gallery: Container[Any] | None,
    entry_check: EntryCheck | None,
) -> list[Finding]:
    """Findings of one entry; a bad key, a non-list or malformed items stop its checks."""
    if not ID_PATTERN.fullmatch(key):
        return [Finding(file, f"key is not a {fmt.id_label} (a non-negative integer)", key)]
    if not isinstance(value, list):
        return [Finding(file, f"must be a list, got {type(value).__name__}", key, "prediction")]
    messages: list[str] = []
    if fmt.length is not None and len(value) != fmt.length:
        messages.append(
            f"must hold exactly {fmt.length} {fmt.item}s{fmt.length_note}, got {len(value)}"
        )
    items = [fmt.parse(v) for v in value]
    bad = [v for v, i in zip(value, items, strict=True) if i is None]
    if bad:
        messages.append(f"{fmt.item}s must be {fmt.item_kind}, got {bad[:SHOW]!r}")
        return [Finding(file, m, key, "prediction") for m in messages]
    if len(set(items)) != len(items):
        dups = sorted({i for i in items if items.count(i) > 1})
        messages.append(f"repeated {fmt.item}s {dups[:SHOW]}")
    if gallery is not None:
        outside = [i for i in items if i not in gallery]
        if outside:
            messages.append(f"{len(outside)} {fmt.item}(s) not in the gallery: {outside[:SHOW]}")
    if entry_check is not None:
        messages.extend(entry_check(key, items))
    return [Finding(file, m, key, "prediction") for m in messages]


def check_expected_ids(
    file: str, keys: Sequence[str], expected_ids: Iterable[PairId], fmt: RankedListFormat
) -> list[Finding]:
    """Findings of expected ids missing from ``keys`` and of well-formed keys not expected."""
    expected = [str(p) for p in expected_ids]
    present = set(keys)
    found: list[Finding] = []
    missing = [p for p in expected if p not in present]
    if missing:
        found.append(
            Finding(
                file,
                f"{len(missing)} of {len(expected)} expected {fmt.id_label}s are missing; "
                f"first: {missing[:SHOW]}",
                field=fmt.id_field,
            )
        )
    expected_set = set(expected)
    extra = [k for k in keys if k not in expected_set and ID_PATTERN.fullmatch(k)]
    if extra:
        found.append(
            Finding(
                file,
                f"{len(extra)} {fmt.id_label}(s) are not expected; first: {extra[:SHOW]}",
                field=fmt.id_field,
            )
        )
    return found


def raise_if_repeated_ids(file: str | Path, ids: Sequence[str], id_label: str) -> None:
    """``DataFormatError`` naming the first id that occurs more than once in ``ids``."""
    dups = [p for p, c in Counter(ids).items() if c > 1]
    if dups:
        raise DataFormatError(
            file, f"{len(dups)} {id_label}(s) occur more than once", record=dups[0]
        )


def raise_first(found: list[Finding]) -> None:
    """``DataFormatError`` of the first finding, counting the others."""
    first = found[0]
    more = f" (and {len(found) - 1} more problem(s))" if len(found) > 1 else ""
    raise DataFormatError(first.file, first.message + more, record=first.record, field=first.field)


# --------------------------------------------------------------------------- files


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key!r}")
        out[key] = value
    return out


def _load(path: str | Path) -> tuple[Any, list[Finding]]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        return None, [Finding(str(path), f"cannot be read: {exc}")]
    try:
        return json.loads(text, object_pairs_hook=_no_duplicate_keys), []
    except ValueError as exc:
        return None, [Finding(str(path), f"is not valid JSON: {exc}")]


def load_and_check(
    path: str | Path, check: Callable[..., list[Finding]], **kwargs: Any
) -> tuple[Any, list[Finding]]:
    """Load a submission file and run ``check`` on its payload (file problems come first)."""
    payload, found = _load(path)
    if found:
        return payload, found
    return payload, check(path, payload, **kwargs)
