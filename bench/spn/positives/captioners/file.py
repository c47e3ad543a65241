"""The ``file`` captioner: precomputed captions read from a file.

The file is a JSON list of ``{"image_id": ..., "caption": ...}`` records (the format of the
SPN authors' ``mm_data/*/..._it_llava_<k>.json`` files; extra keys such as ``image_path``
are ignored), a JSON object name -> caption, or JSONL records.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bench.core.errors import DataFormatError
from bench.core.hashing import digest
from bench.spn.positives.captioners.base import Captioner


def read_caption_file(
    path: Path, *, key: str = "image_id", field: str = "caption"
) -> dict[str, str]:
    """name -> caption from a JSON list of records, a JSON object or a JSONL file."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataFormatError(path, "caption file not found") from None
    try:
        data: Any = json.loads(text)
    except ValueError:
        data = []
        for line_no, line in enumerate(text.splitlines()):
            if not line.strip():
                continue
            try:
                data.append(json.loads(line))
            except ValueError as exc:
                raise DataFormatError(path, f"not JSON nor JSONL ({exc})", record=line_no) from None
    if isinstance(data, dict):
        records: list[Any] = [{key: k, field: v} for k, v in data.items()]
        where = list(data)
    elif isinstance(data, list):
        records = data
        where = list(range(len(data)))
    else:
        raise DataFormatError(
            path, f"expected a JSON list of records or an object, got {type(data).__name__}"
        )
    captions: dict[str, str] = {}
    for record, index in zip(records, where, strict=True):
        if not isinstance(record, dict):
            raise DataFormatError(
                path, f"expected an object, got {type(record).__name__}", record=index
            )
        for name in (key, field):
            if name not in record:
                raise DataFormatError(path, "missing field", record=index, field=name)
            if not isinstance(record[name], str):
                raise DataFormatError(
                    path,
                    f"expected a string, got {type(record[name]).__name__}",
                    record=index,
                    field=name,
                )
        captions[record[key]] = record[field]
    return captions


class FileCaptioner(Captioner):
    """Captions imported from a file (module doc lists the formats)."""

    name = "file"

    def __init__(
        self,
        *,
        path: str | Path,
        key: str = "image_id",
        field: str = "caption",
        words: int | None = None,
        progress: bool = True,
    ) -> None:
        super().__init__(words=words, progress=progress)
        self.path = Path(path)
        self.key = key
        self.field = field
        self.captions = read_caption_file(self.path, key=key, field=field)

        self._digest = digest(sorted(self.captions.items()))

    def options(self) -> dict[str, Any]:
        return {"path": str(self.path), "content": self._digest}

    def _caption_batch(
        self, names: list[str], paths: Mapping[str, Path], category: str | None
    ) -> list[str]:
        missing = [n for n in names if n not in self.captions]
        if missing:
            raise DataFormatError(
                self.path,
                f"no {self.field!r} for {len(missing)} of the {len(names)} images to caption, "
                f"e.g. {missing[:3]}",
            )
        return [self.captions[n] for n in names]
