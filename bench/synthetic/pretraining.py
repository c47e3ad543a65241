"""The image-description pairs a backbone of the synthetic world pre-trains on: every image
of the training splits and of the unlabeled pool with its ground-truth description ("a
small red striped circle"); validation and test images are never seen."""

from __future__ import annotations

import json
import os
from pathlib import Path

from bench.core.hashing import digest, image_list_digest

_METADATA_FILES = (
    "fashioniq/metadata/images.json",
    "cirr/metadata/images.json",
    "pool/metadata/images.json",
)


def pretraining_pairs(root: Path) -> tuple[list[str], dict[str, Path], list[str]]:
    """(image names, name -> path, descriptions) of the train splits and the pool."""
    names: list[str] = []
    paths: dict[str, Path] = {}
    texts: list[str] = []
    for relative in _METADATA_FILES:
        meta_file = root / relative
        metadata = json.loads(meta_file.read_text())
        dataset = relative.split("/")[0]
        for name, info in metadata.items():
            if dataset != "pool" and info.get("split") != "train":
                continue
            if dataset == "fashioniq":
                path = root / "fashioniq" / "images" / f"{name}.png"
            elif dataset == "cirr":
                path = None  # resolved from the split file below
            else:
                path = root / "pool" / "images" / f"{name}.png"
            names.append(name)
            texts.append(info["description"])
            if path is not None:
                paths[name] = path
    split_map = json.loads((root / "cirr" / "image_splits" / "split.rc2.train.json").read_text())
    for name, relative in split_map.items():
        paths[name] = Path(os.path.normpath(root / "cirr" / relative))
    missing = [n for n in names if n not in paths]
    if missing:
        raise FileNotFoundError(
            f"{root}: no image path for {len(missing)} images, e.g. {missing[:3]}"
        )
    return names, paths, texts


def data_fingerprint(root: Path, names: list[str], paths: dict[str, Path]) -> str:
    """Hash of what pre-training reads: the metadata files, the CIRR train split, the images."""
    files = [root / f for f in _METADATA_FILES] + [root / "cirr/image_splits/split.rc2.train.json"]
    contents = [(str(p.relative_to(root)), digest(p.read_text())) for p in files]
    return digest(contents, image_list_digest(names, paths))
