"""What a benchmark format is: the :class:`DatasetFormat` interface and its registry.

One object per format (FashionIQ, CIRR, CIRCO) owns everything that differs between
them: the reader of its official layout, the query texts it trains and evaluates with,
which metric functions score it and how per-group metrics combine, its headline metric
and report columns, where generated triplets go and in which records, which images serve
as its training pool, and its per-split statistics. Code outside ``bench.formats`` asks
the format object; it never compares a format name to a string.

A format registers with ``@register_format``; :func:`get_format` is the one door in.
"""

from __future__ import annotations

import random
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from bench.core.errors import CirbenchError
from bench.formats.records import CIRSplit, GeneratedTriplet
from bench.metrics.perquery import QueryValues

_REGISTRY: dict[str, DatasetFormat] = {}


class UnknownFormatError(CirbenchError, ValueError):
    """A dataset format name that is not registered."""


@dataclass(frozen=True)
class EvalOptions:
    """Scoring options a spec may set. ``protocol``: FashionIQ's gallery protocol (see
    :data:`bench.metrics.FASHIONIQ_PROTOCOLS`); ``targets``: CIRR's ``hard`` target or
    its ``soft`` targets of weight 1. A format ignores the options that are not its own."""

    protocol: str = "full_gallery"
    targets: str = "hard"


@dataclass(frozen=True)
class ImageSizes:
    """How large a benchmark's real images are, for rehearsal folders
    (:mod:`bench.images.rehearse`): the long side in pixels uniform in ``long_side``, the
    aspect ratio (width / height) from one of ``aspects``, ``(weight, low, high)`` ranges
    chosen by weight and log-uniform within. Assumptions from the datasets' descriptions,
    not measured on the images (see the README, "Real-size data")."""

    long_side: tuple[int, int]
    aspects: tuple[tuple[float, float, float], ...]


@dataclass(frozen=True)
class SplitFiles:
    """The annotation files of one (group, split) that statistics look for."""

    group: str | None
    split: str
    captions: Path  #: the queries' file
    images: Path | None  #: the image list / index file (None: none of its own)


class DatasetFormat(ABC):
    """One benchmark format (see the module docstring)."""

    #: Registry name (``dataset.format`` of a spec).
    name: ClassVar[str] = ""
    #: Display name.
    title: ClassVar[str] = ""
    #: Where the format comes in listings (the paper's order: FashionIQ, CIRR, CIRCO).
    order: ClassVar[int] = 100
    #: Official splits, in order.
    splits: ClassVar[tuple[str, ...]] = ()
    #: The split methods train on; ``None`` for an evaluation-only benchmark (CIRCO).
    train_split: ClassVar[str | None] = "train"
    #: Groups evaluated separately and averaged (FashionIQ's categories); empty: one group.
    categories: ClassVar[tuple[str, ...]] = ()
    #: The metric that selects epochs and heads tables.
    headline_metric: ClassVar[str] = "Rmean"
    #: Metric columns of a report table, in order.
    report_columns: ClassVar[tuple[str, ...]] = ()
    #: Which images of the synthetic benchmark's unlabeled pool serve ``pool: pool``
    #: (the pool's ``dataset`` field).
    synthetic_pool_kind: ClassVar[str] = ""
    #: The folder names the format's dataset has in the reference layout of a data root
    #: (``--data-root DIR`` holding ``fashionIQ_dataset/``, ``cirr_dataset/``, ...).
    reference_folders: ClassVar[tuple[str, ...]] = ()
    #: The real images' sizes (rehearsal folders).
    image_sizes: ClassVar[ImageSizes] = ImageSizes((400, 800), ((1.0, 0.75, 1.33),))
    #: Images in the real gallery when it is more than the annotations name (CIRCO ranks
    #: the whole COCO unlabeled set); ``None``: the annotations name the whole gallery.
    gallery_size: ClassVar[int | None] = None

    # ------------------------------------------------------------------ reading
    def groups(self, categories: Sequence[str] | None = None) -> list[str | None]:
        """The groups of a run: the categories asked for (all by default), or ``[None]``."""
        if not self.categories:
            return [None]
        chosen = list(categories) if categories else list(self.categories)
        unknown = [c for c in chosen if c not in self.categories]
        if unknown:
            raise ValueError(
                f"{self.title}: unknown categories {unknown}; expected some of {self.categories}"
            )
        return chosen

    @abstractmethod
    def load_split(
        self,
        root: Path,
        split: str,
        group: str | None = None,
        *,
        images: bool = True,
        strict: bool = True,
    ) -> CIRSplit:
        """Read one split (of one group) of the official layout under ``root``."""

    @abstractmethod
    def split_files(self, root: Path) -> list[SplitFiles]:
        """Every (group, split) whose files statistics look for under ``root``."""

    def looks_like(self, root: Path) -> bool:
        """True when ``root`` holds annotation files of this format."""
        return any(
            f.captions.is_file() or (f.images is not None and f.images.is_file())
            for f in self.split_files(Path(root))
        )

    def annotation_folder(self, root: Path) -> Path:
        """Where the annotation files lie under a dataset folder in the official layout."""
        return root

    def named_images(self, root: Path) -> dict[str, Path]:
        """Every image the annotation files under ``root`` name (name -> the path the
        reader expects), over all splits and groups, without looking at image files; a
        split whose files are absent or unreadable contributes what it can."""
        out: dict[str, Path] = {}
        for group in self.groups():
            for split in self.splits:
                data = self.load_split(root, split, group, images=False, strict=False)
                out.update({n: data.image_paths[n] for n in data.gallery})
        return out

    def gallery_fillers(self, root: Path, named: Mapping[str, Path], count: int) -> dict[str, Path]:
        """``count`` gallery images no annotation names (their names and paths), for a
        rehearsal gallery of the real size; only formats with :attr:`gallery_size`."""
        raise CirbenchError(f"{self.title}: the annotations name the whole gallery")

    def train_image_paths(self, root: Path) -> dict[str, Path]:
        """Every training image (name -> path) named by the split files, without reading
        captions; empty for a format without a training split."""
        return {}

    # ------------------------------------------------------------------ texts
    def training_text(self, captions: tuple[str, ...], rng: random.Random) -> str:
        """The query text of a human triplet in training (default: its one caption)."""
        return captions[0]

    def training_texts(self, captions: tuple[str, ...]) -> tuple[str, ...]:
        """Every text :meth:`training_text` may draw for these captions."""
        return (captions[0],)

    def eval_text(self, captions: tuple[str, ...]) -> str:
        """The query text of a query at evaluation (default: its one caption)."""
        return captions[0]

    # ------------------------------------------------------------------ metrics
    def metric_names(self, categories: Sequence[str] = ()) -> tuple[str, ...]:
        """The metric keys an evaluation of ``categories`` (all: empty) reports: the
        report columns without those of other categories."""
        others = [c for c in self.categories if categories and c not in categories]
        return tuple(
            n for n in self.report_columns if not any(n.startswith(f"{c}_") for c in others)
        )

    def protocol_name(self, options: EvalOptions) -> str:
        """The name of the scoring protocol ``options`` select, as the published tables'
        ``protocol`` column spells it (one protocol: ``standard``)."""
        return "standard"

    @abstractmethod
    def split_query_values(
        self,
        split: CIRSplit,
        queries: np.ndarray,
        gallery: np.ndarray,
        options: EvalOptions,
        rows: Callable[[Sequence[str]], np.ndarray],
    ) -> QueryValues:
        """Per-query values of one split's official metrics (hits, CIRCO's AP@K), by query
        id in query order, from L2-normalised query features (query order) and gallery
        features (``split.gallery`` order); ``rows(names)`` gives gallery rows."""

    def split_metrics(
        self,
        split: CIRSplit,
        queries: np.ndarray,
        gallery: np.ndarray,
        options: EvalOptions,
        rows: Callable[[Sequence[str]], np.ndarray],
    ) -> dict[str, float]:
        """Official metrics of one split (those of its per-query values, exactly)."""
        values = self.split_query_values(split, queries, gallery, options, rows)
        return self.group_metrics(values.metrics())

    def group_metrics(self, means: Mapping[str, Any]) -> dict[str, Any]:
        """One group's metrics from the means of its per-query values (percent), with the
        metrics derived from them (CIRR's Rmean); numbers, or numpy arrays element-wise
        (a bootstrap's resamples). Default: the means as they are."""
        return dict(means)

    def aggregate(self, per_group: Mapping[str | None, Mapping[str, Any]]) -> dict[str, Any]:
        """The metrics of a run from its groups' (default: the one group's); numbers, or
        numpy arrays element-wise."""
        (only,) = per_group.values()
        return dict(only)

    def run_metrics(self, per_group: Mapping[str | None, QueryValues]) -> dict[str, float]:
        """A run's metrics from its groups' per-query values (what evaluation reports)."""
        return self.aggregate(
            {group: self.group_metrics(values.metrics()) for group, values in per_group.items()}
        )

    # ------------------------------------------------------------------ generated triplets
    @abstractmethod
    def generated_captions_dir(self, root: Path) -> Path:
        """Where generated caption files (and their provenance) go."""

    @abstractmethod
    def generated_caption_name(self, name: str, group: str | None = None) -> str:
        """The file name of generated set ``name`` (of one group, where groups have files)."""

    @abstractmethod
    def write_generated_records(
        self,
        root: Path,
        name: str,
        triplets: Sequence[GeneratedTriplet],
        outside_images: Mapping[str, Path],
        place: Callable[[Path, Path], bool],
    ) -> tuple[dict[str, Path], int]:
        """Write a generated set's caption (and image-split) files in this format's own
        records; ``place(source, dest)`` puts an out-of-domain image into the dataset.
        Returns the files by role and how many images were placed."""

    @abstractmethod
    def read_generated_records(
        self, root: Path, name: str
    ) -> tuple[list[GeneratedTriplet], dict[str, Path]]:
        """A generated set's triplets and the path of every image they use (possibly not
        checked to exist)."""

    # ------------------------------------------------------------------ test servers
    def write_submission(
        self, split: CIRSplit, queries: np.ndarray, gallery: np.ndarray, out_dir: Path, name: str
    ) -> list[Path]:
        """Test-server files of a split without public targets (from query features in
        query order and gallery features in gallery order), checked after writing."""
        raise CirbenchError(f"{self.title} has no test-server submission format")

    @property
    def has_submission(self) -> bool:
        """True when the format has a test-server file format (:meth:`write_submission`)."""
        return type(self).write_submission is not DatasetFormat.write_submission

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "splits": list(self.splits), "groups": self.groups()}


def register_format(cls: type[DatasetFormat]) -> type[DatasetFormat]:
    """Class decorator: register one instance of a :class:`DatasetFormat` subclass."""
    if cls.name in _REGISTRY and type(_REGISTRY[cls.name]) is not cls:
        raise ValueError(f"format {cls.name!r} is already registered")
    _REGISTRY[cls.name] = cls()
    return cls


def format_names() -> tuple[str, ...]:
    """Registered format names, in listing order."""
    return tuple(sorted(_REGISTRY, key=lambda n: (_REGISTRY[n].order, n)))


def get_format(name: str) -> DatasetFormat:
    """The format object of ``name``."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownFormatError(
            f"unknown dataset format {name!r}; expected one of {', '.join(format_names())}"
        ) from None
