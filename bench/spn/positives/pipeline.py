"""The positive-scaling pipeline as named, cached steps.

``build_positives(root, format, spec)`` runs, for each group of the pool (one group per
FashionIQ category, one for CIRR and CIRCO):

1. ``pool``: the images — the dataset's own training images (``pool: train``, in-domain),
   the synthetic benchmark's unlabeled pool (``pool: pool``, ``<synthetic root>/pool``) or
   any folder of images (out-of-domain; for FashionIQ, sub-folders named after the
   categories are matched within their category). CIRCO has no training split, so its
   generated sets are out-of-domain only; its ``pool: pool`` is the pool's one-object
   (FashionIQ-style) images of every category, the kind of image the synthetic CIRCO
   gallery holds (:mod:`~bench.spn.positives.pool`);
2. ``embeddings`` of every pool image with the matching backbone (feature cache, keyed by
   weights + image list + preprocessing);
3. ``dedup`` (optional): near-duplicates removed (cosine similarity > threshold);
4. ``captions`` of the kept images (a per-image journal keyed by the captioner's
   description and the category: a changed pool or threshold captions only new images);
5. ``match``: (reference, target) pairs from the rank window (or at random);
6. ``compose``: the optional cap ``K`` on the total, then one template per triplet;
7. ``write``: the dataset's own caption-file format next to the official files (CIRCO,
   evaluation-only: CIRR caption records next to its annotations), with a provenance
   record (:mod:`~bench.spn.positives.provenance`; skipped when the files of the same
   build are already there).

The paper's order is de-duplicate, caption, match (SPN4CIR README: "0. Image
De-Duplicate", "1. Caption Generation", "2. Image Pair Match"); captioning after dedup
spares the multi-modal LLM the duplicates. Each step is cached by its inputs, so a second
build of the same spec does no work and a changed window recomputes only matching onward.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bench.backbones import load_backbone
from bench.backbones.resolve import SYNTHETIC_WEIGHTS, resolve_weights, synthetic_world_of
from bench.config import PositivesSpec
from bench.core.arrays import ArrayCache
from bench.core.atomic import write_json_atomic
from bench.core.console import announce
from bench.core.hashing import digest, image_list_digest
from bench.core.paths import cache_dir
from bench.formats import get_format
from bench.formats.generated import (
    provenance_path,
    read_generated,
    read_provenance,
    write_generated,
)
from bench.formats.records import GeneratedTriplet
from bench.spn.positives.captioners import Captioner, make_captioner
from bench.spn.positives.dedup import DedupResult, deduplicate
from bench.spn.positives.matching import (
    cap_total,
    embed_images,
    embedding_key,
    match_pairs,
    window_ranks,
)
from bench.spn.positives.pool import PoolGroup, resolve_pool
from bench.spn.positives.provenance import GENERATOR, provenance_record
from bench.spn.positives.templates import TemplateComposer, text_limit


@dataclass
class GeneratedSet:
    """The result of a build: triplets, the images they use, files, provenance, and what
    each step did (``computed``, ``cached`` or ``skipped``)."""

    name: str
    format: str
    root: Path
    triplets: list[GeneratedTriplet]
    image_paths: dict[str, Path]
    files: dict[str, Path]
    provenance: dict[str, Any]
    steps: dict[str, str]
    seconds: dict[str, float] = field(default_factory=dict)


# --------------------------------------------------------------------------- the build


class PositivesBuild:
    """One build of a spec on a dataset; each step runs once, on demand, and is cached."""

    def __init__(
        self,
        root: str | Path,
        format: str,
        spec: PositivesSpec,
        *,
        cache: ArrayCache | None = None,
        progress: bool = True,
        backbone: Any = None,
        device: str | None = None,
    ) -> None:
        if cache is None:
            cache = ArrayCache(cache_dir())
        self.root = Path(root)
        self.format = format
        self.fmt = get_format(format)
        self.spec = spec
        self.cache = cache
        self.progress = progress
        self.device = device
        self._backbone = backbone
        self._given_backbone = backbone
        self.steps: dict[str, str] = {}
        self.seconds: dict[str, float] = {}
        self.total_pairs = 0
        self._groups: list[PoolGroup] | None = None
        self._embeddings: dict[str | None, tuple[str, np.ndarray]] = {}
        self._dedup: dict[str | None, DedupResult] | None = None
        self._captions: dict[str | None, dict[str, str]] | None = None
        self._pairs: dict[str | None, tuple[str, np.ndarray]] | None = None
        self._captioner: Captioner | None = None

    # -- helpers

    def _mark(self, step: str, computed: bool) -> None:
        previous = self.steps.get(step)
        self.steps[step] = "computed" if computed or previous == "computed" else "cached"

    def _timed(self, step: str, run: Callable[[], Any]) -> Any:
        start = time.perf_counter()
        try:
            return run()
        finally:
            self.seconds[step] = self.seconds.get(step, 0.0) + time.perf_counter() - start

    @property
    def store(self) -> Path:
        return self.cache.root / "positives"

    @property
    def needs_embeddings(self) -> bool:
        return self.spec.mode == "window" or self.spec.dedup_threshold is not None

    @property
    def backbone(self) -> Any:
        """The matching backbone, loaded on first use (cache hits never load it)."""
        if self._backbone is None:
            ref = self.spec.backbone
            pretrained = ref.pretrained
            if pretrained == SYNTHETIC_WEIGHTS:
                size, seed = synthetic_world_of(self.root)
                pretrained = resolve_weights(
                    ref.arch,
                    pretrained,
                    synthetic_size=size,
                    synthetic_seed=seed,
                    progress=self.progress,
                )
            self._backbone = load_backbone(
                ref.arch, pretrained, target_pad_ratio=ref.target_pad_ratio
            )
        return self._backbone

    @property
    def captioner(self) -> Captioner:
        if self._captioner is None:
            self._captioner = make_captioner(
                self.spec.captioner, progress=self.progress, **self.spec.captioner_options
            )
        return self._captioner

    # -- steps

    def groups(self) -> list[PoolGroup]:
        if self._groups is None:
            self._groups = self._timed("pool", lambda: resolve_pool(self.root, self.fmt, self.spec))
            if self.spec.pool != "train":
                train = self.fmt.train_image_paths(self.root)
                clash = sorted({n for g in self._groups for n in g.names} & set(train))
                if clash:
                    raise ValueError(
                        f"{len(clash)} pool image names are training images of {self.root}, "
                        f"e.g. {clash[:3]}; rename them or use pool: train"
                    )
            empty = [g.category for g in self._groups if len(g.names) < 2]
            if empty:
                raise ValueError(f"pool {self.spec.pool!r}: fewer than 2 images for {empty}")
        return self._groups

    def embeddings(self, group: PoolGroup) -> tuple[str, np.ndarray]:
        """(cache key, L2-normalised embeddings) of every image of the group."""
        if group.category not in self._embeddings:
            misses = self.cache.stats.misses
            backbone = self.backbone
            key = embedding_key(backbone, group.names, group.paths)
            x = self._timed(
                "embeddings",
                lambda: embed_images(
                    backbone,
                    group.names,
                    group.paths,
                    self.cache,
                    batch_size=self.spec.embed_batch_size,
                    device=self.device,
                    progress=self.progress,
                ),
            )
            self._mark("embeddings", self.cache.stats.misses > misses)
            self._embeddings[group.category] = (key, x)
        return self._embeddings[group.category]

    def dedup(self) -> dict[str | None, DedupResult]:
        """Kept names and removed -> kept maps per group (all kept without a threshold)."""
        if self._dedup is None:
            out: dict[str | None, DedupResult] = {}
            threshold = self.spec.dedup_threshold
            for group in self.groups():
                if threshold is None:
                    out[group.category] = DedupResult(list(group.names))
                    self.steps["dedup"] = "skipped"
                    continue
                emb_key, x = self.embeddings(group)
                path = self.store / "dedup" / f"{digest('dedup', emb_key, threshold)}.json"
                if path.is_file():
                    data = json.loads(path.read_text(encoding="utf-8"))
                    out[group.category] = DedupResult(data["kept"], data["removed"])
                    self._mark("dedup", False)
                else:
                    result = self._timed(
                        "dedup", lambda g=group, x=x: deduplicate(g.names, x, threshold)
                    )
                    write_json_atomic(
                        path,
                        result.as_dict(),
                        indent=None,
                        ensure_ascii=False,
                        trailing_newline=True,
                    )
                    out[group.category] = result
                    self._mark("dedup", True)
            self._dedup = out
        return self._dedup

    def captions(self) -> dict[str | None, dict[str, str]]:
        """name -> caption of the kept images, per group (each image with the prompt of its
        own category: a merged group is captioned one category at a time)."""
        if self._captions is None:
            out: dict[str | None, dict[str, str]] = {}
            captioner = self.captioner
            for group in self.groups():
                kept = self.dedup()[group.category].kept
                out[group.category] = {}
                for category in dict.fromkeys(group.category_of(n) for n in kept):
                    names = [n for n in kept if group.category_of(n) == category]
                    journal = (
                        self.store / "captions" / f"{digest(captioner.describe(), category)}.jsonl"
                    )
                    calls = captioner.calls
                    out[group.category] |= self._timed(
                        "captions",
                        lambda g=group, names=names, c=category, j=journal: captioner.caption(
                            names, g.paths, category=c, journal=j
                        ),
                    )
                    self._mark("captions", captioner.calls > calls)
            self._captions = out
        return self._captions

    def _reference_rows(self, group: PoolGroup, result: DedupResult) -> np.ndarray | None:
        if not self.spec.only_train_references:
            return None
        represented = set(group.train_references)
        represented |= {
            kept for removed, kept in result.removed.items() if removed in group.train_references
        }
        return np.array([i for i, n in enumerate(result.kept) if n in represented], dtype=np.int64)

    def pairs(self) -> dict[str | None, tuple[str, np.ndarray]]:
        """(cache key, (P, 2) index pairs into the kept names) per group."""
        if self._pairs is None:
            out = {}
            spec = self.spec
            for group in self.groups():
                result = self.dedup()[group.category]
                kept = result.kept
                refs = self._reference_rows(group, result)
                if spec.mode == "window":
                    emb_key, x = self.embeddings(group)
                    if len(kept) != len(group.names):
                        rows = {n: i for i, n in enumerate(group.names)}
                        x = x[[rows[n] for n in kept]]
                    source = emb_key
                else:
                    x, source = None, image_list_digest(kept, group.paths)
                lo, hi = window_ranks(spec.rank_lo, spec.rank_hi, len(kept))
                window = (lo, hi) if spec.mode == "window" else None
                key = digest(
                    "match",
                    source,
                    digest(kept),
                    spec.mode,
                    window,
                    spec.k,
                    spec.seed,
                    None if refs is None else digest(refs.tolist()),
                    group.category,
                )
                misses = self.cache.stats.misses

                def compute(
                    x: np.ndarray | None = x,
                    n: int = len(kept),
                    refs: Any = refs,
                    lo: int = lo,
                    hi: int | None = hi,
                ) -> np.ndarray:
                    return match_pairs(
                        n,
                        mode=spec.mode,
                        k=spec.k,
                        seed=spec.seed,
                        embeddings=x,
                        rank_lo=lo,
                        rank_hi=hi,
                        references=refs,
                        progress=self.progress,
                    )

                meta = {"images": len(kept), "mode": spec.mode, "category": group.category}
                pairs = self._timed(
                    "match",
                    lambda key=key, compute=compute, meta=meta: self.cache.get_or_compute(
                        "positives-pairs", key, compute, meta
                    ),
                )
                self._mark("match", self.cache.stats.misses > misses)
                out[group.category] = (key, np.asarray(pairs, dtype=np.int64))
            self._pairs = out
        return self._pairs

    def triplets(self) -> list[GeneratedTriplet]:
        """Pairs of all groups, capped at ``K`` (seeded), each with its templated text (a
        text over ``max_text_tokens`` CLIP tokens falls back to the target caption)."""
        spec = self.spec
        rows: list[tuple[PoolGroup, str, str]] = []
        captions = self.captions()
        for group in self.groups():
            kept = self.dedup()[group.category].kept
            for ref, tgt in self.pairs()[group.category][1]:
                rows.append((group, kept[ref], kept[tgt]))
        cap = max(1, round(spec.K * len(rows))) if isinstance(spec.K, float) else spec.K
        selected = [rows[i] for i in cap_total(len(rows), cap, spec.seed)]
        composer = TemplateComposer(spec.templates, seed=spec.seed)
        pairs = [(captions[g.category][r], captions[g.category][t]) for g, r, t in selected]
        texts = composer.compose_all(pairs)
        self.total_pairs = len(rows)
        fit = text_limit(spec.max_text_tokens)
        out = []
        for (group, ref, tgt), composed in zip(selected, texts, strict=True):
            category = group.category_of(ref)
            source = f"{category}/extend_{spec.name}" if category else f"extend_{spec.name}"
            target_caption = captions[group.category][tgt]
            out.append(
                GeneratedTriplet(
                    ref,
                    tgt,
                    fit(composed.text, target_caption),
                    source,
                    category,
                    fit(composed.alternative, target_caption),
                    captions[group.category][ref],
                    target_caption,
                )
            )
        return out

    def build(self) -> GeneratedSet:
        """Run every step and write the files (see the module docstring)."""
        spec = self.spec
        if self.progress and read_provenance(self.root, self.format, spec.name) is None:
            announce(
                f"generating the positive triplets {spec.name!r} for P on {self.format} "
                "(captioning the train images, matching references to targets)",
                f"none are written yet; once, kept in {self.root}",
            )
        triplets = self.triplets()
        groups = self.groups()
        captions_digest = digest(
            {str(c): sorted(caps.items()) for c, caps in self.captions().items()}
        )
        build_key = digest(
            GENERATOR,
            self.format,
            spec.model_dump(mode="json", exclude={"source"}),  # "generate" here
            [key for key, _ in self.pairs().values()],
            captions_digest,
        )
        old = read_provenance(self.root, self.format, spec.name)
        files_there = old is not None and all(
            Path(p).is_file() for p in old.get("files", {}).values()
        )
        if old is not None and old.get("build_key") == build_key and files_there:
            self.steps["write"] = "cached"
            provenance = old
        else:
            every = {n: p for g in groups for n, p in g.paths.items()}
            used = {x for t in triplets for x in (t.reference, t.target)}
            outside = {} if spec.pool == "train" else {n: every[n] for n in sorted(used)}
            provenance = self._provenance(build_key, triplets, groups)
            self._timed(
                "write",
                lambda: write_generated(
                    self.root,
                    self.format,
                    spec.name,
                    triplets,
                    outside_images=outside,
                    provenance=provenance,
                ),
            )
            self.steps["write"] = "computed"
            provenance = read_provenance(self.root, self.format, spec.name) or provenance
        written, paths = read_generated(self.root, self.format, spec.name)
        files = {role: Path(p) for role, p in provenance.get("files", {}).items()}
        files["provenance"] = provenance_path(self.root, self.format, spec.name)
        return GeneratedSet(
            spec.name,
            self.format,
            self.root,
            written,
            paths,
            files,
            provenance,
            dict(self.steps),
            {step: round(t, 3) for step, t in self.seconds.items()},
        )

    def _provenance(
        self, build_key: str, triplets: list[GeneratedTriplet], groups: list[PoolGroup]
    ) -> dict[str, Any]:
        return provenance_record(
            build_key=build_key,
            format=self.format,
            fmt=self.fmt,
            root=self.root,
            spec=self.spec,
            groups=groups,
            dedup=self.dedup(),
            pairs={category: pairs for category, (_, pairs) in self.pairs().items()},
            triplets=triplets,
            total_pairs=self.total_pairs,
            captioner=self.captioner.describe(),
            backbone=self.backbone if self.needs_embeddings else None,
            backbone_given=self._given_backbone is not None,
        )


def build_positives(
    dataset_root: str | Path,
    format: str,
    spec: PositivesSpec | dict[str, Any],
    *,
    cache: ArrayCache | None = None,
    progress: bool = True,
    backbone: Any = None,
    device: str | None = None,
) -> GeneratedSet:
    """Caption, dedup, match, compose and write a generated set (module docstring).

    ``backbone``: an already loaded matching backbone (``bench.backbones.Backbone``) to use
    instead of ``spec.backbone``; ``cache``: the feature cache (default ``cache/``).
    """
    if not isinstance(spec, PositivesSpec):
        spec = PositivesSpec.model_validate(spec)
    build = PositivesBuild(
        dataset_root, format, spec, cache=cache, progress=progress, backbone=backbone, device=device
    )
    return build.build()
