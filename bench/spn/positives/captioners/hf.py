"""The ``hf`` captioner: a Hugging Face image-to-text / vision-language model.

The model (a hub id or a local folder) is prompted as in the paper ("please briefly describe
the {category} in {k} words"); ``torch`` and ``transformers`` are imported on first use.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bench.core.errors import DataFormatError
from bench.core.hashing import digest
from bench.spn.positives.captioners.base import (
    PAPER_PROMPT_CATEGORY,
    PAPER_PROMPT_IMAGE,
    Captioner,
    CaptionerError,
)


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
