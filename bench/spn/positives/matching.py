"""Pair matching: for each reference image, targets from a window of its similarity ranking.

``window`` mode (the paper, SPN4CIR ``zscir/get_cir_data.py``): the pool is ranked by cosine
similarity to the reference (rank 0 is the reference itself, then the most similar image,
...), and ``k`` targets are drawn uniformly without replacement from the ranks
``[rank_lo, rank_hi)`` — similar-ish images, not near-duplicates. ``random`` mode (the
released recipe for BLIP4CIR+Bi and SPRC): ``k`` targets drawn uniformly from the rest of
the pool.

It scales to large pools without an N x N matrix: scores are computed for blocks of
queries (``block`` x N, one BLAS matrix product), the scores at the window's edge ranks
come from in-place partitions (``ndarray.partition``, no sort; ``np.argpartition`` only for
rows with tied scores at an edge), and the draw inside the window takes the smallest keys
of a seeded hash of (seed, reference, candidate), so the sample is reproducible whatever
the block size and the same as drawing uniformly without replacement.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from bench.core.arrays import ArrayCache
from bench.core.hashing import digest, image_list_digest
from bench.core.runtime import autocast
from bench.images.pixels import load_pixels
from bench.images.transforms import to_model_input

EMBED_CHUNK = 4096  # images preprocessed (and their pixels cached) at a time


def embedding_key(backbone: object, names: Sequence[str], paths: dict[str, Path]) -> str:
    """Cache key of pool embeddings: backbone weights + image list + preprocessing."""
    weights = backbone.weights  # type: ignore[attr-defined]
    transform = backbone.transform  # type: ignore[attr-defined]
    return digest(
        "positives-embeddings", weights, image_list_digest(names, paths), transform.describe()
    )


@torch.no_grad()
def embed_images(
    backbone: object,
    names: Sequence[str],
    paths: dict[str, Path],
    cache: ArrayCache,
    *,
    batch_size: int = 128,
    device: str | torch.device | None = None,
    progress: bool = True,
) -> np.ndarray:
    """L2-normalised float32 image embeddings (N, D) of ``names``, cached in ``cache``.

    Images go through the backbone's own preprocessing (``load_pixels``, itself cached)
    and ``model.encode_image``; the entry is keyed by :func:`embedding_key`.
    """

    names = list(names)
    model = backbone.model  # type: ignore[attr-defined]
    transform = backbone.transform  # type: ignore[attr-defined]
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)

    def compute() -> np.ndarray:
        was_training = model.training
        model.eval()
        model.to(device)
        out = []
        try:
            for start in range(0, len(names), EMBED_CHUNK):
                chunk = names[start : start + EMBED_CHUNK]
                pixels = load_pixels(
                    cache, chunk, paths, transform, progress=progress, desc="pool images"
                )
                bar = tqdm(
                    range(0, len(chunk), batch_size),
                    desc="embed pool",
                    disable=not progress,
                    leave=False,
                )
                for b in bar:
                    images = to_model_input(pixels[b : b + batch_size], transform, device)
                    with autocast(device):
                        features = model.encode_image(images)
                    out.append(
                        torch.nn.functional.normalize(features.float(), dim=-1).cpu().numpy()
                    )
        finally:
            model.train(was_training)
        if not out:
            return np.zeros((0, 0), dtype=np.float32)
        return np.concatenate(out).astype(np.float32)

    key = embedding_key(backbone, names, paths)
    meta = {"images": len(names), "weights": backbone.weights}  # type: ignore[attr-defined]
    return np.asarray(cache.get_or_compute("features", key, compute, meta))


# --------------------------------------------------------------------------- sampling


def window_ranks(
    rank_lo: int | float, rank_hi: int | float | None, n: int
) -> tuple[int, int | None]:
    """A rank window with shares of the pool (floats in (0, 1]) turned into ranks of a pool
    of ``n`` images (a window scaled to the pool, as the synthetic recipe writes it)."""
    lo = max(1, int(rank_lo * n)) if isinstance(rank_lo, float) else rank_lo
    if rank_hi is None:
        return lo, None
    hi = max(lo + 1, int(rank_hi * n)) if isinstance(rank_hi, float) else rank_hi
    return lo, hi


def window_bounds(n: int, rank_lo: int, rank_hi: int | None) -> tuple[int, int]:
    """The rank window ``[lo, hi)`` clipped to a pool of ``n`` images (``hi=None``: to the
    end); an empty window is an error naming the numbers."""
    if rank_lo < 1:
        raise ValueError(f"rank_lo must be >= 1 (rank 0 is the reference itself), got {rank_lo}")
    if rank_hi is not None and rank_hi <= rank_lo:
        raise ValueError(f"rank window [{rank_lo}, {rank_hi}) is empty")
    hi = n if rank_hi is None else min(rank_hi, n)
    if hi <= rank_lo:
        raise ValueError(
            f"rank window [{rank_lo}, {rank_hi}) lies beyond a pool of {n} images "
            f"(ranks 0..{n - 1}); lower rank_lo"
        )
    return rank_lo, hi


_MAX32 = np.uint32(0xFFFFFFFF)


def _mix32_inplace(x: np.ndarray) -> None:
    """A 32-bit integer hash (murmur3 finaliser), elementwise and in place."""
    with np.errstate(over="ignore"):
        x ^= x >> np.uint32(16)
        x *= np.uint32(0x85EBCA6B)
        x ^= x >> np.uint32(13)
        x *= np.uint32(0xC2B2AE35)
        x ^= x >> np.uint32(16)


def _mix32(x: np.ndarray) -> np.ndarray:
    out = np.array(x, dtype=np.uint32)
    _mix32_inplace(out)
    return out


def window_targets(
    embeddings: np.ndarray,
    queries: np.ndarray,
    *,
    rank_lo: int,
    rank_hi: int | None,
    k: int,
    seed: int,
    block: int = 256,
    progress: bool = False,
) -> np.ndarray:
    """(len(queries), min(k, window)) pool indices drawn from each query's rank window.

    ``embeddings`` must be L2-normalised; ``queries`` are row indices into it. Rank 0 is
    always the query itself; the others are ranked by descending cosine similarity. The
    window holds the images scoring between the scores at ranks ``lo`` and ``hi - 1``
    (inclusive): exactly the ranks ``[lo, hi)``, plus any image tied with an edge. The
    targets of one query are distinct, drawn uniformly without replacement.
    """
    x = np.ascontiguousarray(embeddings, dtype=np.float32)
    n = len(x)
    lo, hi = window_bounds(n, rank_lo, rank_hi)
    width = hi - lo
    take = min(k, width)
    queries = np.asarray(queries, dtype=np.int64)
    out = np.empty((len(queries), take), dtype=np.int64)
    if len(queries) == 0:
        return out
    seed_key = int(_mix32(np.uint32(seed & 0xFFFFFFFF) ^ np.uint32(0x9E3779B9)))
    pos_lo, pos_hi = n - 1 - lo, n - hi  # ascending positions of ranks lo and hi - 1
    narrow = width * REJECTION_MAX_DRAWS < n  # too few hits for rejection sampling
    rows = min(block, len(queries))
    scores = np.empty((rows, n), dtype=np.float32)  # buffers reused by every block
    work = np.empty_like(scores)
    starts = range(0, len(queries), block)
    for start in tqdm(starts, desc="match pairs", disable=not progress, leave=False):
        q = queries[start : start + block]
        b = len(q)
        s, w = scores[:b], work[:b]
        np.matmul(x[q], x.T, out=s)  # (b, n): one BLAS call
        s[np.arange(b), q] = np.inf  # the reference itself is rank 0
        # the scores at ranks lo and hi - 1, by in-place partitions of a copy (no sort)
        np.copyto(w, s)
        w.partition(pos_lo, axis=1)
        v_lo = w[:, pos_lo : pos_lo + 1].copy()
        if pos_hi < pos_lo:
            w[:, :pos_lo].partition(pos_hi, axis=1)
        v_hi = w[:, pos_hi : pos_hi + 1].copy()
        row_keys = _mix32(q.astype(np.uint32) * np.uint32(0x27D4EB2F) ^ np.uint32(seed_key))
        if narrow:
            out[start : start + b] = _draw_by_keys(s, v_lo, v_hi, row_keys, seed_key, take)
        else:
            out[start : start + b] = _draw_by_rejection(s, v_lo, v_hi, row_keys, take, width)
    return out


#: Rejection sampling is used while a window holds at least 1/REJECTION_MAX_DRAWS of the pool.
REJECTION_MAX_DRAWS = 256


def _draw_by_rejection(
    s: np.ndarray, v_lo: np.ndarray, v_hi: np.ndarray, row_keys: np.ndarray, take: int, width: int
) -> np.ndarray:
    """Seeded uniform columns, kept when inside the window, first ``take`` distinct ones."""
    b, n = s.shape
    out = np.full((b, take), -1, dtype=np.int64)
    filled = np.zeros(b, dtype=np.int64)
    per_round = int(np.ceil(2.0 * take * n / width)) + 8
    attempt = 0
    todo = np.arange(b)
    while len(todo):
        counters = np.arange(attempt, attempt + per_round, dtype=np.uint32)
        h = row_keys[todo, None] ^ _mix32(counters * np.uint32(0x9E3779B1))[None, :]
        _mix32_inplace(h)
        cols = ((h.astype(np.uint64) * np.uint64(n)) >> np.uint64(32)).astype(np.int64)
        vals = np.take_along_axis(s[todo], cols, axis=1)
        hits = (vals <= v_lo[todo]) & (vals >= v_hi[todo])
        for i, r in enumerate(todo):
            for c in cols[i][hits[i]]:
                if filled[r] == take:
                    break
                if c not in out[r, : filled[r]]:
                    out[r, filled[r]] = c
                    filled[r] += 1
        todo = np.flatnonzero(filled < take)
        attempt += per_round
    return out


def _draw_by_keys(
    s: np.ndarray,
    v_lo: np.ndarray,
    v_hi: np.ndarray,
    row_keys: np.ndarray,
    seed_key: int,
    take: int,
) -> np.ndarray:
    """The ``take`` window columns with the smallest seeded keys (for narrow windows)."""
    b, n = s.shape
    keys = row_keys[:, None] ^ _mix32(np.arange(n, dtype=np.uint32) ^ np.uint32(seed_key))[None, :]
    _mix32_inplace(keys)
    keys[(s > v_lo) | (s < v_hi)] = _MAX32
    out = np.empty((b, take), dtype=np.int64)
    for j in range(take):
        chosen = keys.argmin(axis=1)
        out[:, j] = chosen
        keys[np.arange(b), chosen] = _MAX32
    return out


def random_targets(n: int, queries: np.ndarray, *, k: int, seed: int) -> np.ndarray:
    """(len(queries), min(k, n-1)) targets drawn uniformly from the pool minus the query."""
    if n < 2:
        raise ValueError(f"random matching needs at least 2 images, the pool has {n}")
    queries = np.asarray(queries, dtype=np.int64)
    take = min(k, n - 1)
    rng = np.random.default_rng([seed, 0x5EED])
    out = np.empty((len(queries), take), dtype=np.int64)
    for row, q in enumerate(queries):
        draw = rng.choice(n - 1, size=take, replace=False)
        out[row] = draw + (draw >= q)  # skip the query itself
    return out


def match_pairs(
    n: int,
    *,
    mode: str,
    k: int,
    seed: int,
    embeddings: np.ndarray | None = None,
    rank_lo: int = 1,
    rank_hi: int | None = None,
    references: np.ndarray | None = None,
    block: int = 256,
    progress: bool = False,
) -> np.ndarray:
    """(P, 2) int64 (reference, target) index pairs over a pool of ``n`` images.

    ``references``: the row indices allowed as references (default: every image); targets
    always come from the whole pool.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    queries = (
        np.arange(n, dtype=np.int64)
        if references is None
        else np.asarray(references, dtype=np.int64)
    )
    if len(queries) == 0:
        return np.zeros((0, 2), dtype=np.int64)
    if mode == "window":
        if embeddings is None:
            raise ValueError("window matching needs the pool embeddings")
        if len(embeddings) != n:
            raise ValueError(f"{len(embeddings)} embeddings for a pool of {n} images")
        targets = window_targets(
            embeddings,
            queries,
            rank_lo=rank_lo,
            rank_hi=rank_hi,
            k=k,
            seed=seed,
            block=block,
            progress=progress,
        )
    elif mode == "random":
        targets = random_targets(n, queries, k=k, seed=seed)
    else:
        raise ValueError(f"unknown matching mode {mode!r}; expected 'window' or 'random'")
    refs = np.repeat(queries, targets.shape[1])
    return np.stack([refs, targets.ravel()], axis=1)


def cap_total(count: int, cap: int | None, seed: int) -> np.ndarray:
    """Indices (sorted) of a seeded subsample of ``cap`` out of ``count`` items; all when
    ``cap`` is None or not smaller."""
    if cap is None or cap >= count:
        return np.arange(count, dtype=np.int64)
    if cap < 1:
        raise ValueError(f"K must be >= 1 or None, got {cap}")
    rng = np.random.default_rng([seed, 0xCA9])
    return np.sort(rng.choice(count, size=cap, replace=False))
