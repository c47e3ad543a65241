"""What a run will cache, and whether the disk holds it: reported and checked up front.

Before any image is preprocessed or encoded, :func:`cache_plan` lists every cache file a
run writes: the pixels of its training pool and of each evaluation gallery (uint8,
``N x 3 x S x S``), and for every phase with a frozen image side the cached reference
representations and targets of the pool (the SPN bank; float16 with ``half_bank``; in the
bank stage, a method's declared query states per (reference, text) pair replace the
reference representations, :mod:`bench.train.query_states`) and of
the evaluation galleries (float32), sized by the method's own declaration
(:meth:`methods.base.CIRMethod.cached_arrays`). Entries already in the cache cost
nothing; pixels that do not fit are decoded on the fly (``CIRBENCH_PIXEL_CACHE=auto``,
:mod:`bench.images.pixels`), every other entry must fit: :func:`check_plan` refuses the
run with a message naming the sizes, the free disk and ``CIRBENCH_KEEP_FREE``.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.config import ExperimentSpec
from bench.core.arrays import ArrayCache
from bench.core.disk import DiskSpaceError, format_size, free_bytes, keep_free, room_for
from bench.formats.records import CIRSplit
from bench.images.pixels import pixel_bytes, pixel_cache_mode, pixels_key
from bench.images.transforms import TargetPadTransform
from bench.spn.modifiers import PlannedPhase, modifier_phase
from methods.base import CIRMethod


def plan_phases(spec: ExperimentSpec, method: CIRMethod) -> list[PlannedPhase]:
    """The phases a spec trains, each with its settings: stage 1, every phase of the
    method; otherwise the one phase its modifiers add (see :mod:`bench.train.engine`)."""
    if spec.is_stage1:
        return [PlannedPhase(p, spec.train.phase(p.name)) for p in method.phases]
    return [modifier_phase(spec, method)]


@dataclass(frozen=True)
class CacheEntry:
    """One cache file a run needs: what, how many rows of how many bytes, and whether it
    is there already (``cached``) or may be replaced by decoding on the fly (``pixels``)."""

    what: str
    holds: str
    rows: int
    row_bytes: int
    cached: bool = False
    pixels: bool = False

    @property
    def nbytes(self) -> int:
        return self.rows * self.row_bytes


@dataclass
class CachePlan:
    """Every cache entry of a run and the disk they go to."""

    root: Path
    entries: list[CacheEntry]

    def new_bytes(self, *, pixels: bool = True) -> int:
        """Bytes of the entries not cached yet (``pixels=False``: without the pixels)."""
        return sum(e.nbytes for e in self.entries if not e.cached and (pixels or not e.pixels))

    def report(self) -> str:
        lines = [f"caches of this run under {self.root}:"]
        for e in self.entries:
            state = "cached" if e.cached else "new"
            lines.append(
                f"  {e.what}: {e.holds}, {e.rows} x {format_size(e.row_bytes)} = "
                f"{format_size(e.nbytes)} ({state})"
            )
        lines.append(
            f"  new in all: {format_size(self.new_bytes())}; disk free "
            f"{format_size(free_bytes(self.root))}, keeping {format_size(keep_free())} free"
        )
        return "\n".join(lines)


def cache_plan(
    spec: ExperimentSpec,
    method: CIRMethod,
    cache: ArrayCache,
    pool: tuple[Sequence[str], dict[str, Path]],
    eval_splits: Sequence[CIRSplit],
    transform: TargetPadTransform,
    state_pairs: int = 0,
) -> CachePlan:
    """The cache entries of a run (see the module docstring); ``pool``: the training
    pool's names and paths; ``state_pairs``: the (reference, text) pairs of the bank
    stage's query states (methods that declare one)."""
    names, paths = pool
    entries = [
        CacheEntry(
            "train pixels",
            f"uint8 3 x {transform.size} x {transform.size}",
            len(names),
            pixel_bytes(1, transform),
            cache.path("pixels", pixels_key(names, paths, transform)).is_file(),
            pixels=True,
        )
    ]
    for split in eval_splits:
        key = pixels_key(split.gallery, split.image_paths, transform)
        entries.append(
            CacheEntry(
                f"{split.name} pixels{f' ({split.category})' if split.category else ''}",
                f"uint8 3 x {transform.size} x {transform.size}",
                len(split.gallery),
                pixel_bytes(1, transform),
                cache.path("pixels", key).is_file(),
                pixels=True,
            )
        )
    gallery = sum(len(s.gallery) for s in eval_splits)
    negatives = spec.spn.negatives
    for planned in plan_phases(spec, method):
        if not planned.phase.image_frozen(method):
            continue
        bank = planned.phase.objective == "bank"
        itemsize = 2 if bank and negatives is not None and negatives.half_bank else 4
        dtype = "float16" if itemsize == 2 else "float32"
        state = method.query_state_array() if bank else None
        if state is not None:
            shape = " x ".join(map(str, state.shape))
            entries.append(
                CacheEntry(
                    f"{planned.phase.name}: train {state.role}s",
                    f"{state.holds} per (reference, text), {dtype} {shape}",
                    state_pairs,
                    state.item_bytes(itemsize),
                )
            )
        for array in method.cached_arrays():
            shape = " x ".join(map(str, array.shape))
            if not (state is not None and array.role == "reference"):
                entries.append(
                    CacheEntry(
                        f"{planned.phase.name}: train {array.role}s",
                        f"{array.holds}, {dtype} {shape}",
                        len(names),
                        array.item_bytes(itemsize),
                    )
                )
            entries.append(
                CacheEntry(
                    f"{planned.phase.name}: eval {array.role}s",
                    f"{array.holds}, float32 {shape}",
                    gallery,
                    array.item_bytes(4),
                )
            )
    return CachePlan(cache.root, entries)


def check_plan(plan: CachePlan, what: str, *, progress: bool = True) -> None:
    """Report the plan (``progress``) and refuse (:class:`DiskSpaceError`) when what must
    be cached does not fit the disk: everything new, without the pixels when they may be
    decoded on the fly (``CIRBENCH_PIXEL_CACHE`` ``auto`` or ``off``)."""
    if progress:
        print(plan.report(), file=sys.stderr, flush=True)
    mode = pixel_cache_mode()
    needed = plan.new_bytes(pixels=mode == "on")
    room = room_for(plan.root)
    if needed > room:
        raise DiskSpaceError(
            f"{what}: its caches need {format_size(needed)} of new files under {plan.root}"
            f"{'' if mode == 'on' else ' (without the pixels, which can be decoded on the fly)'}"
            f", but the disk has {format_size(free_bytes(plan.root))} free and "
            f"CIRBENCH_KEEP_FREE keeps {format_size(keep_free())} of it free; free space, "
            "point CIRBENCH_HOME at a larger disk or lower CIRBENCH_KEEP_FREE\n" + plan.report()
        )
