"""Positive scaling (P) of the SPN paper: generated training triplets.

The pipeline (``bench.positives.pipeline.build_positives``) captions a pool of images
(:mod:`~bench.positives.captioners`), removes near-duplicates (:mod:`~bench.positives.dedup`),
pairs each reference with targets from a window of its similarity ranking
(:mod:`~bench.positives.matching`), writes a modification text for each pair from the two
captions (:mod:`~bench.positives.templates`) and writes the triplets next to the dataset's
official files in its own format (:mod:`~bench.positives.writer`). Every step is cached on
disk, keyed by its inputs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

#: public name -> defining module; imported on first use, so that ``bench.positives.cli``
#: (imported by the ``cirbench`` command line) does not pull in torch.
_EXPORTS = {
    "PAPER_TEMPLATES": "templates",
    "Captioner": "captioners",
    "DedupResult": "dedup",
    "GeneratedSet": "pipeline",
    "GeneratedTriplet": "writer",
    "PositivesSpec": "pipeline",
    "TemplateComposer": "templates",
    "build_positives": "pipeline",
    "deduplicate": "dedup",
    "embed_images": "matching",
    "make_captioner": "captioners",
    "match_pairs": "matching",
    "read_generated": "writer",
    "write_generated": "writer",
}
__all__ = [
    "PAPER_TEMPLATES",
    "Captioner",
    "DedupResult",
    "GeneratedSet",
    "GeneratedTriplet",
    "PositivesSpec",
    "TemplateComposer",
    "build_positives",
    "deduplicate",
    "embed_images",
    "make_captioner",
    "match_pairs",
    "read_generated",
    "write_generated",
]

if TYPE_CHECKING:
    from bench.positives.captioners import Captioner, make_captioner
    from bench.positives.dedup import DedupResult, deduplicate
    from bench.positives.matching import embed_images, match_pairs
    from bench.positives.pipeline import GeneratedSet, PositivesSpec, build_positives
    from bench.positives.templates import PAPER_TEMPLATES, TemplateComposer
    from bench.positives.writer import GeneratedTriplet, read_generated, write_generated


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'bench.positives' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f"bench.positives.{_EXPORTS[name]}"), name)
    globals()[name] = value
    return value
