"""Image captioners for positive scaling: one interface, three sources.

* ``oracle``: the synthetic benchmark's ground-truth descriptions (``metadata/images.json``),
  optionally corrupted (``noise``: per image, with that probability, one attribute is dropped
  or swapped before describing) to stand in for an imperfect multi-modal LLM;
* ``file``: precomputed captions, a JSON list of ``{"image_id": ..., "caption": ...}``
  records (the format of the SPN authors' ``mm_data/*/..._it_llava_<k>.json`` files; extra
  keys such as ``image_path`` are ignored), a JSON object name -> caption, or JSONL records;
* ``hf``: a Hugging Face image-to-text / vision-language model (id or local folder), prompted
  as in the paper ("please briefly describe the {category} in {k} words").

Every captioner truncates captions to its word budget ``words`` (``None``: no budget) and can
journal its work: ``caption(..., journal=path)`` appends each finished batch to a JSONL file
and, on a later call, skips the images already there (same file size and mtime), so an
interrupted run resumes where it stopped.
"""

from __future__ import annotations

import inspect
import json
import os
import random
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tqdm import tqdm

from bench import synthetic
from bench.core.errors import CirbenchError, DataFormatError
from bench.core.hashing import digest

#: The paper's prompts (SPN4CIR ``zscir/captioner_llava.py``).
PAPER_PROMPT_CATEGORY = "please briefly describe the {category} in {k} words"
PAPER_PROMPT_IMAGE = "please briefly describe the image in {k} words"
_TRAILING = " \t\n.,;:!?"


class CaptionerError(CirbenchError, ValueError):
    """A captioner cannot be built or cannot caption the images it was given."""


def truncate_words(text: str, words: int | None) -> str:
    """Collapse blanks, keep the first ``words`` words, strip trailing punctuation."""
    tokens = text.split()
    if words is not None:
        tokens = tokens[:words]
    return " ".join(tokens).strip(_TRAILING)


def image_stamp(path: Path) -> str:
    """Size and modification time of an image file (a changed file is captioned again)."""
    st = os.stat(path)
    return f"{st.st_size}:{st.st_mtime_ns}"


def read_journal(path: Path) -> dict[str, tuple[str, str]]:
    """name -> (stamp, caption) from a caption journal; a torn last line is ignored."""
    done: dict[str, tuple[str, str]] = {}
    if not path.is_file():
        return done
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            try:
                record = json.loads(line)
                done[record["image_id"]] = (record.get("stamp", ""), record["caption"])
            except (ValueError, KeyError, TypeError):
                continue  # an interrupted append: the image is captioned again
    return done


def _append_journal(path: Path, records: list[dict[str, str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


class Captioner(ABC):
    """Turns images into short captions. Subclasses implement :meth:`_caption_batch`."""

    name: str = "captioner"
    batch_size: int = 1 << 30  # captioners without a model take everything in one batch

    def __init__(self, *, words: int | None = None, progress: bool = True) -> None:
        if words is not None and words < 1:
            raise CaptionerError(f"{self.name}: words must be >= 1 or None, got {words}")
        self.words = words
        self.progress = progress
        self.calls = 0  # batches captioned by this object (tests and reports read it)

    @abstractmethod
    def _caption_batch(
        self, names: list[str], paths: Mapping[str, Path], category: str | None
    ) -> list[str]:
        """Raw captions of one batch, in order."""

    def options(self) -> dict[str, Any]:
        """What, besides the kind, determines the captions (part of every cache key)."""
        return {}

    def describe(self) -> dict[str, Any]:
        """Provenance: kind, word budget and the options that determine the captions."""
        return {"kind": self.name, "words": self.words, **self.options()}

    def caption(
        self,
        names: Sequence[str],
        paths: Mapping[str, Path],
        *,
        category: str | None = None,
        journal: Path | None = None,
    ) -> dict[str, str]:
        """Captions of ``names`` (name -> caption). ``category`` (FashionIQ) goes into the
        prompt of prompted captioners; ``journal`` makes the work resumable (module doc)."""
        names = list(names)
        missing_paths = [n for n in names if n not in paths]
        if missing_paths:
            raise CaptionerError(
                f"{self.name}: no image path for {len(missing_paths)} images, "
                f"e.g. {missing_paths[:3]}"
            )
        stamps = {n: image_stamp(Path(paths[n])) for n in names} if journal else {}
        done: dict[str, str] = {}
        if journal is not None:
            for name, (stamp, text) in read_journal(journal).items():
                if stamps.get(name) == stamp:
                    done[name] = text
        todo = [n for n in names if n not in done]
        bar = tqdm(
            total=len(todo),
            desc=f"caption ({self.name}{', ' + category if category else ''})",
            disable=not self.progress or not todo,
            leave=False,
        )
        try:
            for start in range(0, len(todo), self.batch_size):
                batch = todo[start : start + self.batch_size]
                raw = self._caption_batch(batch, paths, category)
                self.calls += 1
                if len(raw) != len(batch):
                    raise CaptionerError(
                        f"{self.name}: {len(raw)} captions for a batch of {len(batch)} images"
                    )
                texts = [truncate_words(t, self.words) for t in raw]
                done.update(zip(batch, texts, strict=True))
                if journal is not None:
                    _append_journal(
                        journal,
                        [
                            {"image_id": n, "caption": t, "stamp": stamps[n]}
                            for n, t in zip(batch, texts, strict=True)
                        ],
                    )
                bar.update(len(batch))
        finally:
            bar.close()
        return {n: done[n] for n in names}


# --------------------------------------------------------------------------- oracle


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


# --------------------------------------------------------------------------- file


def read_caption_file(
    path: Path, *, key: str = "image_id", field: str = "caption"
) -> dict[str, str]:
    """name -> caption from a JSON list of records, a JSON object or a JSONL file."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataFormatError(path, "caption file not found") from None
    try:
        data: Any = json.loads(text)
    except ValueError:
        data = []
        for line_no, line in enumerate(text.splitlines()):
            if not line.strip():
                continue
            try:
                data.append(json.loads(line))
            except ValueError as exc:
                raise DataFormatError(path, f"not JSON nor JSONL ({exc})", record=line_no) from None
    if isinstance(data, dict):
        records: list[Any] = [{key: k, field: v} for k, v in data.items()]
        where = list(data)
    elif isinstance(data, list):
        records = data
        where = list(range(len(data)))
    else:
        raise DataFormatError(
            path, f"expected a JSON list of records or an object, got {type(data).__name__}"
        )
    captions: dict[str, str] = {}
    for record, index in zip(records, where, strict=True):
        if not isinstance(record, dict):
            raise DataFormatError(
                path, f"expected an object, got {type(record).__name__}", record=index
            )
        for name in (key, field):
            if name not in record:
                raise DataFormatError(path, "missing field", record=index, field=name)
            if not isinstance(record[name], str):
                raise DataFormatError(
                    path,
                    f"expected a string, got {type(record[name]).__name__}",
                    record=index,
                    field=name,
                )
        captions[record[key]] = record[field]
    return captions


class FileCaptioner(Captioner):
    """Captions imported from a file (module doc lists the formats)."""

    name = "file"

    def __init__(
        self,
        *,
        path: str | Path,
        key: str = "image_id",
        field: str = "caption",
        words: int | None = None,
        progress: bool = True,
    ) -> None:
        super().__init__(words=words, progress=progress)
        self.path = Path(path)
        self.key = key
        self.field = field
        self.captions = read_caption_file(self.path, key=key, field=field)

        self._digest = digest(sorted(self.captions.items()))

    def options(self) -> dict[str, Any]:
        return {"path": str(self.path), "content": self._digest}

    def _caption_batch(
        self, names: list[str], paths: Mapping[str, Path], category: str | None
    ) -> list[str]:
        missing = [n for n in names if n not in self.captions]
        if missing:
            raise DataFormatError(
                self.path,
                f"no {self.field!r} for {len(missing)} of the {len(names)} images to caption, "
                f"e.g. {missing[:3]}",
            )
        return [self.captions[n] for n in names]


# --------------------------------------------------------------------------- hugging face


def _auto_device(device: str) -> str:
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


class HFCaptioner(Captioner):
    """A Hugging Face image-to-text or vision-language model, batched and greedy.

    ``prompt_style``: ``chat`` (the processor's chat template with the image and the prompt:
    LLaVA-style models, the paper's set-up), ``prefix`` (the prompt is a text prefix the
    model continues, BLIP-style; the prefix is removed from the caption), ``none``
    (unconditional captioning; the word budget is then only a truncation) or ``auto``
    (``chat`` when the processor has a chat template, else ``none``).
    """

    name = "hf"

    def __init__(
        self,
        *,
        model: str | Path,
        words: int | None = 10,
        prompt: str | None = None,
        prompt_style: str = "auto",
        batch_size: int = 8,
        max_new_tokens: int | None = None,
        device: str = "auto",
        dtype: str = "auto",
        revision: str | None = None,
        progress: bool = True,
    ) -> None:
        super().__init__(words=words, progress=progress)
        if prompt_style not in ("auto", "chat", "prefix", "none"):
            raise CaptionerError(
                f"hf: prompt_style must be auto, chat, prefix or none, got {prompt_style!r}"
            )
        if batch_size < 1:
            raise CaptionerError(f"hf: batch_size must be >= 1, got {batch_size}")
        self.model_id = str(model)
        self.prompt = prompt
        self.prompt_style = prompt_style
        self.batch_size = batch_size
        self.max_new_tokens = max_new_tokens or (2 * words + 8 if words else 40)
        self.device = device
        self.dtype = dtype
        self.revision = revision
        self._model: Any = None
        self._processor: Any = None
        self._style: str | None = None
        self._device = "cpu"

    def options(self) -> dict[str, Any]:
        model = Path(self.model_id)
        fingerprint = None
        if model.is_dir():  # a local folder: its weights identify it, not its path
            files = sorted(model.glob("*.safetensors")) + sorted(model.glob("*.bin"))

            fingerprint = digest([(f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in files])
        return {
            "model": self.model_id,
            "revision": self.revision,
            "weights": fingerprint,
            "prompt": self.prompt_template(None),
            "prompt_category": self.prompt_template("{category}"),
            "prompt_style": self.prompt_style,
            "max_new_tokens": self.max_new_tokens,
            "decoding": "greedy",
        }

    def prompt_template(self, category: str | None) -> str:
        """The prompt for images of ``category`` (``None``: no category, CIRR / open pools)."""
        if self.prompt is not None:
            template = self.prompt
        else:
            template = PAPER_PROMPT_CATEGORY if category else PAPER_PROMPT_IMAGE
            if self.words is None:  # no word budget: no budget in the prompt either
                template = template.replace(" in {k} words", "")
        k = self.words if self.words is not None else ""
        return template.replace("{k}", str(k)).replace("{category}", category or "image")

    # -- model

    def load(self) -> None:
        """Load processor and model (done lazily by the first batch that needs them)."""
        if self._model is not None:
            return
        import torch
        import transformers

        kwargs: dict[str, Any] = {"revision": self.revision} if self.revision else {}
        try:
            processor = transformers.AutoProcessor.from_pretrained(self.model_id, **kwargs)
        except Exception as exc:
            raise CaptionerError(
                f"hf: cannot load a processor for {self.model_id!r} ({type(exc).__name__}: {exc})"
            ) from exc
        device = _auto_device(self.device)
        dtype = self.dtype
        if dtype == "auto":
            cuda_bf16 = device.startswith("cuda") and torch.cuda.is_bf16_supported()
            dtype = "bfloat16" if cuda_bf16 else "float32"
        torch_dtype = getattr(torch, dtype)
        dtype_kw = "dtype" if int(transformers.__version__.split(".")[0]) >= 5 else "torch_dtype"
        errors = []
        model = None
        for class_name in ("AutoModelForImageTextToText", "AutoModelForVision2Seq"):
            auto = getattr(transformers, class_name, None)
            if auto is None:
                continue
            try:
                model = auto.from_pretrained(self.model_id, **{dtype_kw: torch_dtype}, **kwargs)
                break
            except Exception as exc:  # the next class may know the architecture
                errors.append(f"{class_name}: {type(exc).__name__}: {exc}")
        if model is None:
            raise CaptionerError(f"hf: cannot load {self.model_id!r}: " + " | ".join(errors))
        model.to(device).eval()
        style = self.prompt_style
        if style == "auto":
            style = "chat" if getattr(processor, "chat_template", None) else "none"
        if style == "chat" and not getattr(processor, "chat_template", None):
            raise CaptionerError(f"hf: {self.model_id!r} has no chat template; use prompt_style")
        tokenizer = getattr(processor, "tokenizer", None)
        if style == "chat" and tokenizer is not None and not model.config.is_encoder_decoder:
            tokenizer.padding_side = "left"  # decoder-only generation continues on the right
        self._processor, self._model, self._style, self._device = processor, model, style, device

    @property
    def model(self) -> Any:
        self.load()
        return self._model

    def _caption_batch(
        self, names: list[str], paths: Mapping[str, Path], category: str | None
    ) -> list[str]:
        import torch
        from PIL import Image

        self.load()
        processor, model, style = self._processor, self._model, self._style
        images = []
        for name in names:
            try:
                with Image.open(paths[name]) as image:
                    images.append(image.convert("RGB"))
            except (OSError, ValueError) as exc:
                raise DataFormatError(paths[name], f"cannot read image: {exc}") from None
        prompt = self.prompt_template(category)
        if style == "chat":
            messages = [
                {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}
            ]
            text = processor.apply_chat_template(messages, add_generation_prompt=True)
            inputs = processor(
                images=images, text=[text] * len(images), padding=True, return_tensors="pt"
            )
        elif style == "prefix":
            inputs = processor(
                images=images, text=[prompt] * len(images), padding=True, return_tensors="pt"
            )
        else:
            inputs = processor(images=images, return_tensors="pt")
        inputs = {
            k: v.to(self._device, dtype=model.dtype)
            if v.is_floating_point()
            else v.to(self._device)
            for k, v in inputs.items()
            if isinstance(v, torch.Tensor)
        }
        with torch.inference_mode():
            output = model.generate(**inputs, max_new_tokens=self.max_new_tokens, do_sample=False)
        if style == "chat" and not model.config.is_encoder_decoder:
            output = output[:, inputs["input_ids"].shape[1] :]
        texts = processor.batch_decode(output, skip_special_tokens=True)
        if style == "prefix":
            texts = [_strip_prefix(t, prompt) for t in texts]
        return [" ".join(t.split()) for t in texts]


def _strip_prefix(text: str, prefix: str) -> str:
    squashed = " ".join(text.split())
    head = " ".join(prefix.split())
    if squashed.lower().startswith(head.lower()):
        return squashed[len(head) :].strip()
    return squashed


# --------------------------------------------------------------------------- factory

CAPTIONERS: dict[str, type[Captioner]] = {
    "oracle": OracleCaptioner,
    "file": FileCaptioner,
    "hf": HFCaptioner,
}


def make_captioner(kind: str, **options: Any) -> Captioner:
    """Build a captioner by kind (``oracle``, ``file``, ``hf``) with its options."""
    try:
        cls = CAPTIONERS[kind]
    except KeyError:
        raise CaptionerError(
            f"unknown captioner {kind!r}; expected one of {sorted(CAPTIONERS)}"
        ) from None
    try:
        inspect.signature(cls).bind(**options)
    except TypeError as exc:
        allowed = [p for p in inspect.signature(cls).parameters]
        raise CaptionerError(
            f"{kind} captioner: bad options {sorted(options)} ({exc}); it takes {allowed}"
        ) from None
    return cls(**options)
