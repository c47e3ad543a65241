"""The ``oracle`` captioner: the synthetic benchmark's ground-truth descriptions.

They come from ``metadata/images.json``, optionally corrupted (``noise``: per image, with that
probability, one attribute is dropped or swapped before describing) to stand in for an
imperfect multi-modal LLM.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from bench import synthetic
from bench.core.errors import DataFormatError
from bench.spn.positives.captioners.base import Captioner, CaptionerError


def _article(word: str) -> str:
    return "an" if word[:1] in "aeiou" or word.startswith("hour") else "a"


def _fiq_category(attributes: Mapping[str, str], info: Mapping[str, Any]) -> str:
    if info.get("category") in synthetic.FIQ_SHAPES:
        return str(info["category"])
    for category, shapes in synthetic.FIQ_SHAPES.items():
        if attributes["shape"] in shapes:
            return category
    raise CaptionerError(f"unknown FashionIQ-style shape {attributes['shape']!r}")


def _other(rng: random.Random, values: Sequence[str], current: str) -> str:
    choices = [v for v in values if v != current]
    return rng.choice(choices) if choices else current


def _noisy_fiq(attributes: dict[str, str], info: Mapping[str, Any], rng: random.Random) -> str:
    if rng.random() < 0.5:  # swap one attribute for another value of its vocabulary
        attribute = rng.choice(synthetic.FIQ_ATTRIBUTES)
        vocab = {
            "shape": synthetic.FIQ_SHAPES[_fiq_category(attributes, info)],
            "color": synthetic.FIQ_COLORS,
            "pattern": synthetic.FIQ_PATTERNS,
            "size": synthetic.FIQ_SIZES,
            "length": synthetic.FIQ_LENGTHS,
        }[attribute]
        return synthetic.describe(
            {**attributes, attribute: _other(rng, vocab, attributes[attribute])}
        )
    # drop one attribute's word from the description (never the noun)
    words = {
        "size": attributes["size"],
        "color": attributes["color"],
        "pattern": "solid"
        if attributes["pattern"] == "solid"
        else synthetic.PATTERN_ADJ[attributes["pattern"]],
    }
    if attributes["length"] != "regular":
        words["length"] = attributes["length"]
    dropped = words[rng.choice(sorted(words))]
    tokens = synthetic.describe(attributes).split()[1:]
    tokens.remove(dropped)
    return f"{_article(tokens[0])} {' '.join(tokens)}"


def _noisy_cirr(attributes: dict[str, str], rng: random.Random) -> str:
    objects = [s for s in synthetic.CIRR_SLOTS if attributes[s] != synthetic.EMPTY]
    if rng.random() < 0.5:  # swap the background or one object
        target = rng.choice(["background", *objects])
        if target == "background":
            new = _other(rng, synthetic.CIRR_BACKGROUNDS, attributes["background"])
        else:
            color, shape = attributes[target].split(" ", 1)
            if rng.random() < 0.5:
                new = f"{_other(rng, synthetic.CIRR_COLORS, color)} {shape}"
            else:
                new = f"{color} {_other(rng, synthetic.CIRR_SHAPES, shape)}"
        return synthetic.describe({**attributes, target: new})
    if len(objects) > 1 and rng.random() < 0.75:  # drop one object
        return synthetic.describe({**attributes, rng.choice(objects): synthetic.EMPTY})
    text = synthetic.describe(attributes)  # drop the background
    return text.rsplit(", on a ", 1)[0]


class OracleCaptioner(Captioner):
    """Ground-truth descriptions of the synthetic benchmark, with optional seeded noise.

    ``metadata``: ``metadata/images.json`` files to read; by default the file is found by
    walking up from each image's folder (``<dataset>/images/x.png`` ->
    ``<dataset>/metadata/images.json``; CIRR's ``train/<k>/x.png`` works the same way).
    ``noise``: probability per image of dropping or swapping one attribute; decided by
    ``(seed, image name)`` alone, so a caption does not depend on batch or order.
    """

    name = "oracle"

    def __init__(
        self,
        *,
        noise: float = 0.0,
        seed: int = 0,
        metadata: Sequence[str | Path] | None = None,
        words: int | None = None,
        progress: bool = True,
    ) -> None:
        super().__init__(words=words, progress=progress)
        if not 0.0 <= noise <= 1.0:
            raise CaptionerError(f"oracle: noise must be in [0, 1], got {noise}")
        self.noise = float(noise)
        self.seed = int(seed)
        self._files: dict[Path, dict[str, Any]] = {}
        self._explicit = [Path(p) for p in metadata or ()]
        for path in self._explicit:
            self._load(path)

    def options(self) -> dict[str, Any]:
        return {
            "noise": self.noise,
            "seed": self.seed,
            "metadata": [str(p) for p in self._explicit],
        }

    def _load(self, path: Path) -> dict[str, Any]:
        if path not in self._files:
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except FileNotFoundError:
                raise DataFormatError(path, "metadata file not found") from None
            except ValueError as exc:
                raise DataFormatError(path, f"not valid JSON ({exc})") from None
            if not isinstance(data, dict):
                raise DataFormatError(path, "expected a JSON object name -> metadata")
            self._files[path] = data
        return self._files[path]

    def _info(self, name: str, path: Path) -> dict[str, Any]:
        candidates = list(self._explicit)
        if not candidates:
            folder = Path(os.path.abspath(path)).parent
            for parent in [folder, *folder.parents][:5]:
                meta = parent / "metadata" / "images.json"
                if meta.is_file():
                    candidates.append(meta)
        for meta in candidates:
            info = self._load(meta).get(name)
            if info is not None:
                if not isinstance(info, dict) or not isinstance(info.get("attributes"), dict):
                    raise DataFormatError(
                        meta, "expected an object", record=name, field="attributes"
                    )
                return info
        looked = ", ".join(str(m) for m in candidates) or "no metadata/images.json above it"
        raise CaptionerError(
            f"oracle: no ground truth for image {name!r} ({path}); looked in {looked}"
        )

    def _describe_one(self, name: str, info: Mapping[str, Any]) -> str:
        attributes = dict(info["attributes"])
        rng = random.Random(f"cirbench-oracle/{self.seed}/{name}")
        if self.noise == 0.0 or rng.random() >= self.noise:
            return synthetic.describe(attributes)
        if "shape" in attributes:
            return _noisy_fiq(attributes, info, rng)
        return _noisy_cirr(attributes, rng)

    def _caption_batch(
        self, names: list[str], paths: Mapping[str, Path], category: str | None
    ) -> list[str]:
        return [self._describe_one(n, self._info(n, Path(paths[n]))) for n in names]
