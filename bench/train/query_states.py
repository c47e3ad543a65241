"""Cached query states of the bank stage, for methods that declare one (SPRC).

A method whose query starts with a part that reads only the (frozen) image side declares
it (:meth:`methods.base.CIRMethod.query_state_array`; SPRC: the fused Q-Former states, 32 x
768 at real size, what SPN's ``blip24cir`` banks as ``refer_bank``). The bank stage then
caches that state once for every (reference image, training text) pair any epoch may
draw (FashionIQ: CLIP4Cir's four caption variants; a generated triplet: each of its
texts) instead of the reference representations (SPRC: the ViT tokens, 257 x 1408 at
real size), computed in eval mode (the reference extracts its bank in eval mode) and
read a batch of rows at a time, memory-mapped, like the bank itself.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from bench.core.hashing import digest
from bench.core.runtime import autocast
from bench.images.transforms import to_model_input
from bench.train.data import Pair, state_pairs
from bench.train.session import Session


@dataclass
class QueryStates:
    """The cached states (a tensor over a memory-mapped file) and the row of each pair."""

    states: torch.Tensor
    rows: dict[Pair, int]

    def rows_of(self, reference_rows: np.ndarray, texts: list[str]) -> np.ndarray:
        return np.fromiter(
            (self.rows[(int(r), t)] for r, t in zip(reference_rows, texts, strict=True)),
            dtype=np.int64,
            count=len(texts),
        )


def session_pairs(session: Session) -> list[Pair]:
    triplets = ([] if session.spec.spn.zero_shot else session.data.train) + session.generated
    return state_pairs(triplets, session.data.format, session.pool_index, session.same_as)


def query_states(session: Session, dtype: str) -> QueryStates:
    """The bank stage's cached query states of a session (computed on the first call)."""
    method, device, cache = session.method, session.device, session.cache
    pairs = session_pairs(session)
    key = digest(
        "query-states", method.name, method.image_fingerprint(), session.pool_key, pairs, dtype
    )
    batch_size = session.spec.eval.batch_size

    def fill() -> Iterator[tuple[np.ndarray]]:
        was_training = method.training
        method.eval()
        try:
            for start in range(0, len(pairs), batch_size):
                chunk = pairs[start : start + batch_size]
                rows = np.array([r for r, _ in chunk])
                unique, inverse = np.unique(rows, return_inverse=True)
                pixels = np.asarray(session.pool_pixels[unique])
                images = to_model_input(pixels, method.transform, device)
                tokens = method.tokenize([t for _, t in chunk]).to(device)
                with torch.no_grad(), autocast(device):
                    reference = method.encode_reference(images)[torch.as_tensor(inverse)]
                    state = method.query_state(reference, tokens)
                yield (state.float().cpu().numpy(),)
        finally:
            method.train(was_training)

    meta = {"method": method.name, "pairs": len(pairs), "dtype": dtype}
    [states] = cache.get_or_fill("query_states", [key], fill, len(pairs), meta, dtype, "c")
    return QueryStates(torch.from_numpy(states), {p: i for i, p in enumerate(pairs)})
