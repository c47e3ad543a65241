"""The captioner interface: :class:`Captioner`, its word budget and its caption journal.

Every captioner truncates captions to its word budget ``words`` (``None``: no budget) and can
journal its work: ``caption(..., journal=path)`` appends each finished batch to a JSONL file
and, on a later call, skips the images already there (same file size and mtime), so an
interrupted run resumes where it stopped. Also here: the paper's prompts and
:class:`CaptionerError`, shared by the captioners of :mod:`bench.spn.positives.captioners`.
"""

from __future__ import annotations

import json
import os
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tqdm import tqdm

from bench.core.errors import CirbenchError

#: The paper's prompts (SPN4CIR ``zscir/captioner_llava.py``).
PAPER_PROMPT_CATEGORY = "please briefly describe the {category} in {k} words"
PAPER_PROMPT_IMAGE = "please briefly describe the image in {k} words"
_TRAILING = " \t\n.,;:!?"


class CaptionerError(CirbenchError, ValueError):
    """A captioner cannot be built or cannot caption the images it was given."""


def truncate_words(text: str, words: int | None) -> str:
    """Collapse blanks, keep the first ``words`` words, strip trailing punctuation."""
    tokens = text.split()
    if words is not None:
        tokens = tokens[:words]
    return " ".join(tokens).strip(_TRAILING)


def image_stamp(path: Path) -> str:
    """Size and modification time of an image file (a changed file is captioned again)."""
    st = os.stat(path)
    return f"{st.st_size}:{st.st_mtime_ns}"


def read_journal(path: Path) -> dict[str, tuple[str, str]]:
    """name -> (stamp, caption) from a caption journal; a torn last line is ignored."""
    done: dict[str, tuple[str, str]] = {}
    if not path.is_file():
        return done
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            try:
                record = json.loads(line)
                done[record["image_id"]] = (record.get("stamp", ""), record["caption"])
            except (ValueError, KeyError, TypeError):
                continue  # an interrupted append: the image is captioned again
    return done


def _append_journal(path: Path, records: list[dict[str, str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


class Captioner(ABC):
    """Turns images into short captions. Subclasses implement :meth:`_caption_batch`."""

    name: str = "captioner"
    batch_size: int = 1 << 30  # captioners without a model take everything in one batch

    def __init__(self, *, words: int | None = None, progress: bool = True) -> None:
        if words is not None and words < 1:
            raise CaptionerError(f"{self.name}: words must be >= 1 or None, got {words}")
        self.words = words
        self.progress = progress
        self.calls = 0  # batches captioned by this object (tests and reports read it)

    @abstractmethod
    def _caption_batch(
        self, names: list[str], paths: Mapping[str, Path], category: str | None
    ) -> list[str]:
        """Raw captions of one batch, in order."""

    def options(self) -> dict[str, Any]:
        """What, besides the kind, determines the captions (part of every cache key)."""
        return {}

    def describe(self) -> dict[str, Any]:
        """Provenance: kind, word budget and the options that determine the captions."""
        return {"kind": self.name, "words": self.words, **self.options()}

    def caption(
        self,
        names: Sequence[str],
        paths: Mapping[str, Path],
        *,
        category: str | None = None,
        journal: Path | None = None,
    ) -> dict[str, str]:
        """Captions of ``names`` (name -> caption). ``category`` (FashionIQ) goes into the
        prompt of prompted captioners; ``journal`` makes the work resumable (module doc)."""
        names = list(names)
        missing_paths = [n for n in names if n not in paths]
        if missing_paths:
            raise CaptionerError(
                f"{self.name}: no image path for {len(missing_paths)} images, "
                f"e.g. {missing_paths[:3]}"
            )
        stamps = {n: image_stamp(Path(paths[n])) for n in names} if journal else {}
        done: dict[str, str] = {}
        if journal is not None:
            for name, (stamp, text) in read_journal(journal).items():
                if stamps.get(name) == stamp:
                    done[name] = text
        todo = [n for n in names if n not in done]
        bar = tqdm(
            total=len(todo),
            desc=f"caption ({self.name}{', ' + category if category else ''})",
            disable=not self.progress or not todo,
            leave=False,
        )
        try:
            for start in range(0, len(todo), self.batch_size):
                batch = todo[start : start + self.batch_size]
                raw = self._caption_batch(batch, paths, category)
                self.calls += 1
                if len(raw) != len(batch):
                    raise CaptionerError(
                        f"{self.name}: {len(raw)} captions for a batch of {len(batch)} images"
                    )
                texts = [truncate_words(t, self.words) for t in raw]
                done.update(zip(batch, texts, strict=True))
                if journal is not None:
                    _append_journal(
                        journal,
                        [
                            {"image_id": n, "caption": t, "stamp": stamps[n]}
                            for n, t in zip(batch, texts, strict=True)
                        ],
                    )
                bar.update(len(batch))
        finally:
            bar.close()
        return {n: done[n] for n in names}
