"""The pool planner: unlabeled images that appear in no triplet (for positive scaling and
zero-shot training)."""

from __future__ import annotations

import itertools

from bench.synthetic.cirr_scenes import cirr_families
from bench.synthetic.world import (
    CIRR_ATTRIBUTES,
    FIQ_ATTRIBUTES,
    FIQ_CATEGORIES,
    PlannedImage,
    SizeSpec,
    aspect,
    fiq_values,
    seeded_rng,
)


def plan_pool(seed: int, spec: SizeSpec) -> list[PlannedImage]:
    """Unlabeled images in no triplet: FashionIQ-style per category, CIRR-style families."""
    images: list[PlannedImage] = []
    for category in FIQ_CATEGORIES:
        rng = seeded_rng(seed, "pool", category)
        values = fiq_values(category, spec)
        space = list(itertools.product(*(values[a] for a in FIQ_ATTRIBUTES)))
        n = min(spec.pool_fiq, len(space))
        for k, i in enumerate(rng.sample(range(len(space)), n)):
            name = f"pool-fiq-{category}-{k:06d}"
            w, h = aspect(rng, 64, 88)
            attrs = dict(zip(FIQ_ATTRIBUTES, space[i], strict=True))
            images.append(PlannedImage(name, f"fiq-{category}", attrs, w, h, f"images/{name}.png"))
    rng = seeded_rng(seed, "pool", "cirr")
    families = cirr_families(rng, spec.pool_cirr, spec.cirr_family, set())
    scenes = [s for fam in families for s in fam]
    rng.shuffle(scenes)
    for k, scene in enumerate(scenes):
        name = f"pool-cirr-{k:06d}"
        w, h = aspect(rng, 96, 132)
        attrs = dict(zip(CIRR_ATTRIBUTES, scene, strict=True))
        images.append(PlannedImage(name, "cirr", attrs, w, h, f"images/{name}.png"))
    return images
