"""The pool of a positives build: the images to caption and pair, in groups.

One group per FashionIQ category, one for CIRR and CIRCO; with ``merge_categories`` the
categories' groups become one (the reference ranks FashionIQ's images in one pool), each
image remembering its category. The pool kinds (``spec.pool``):

* ``train``: the dataset's own training images (in-domain);
* ``pool``: the synthetic benchmark's unlabeled pool (``<synthetic root>/pool``); for CIRCO,
  which has no training split, the pool's one-object (FashionIQ-style) images of every
  category, the kind of image the synthetic CIRCO gallery holds;
* any folder of images (out-of-domain; for FashionIQ, sub-folders named after the
  categories are matched within their category).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from bench.config import PositivesSpec
from bench.formats import DatasetFormat

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")


@dataclass
class PoolGroup:
    """The pool images of one group (a FashionIQ category, or ``None``)."""

    category: str | None
    names: list[str]
    paths: dict[str, Path]
    train_references: set[str] = field(default_factory=set)
    #: name -> category of a merged group's images (empty: every image is ``category``'s)
    image_category: dict[str, str] = field(default_factory=dict)

    def category_of(self, name: str) -> str | None:
        return self.image_category.get(name, self.category)


def merge_groups(groups: list[PoolGroup]) -> PoolGroup:
    """One group holding every image of ``groups`` (in order), categories remembered."""
    merged = PoolGroup(None, [], {})
    for group in groups:
        merged.names += group.names
        merged.paths.update(group.paths)
        merged.train_references |= group.train_references
        if group.category is not None:
            merged.image_category.update(dict.fromkeys(group.names, group.category))
    return merged


def _scan_folder(folder: Path) -> dict[str, Path]:
    """name (file stem) -> path of every image under ``folder``, in path order."""
    found: dict[str, Path] = {}
    for path in sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES):
        if path.stem in found:
            raise ValueError(
                f"{folder}: two images named {path.stem!r}: {found[path.stem]} and {path}"
            )
        found[path.stem] = path
    return found


def resolve_pool(root: Path, fmt: DatasetFormat, spec: PositivesSpec) -> list[PoolGroup]:
    """The pool's groups (see the module docstring), merged with ``merge_categories``."""
    groups = _pool_groups(root, fmt, spec)
    if spec.merge_categories and len(groups) > 1:
        return [merge_groups(groups)]
    return groups


def _pool_groups(root: Path, fmt: DatasetFormat, spec: PositivesSpec) -> list[PoolGroup]:
    groups: list[PoolGroup] = []
    if spec.pool == "train" and fmt.train_split is None:
        raise ValueError(
            f"pool 'train': {fmt.title} has no training split; build its generated triplets "
            "from an out-of-domain pool (pool: pool, or a folder of images)"
        )
    if spec.pool == "train":
        for group in fmt.groups(spec.categories):
            split = fmt.load_split(root, "train", group)
            refs = {q.reference for q in split.queries}
            groups.append(PoolGroup(group, list(split.gallery), dict(split.image_paths), refs))
        return groups
    if spec.pool == "pool":
        return _synthetic_pool_groups(root, fmt, spec)
    folder = Path(spec.pool).expanduser()
    if not folder.is_dir():
        raise FileNotFoundError(
            f"{folder}: pool folder not found (pool is train, pool or a folder)"
        )
    wanted = fmt.groups(spec.categories)
    by_category = [c for c in wanted if c is not None and (folder / c).is_dir()]
    if by_category:
        for category in by_category:
            found = _scan_folder(folder / category)
            groups.append(PoolGroup(category, list(found), found))
    else:
        found = _scan_folder(folder)
        groups.append(PoolGroup(None, list(found), found))
    return groups


def _synthetic_pool_groups(root: Path, fmt: DatasetFormat, spec: PositivesSpec) -> list[PoolGroup]:
    """``pool: pool``: the synthetic benchmark's unlabeled pool beside the dataset, the images
    of the format's kind (:attr:`~bench.formats.DatasetFormat.synthetic_pool_kind`), one
    group per category of the format."""
    pool_dir = Path(root).resolve().parent / "pool"
    meta_path = pool_dir / "metadata" / "images.json"
    if not meta_path.is_file():
        raise FileNotFoundError(
            f"{meta_path}: pool 'pool' is the synthetic benchmark's unlabeled pool, "
            f"expected beside the dataset at {pool_dir}"
        )
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    groups = []
    for category in fmt.groups(spec.categories):
        names = sorted(
            n
            for n, info in meta.items()
            if info.get("dataset") == fmt.synthetic_pool_kind
            and (category is None or info.get("category") == category)
        )
        paths = {n: pool_dir / "images" / f"{n}.png" for n in names}
        missing = [n for n in names if not paths[n].is_file()]
        if missing:
            raise FileNotFoundError(
                f"{pool_dir / 'images'}: {len(missing)} pool images missing, e.g. {missing[:3]}"
            )
        groups.append(PoolGroup(category, names, paths))
    return groups
