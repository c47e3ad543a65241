"""A synthetic, compositional CIR benchmark in the official FashionIQ, CIRR and CIRCO
layouts: the public API, and ``ensure_synthetic`` (the cached benchmark of a size and seed).

The task is compositional by construction: every image's attribute tuple is unique
within its split (and category), so the reference attributes with the text's changes
applied ("composed attributes") identify exactly one image, the target. Edits change
1-3 attributes and many are relative ("is larger", "move the star to the right"), so
neither the reference alone (many near neighbours) nor the text alone (many images with
the attributes it mentions) finds the target. CIRCO-style queries instead have several
ground truths (:mod:`bench.synthetic.circo`).

Modules:

* :mod:`~bench.synthetic.world`: vocabularies, sizes, attribute index, descriptions,
  seeded randomness;
* :mod:`~bench.synthetic.text`: edits and phrases of the one-object world (FashionIQ
  and CIRCO captions);
* :mod:`~bench.synthetic.fashioniq`, :mod:`~bench.synthetic.cirr` (with
  :mod:`~bench.synthetic.cirr_scenes` and :mod:`~bench.synthetic.cirr_text`),
  :mod:`~bench.synthetic.circo`, :mod:`~bench.synthetic.pool`: one planner per format;
* :mod:`~bench.synthetic.render`: the pixels;
* :mod:`~bench.synthetic.write`: the files (``generate``, ``generate_circo``);
* :mod:`~bench.synthetic.baselines`: attribute-level baselines of all three formats.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from bench.core.console import announce
from bench.core.locks import exclusive
from bench.core.paths import synthetic_root
from bench.synthetic.baselines import (
    attribute_baselines,
    attribute_query_values,
    circo_attribute_baselines,
    format_baselines,
)
from bench.synthetic.circo import CIRCO_SIZES, MAX_GTS, CircoSize, circo_values
from bench.synthetic.world import (
    CIRR_ATTRIBUTES,
    CIRR_BACKGROUNDS,
    CIRR_COLORS,
    CIRR_SHAPES,
    CIRR_SLOTS,
    CIRR_SPLITS,
    EMPTY,
    FIQ_ATTRIBUTES,
    FIQ_CATEGORIES,
    FIQ_COLORS,
    FIQ_LENGTHS,
    FIQ_PATTERNS,
    FIQ_SHAPES,
    FIQ_SIZES,
    FIQ_SPLITS,
    PATTERN_ADJ,
    POSITION,
    SIZES,
    AttributeIndex,
    SizeSpec,
    describe,
    vocabularies,
)
from bench.synthetic.write import GENERATOR_VERSION, generate, generate_circo

__all__ = [
    "CIRCO_SIZES",
    "CIRR_ATTRIBUTES",
    "CIRR_BACKGROUNDS",
    "CIRR_COLORS",
    "CIRR_SHAPES",
    "CIRR_SLOTS",
    "CIRR_SPLITS",
    "EMPTY",
    "FIQ_ATTRIBUTES",
    "FIQ_CATEGORIES",
    "FIQ_COLORS",
    "FIQ_LENGTHS",
    "FIQ_PATTERNS",
    "FIQ_SHAPES",
    "FIQ_SIZES",
    "FIQ_SPLITS",
    "GENERATOR_VERSION",
    "MAX_GTS",
    "PATTERN_ADJ",
    "POSITION",
    "SIZES",
    "AttributeIndex",
    "CircoSize",
    "SizeSpec",
    "attribute_baselines",
    "attribute_query_values",
    "circo_attribute_baselines",
    "circo_values",
    "describe",
    "ensure_synthetic",
    "format_baselines",
    "generate",
    "generate_circo",
    "vocabularies",
]


def ensure_synthetic(size: str, seed: int, *, progress: bool = True) -> Path:
    """The synthetic benchmark's folder, generated (atomically) when absent. Processes that
    need it at once wait on a lock for the first one to finish generating it."""
    root = synthetic_root(size, seed)
    if (root / "synthetic.json").is_file():
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    with exclusive(root.with_name(f".{root.name}.lock")):
        if (root / "synthetic.json").is_file():  # another process generated it meanwhile
            return root
        partial = root.with_name(root.name + ".partial")
        if partial.exists():  # left by an interrupted generation: start again
            shutil.rmtree(partial)
        if progress:
            announce(
                f"generating the synthetic benchmark ({size}, seed {seed}) into {root}",
                "absent; once, every later run reuses it",
            )
        generate(partial, seed=seed, size=size, progress=progress)
        partial.rename(root)
    return root
