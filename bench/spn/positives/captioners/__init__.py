"""Image captioners for positive scaling: one interface, three sources.

* ``oracle``: the synthetic benchmark's ground-truth descriptions (``metadata/images.json``),
  optionally corrupted (``noise``: per image, with that probability, one attribute is dropped
  or swapped before describing) to stand in for an imperfect multi-modal LLM;
* ``file``: precomputed captions, a JSON list of ``{"image_id": ..., "caption": ...}``
  records (the format of the SPN authors' ``mm_data/*/..._it_llava_<k>.json`` files; extra
  keys such as ``image_path`` are ignored), a JSON object name -> caption, or JSONL records;
* ``hf``: a Hugging Face image-to-text / vision-language model (id or local folder), prompted
  as in the paper ("please briefly describe the {category} in {k} words").

Every captioner truncates captions to its word budget ``words`` (``None``: no budget) and can
journal its work: ``caption(..., journal=path)`` appends each finished batch to a JSONL file
and, on a later call, skips the images already there (same file size and mtime), so an
interrupted run resumes where it stopped.

The interface and the journal live in :mod:`~bench.spn.positives.captioners.base`, one module
per source beside it; this package holds the registry and :func:`make_captioner`.
"""

from __future__ import annotations

import inspect
from typing import Any

from bench.spn.positives.captioners.base import (
    PAPER_PROMPT_CATEGORY,
    PAPER_PROMPT_IMAGE,
    Captioner,
    CaptionerError,
    image_stamp,
    read_journal,
    truncate_words,
)
from bench.spn.positives.captioners.file import FileCaptioner, read_caption_file
from bench.spn.positives.captioners.hf import HFCaptioner
from bench.spn.positives.captioners.oracle import OracleCaptioner

__all__ = [
    "CAPTIONERS",
    "PAPER_PROMPT_CATEGORY",
    "PAPER_PROMPT_IMAGE",
    "Captioner",
    "CaptionerError",
    "FileCaptioner",
    "HFCaptioner",
    "OracleCaptioner",
    "image_stamp",
    "make_captioner",
    "read_caption_file",
    "read_journal",
    "truncate_words",
]

CAPTIONERS: dict[str, type[Captioner]] = {
    "oracle": OracleCaptioner,
    "file": FileCaptioner,
    "hf": HFCaptioner,
}


def make_captioner(kind: str, **options: Any) -> Captioner:
    """Build a captioner by kind (``oracle``, ``file``, ``hf``) with its options."""
    try:
        cls = CAPTIONERS[kind]
    except KeyError:
        raise CaptionerError(
            f"unknown captioner {kind!r}; expected one of {sorted(CAPTIONERS)}"
        ) from None
    try:
        inspect.signature(cls).bind(**options)
    except TypeError as exc:
        allowed = [p for p in inspect.signature(cls).parameters]
        raise CaptionerError(
            f"{kind} captioner: bad options {sorted(options)} ({exc}); it takes {allowed}"
        ) from None
    return cls(**options)
