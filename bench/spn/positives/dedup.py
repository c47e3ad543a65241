"""Near-duplicate removal of an image pool by cosine similarity of image embeddings.

Images are visited in pool order; an image is kept unless an earlier *kept* image has a
cosine similarity above ``threshold`` with it, in which case it is removed and mapped to
that image (the first such one). The result depends only on the order and the embeddings.
Neighbours come from a faiss range search (inner product of L2-normalised vectors) in
query blocks, so no N x N matrix is ever held.

(The SPN code removes exact pixel duplicates with a quadratic scan,
``zscir/deduplicate_images.py``; a threshold close to 1 does the same on embeddings.)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np


@dataclass
class DedupResult:
    """Kept names in pool order, and each removed name -> the kept name it duplicates."""

    kept: list[str]
    removed: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, object]:
        return {"kept": self.kept, "removed": self.removed}


def deduplicate(
    names: Sequence[str],
    embeddings: np.ndarray,
    threshold: float,
    *,
    block: int = 4096,
) -> DedupResult:
    """Drop near-duplicates (cosine similarity > ``threshold``); see the module docstring."""
    import faiss

    names = list(names)
    if len(names) != len(embeddings):
        raise ValueError(f"{len(names)} names but {len(embeddings)} embeddings")
    if not -1.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be a cosine similarity in [-1, 1], got {threshold}")
    if not names:
        return DedupResult([])
    x = np.ascontiguousarray(embeddings, dtype=np.float32)
    index = faiss.IndexFlatIP(x.shape[1])
    index.add(x)
    n = len(names)
    owner = np.full(n, -1, dtype=np.int64)  # kept image a removed one maps to
    kept_mask = np.zeros(n, dtype=bool)
    for start in range(0, n, block):
        stop = min(start + block, n)
        lims, _, found = index.range_search(x[start:stop], float(threshold))
        for row in range(stop - start):
            i = start + row
            if owner[i] >= 0:
                continue  # removed by an earlier kept image: removes nothing itself
            kept_mask[i] = True
            neighbours = found[lims[row] : lims[row + 1]]
            later = neighbours[(neighbours > i) & (owner[neighbours] < 0)]
            owner[later] = i
    kept = [names[i] for i in np.flatnonzero(kept_mask)]
    removed = {names[j]: names[owner[j]] for j in np.flatnonzero(~kept_mask)}
    return DedupResult(kept, removed)
