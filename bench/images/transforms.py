"""Image preprocessing: CLIP4Cir's TargetPad and the square-pad / resize / crop pipeline.

TargetPad (CLIP4Cir): when an image's long/short side ratio is at least ``ratio`` (1.25),
pad the short side symmetrically with black so the ratio becomes exactly ``ratio`` (not
a square); otherwise leave it as is. Then resize the short side to ``size`` (bicubic)
and center-crop ``size`` x ``size``, convert to RGB and normalise.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

#: CLIP's normalisation constants (open_clip OPENAI_DATASET_MEAN / STD).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
TARGET_PAD_RATIO = 1.25


def target_pad(image: Image.Image, ratio: float = TARGET_PAD_RATIO) -> Image.Image:
    """Pad the short side so that long/short == ``ratio`` when the image is more elongated."""
    width, height = image.size
    if min(width, height) == 0:
        raise ValueError(f"image of size {image.size} has an empty side")
    if max(width, height) / min(width, height) < ratio:
        return image
    short_target = max(width, height) / ratio
    pad_w = max(int((short_target - width) / 2), 0)
    pad_h = max(int((short_target - height) / 2), 0)
    padded = Image.new(image.mode, (width + 2 * pad_w, height + 2 * pad_h))
    padded.paste(image, (pad_w, pad_h))
    return padded


def resize_center_crop(image: Image.Image, size: int) -> Image.Image:
    """Resize the short side to ``size`` (bicubic) and take the central ``size`` square."""
    width, height = image.size
    scale = size / min(width, height)
    new_w, new_h = max(size, round(width * scale)), max(size, round(height * scale))
    image = image.resize((new_w, new_h), Image.Resampling.BICUBIC)
    left, top = (new_w - size) // 2, (new_h - size) // 2
    return image.crop((left, top, left + size, top + size))


@dataclass(frozen=True)
class TargetPadTransform:
    """PIL image -> float32 CHW array, the CLIP4Cir "targetpad" preprocessing.

    ``ratio=None`` gives the plain CLIP pipeline (no padding). The output is a numpy array
    so this module needs no torch; ``torch.from_numpy`` wraps it without a copy.
    """

    size: int
    ratio: float | None = TARGET_PAD_RATIO
    mean: tuple[float, float, float] = CLIP_MEAN
    std: tuple[float, float, float] = CLIP_STD

    def __call__(self, image: Image.Image) -> np.ndarray:
        return self.normalize(self.pixels(image))

    def pixels(self, image: Image.Image) -> np.ndarray:
        """Padded, resized and cropped uint8 CHW pixels (the cacheable part)."""
        image = image.convert("RGB")
        if self.ratio is not None:
            image = target_pad(image, self.ratio)
        image = resize_center_crop(image, self.size)
        return np.ascontiguousarray(np.asarray(image, dtype=np.uint8).transpose(2, 0, 1))

    def normalize(self, pixels: np.ndarray) -> np.ndarray:
        """uint8 (..., 3, H, W) -> normalised float32, CLIP mean / std."""
        mean = np.asarray(self.mean, np.float32).reshape(3, 1, 1)
        std = np.asarray(self.std, np.float32).reshape(3, 1, 1)
        return (pixels.astype(np.float32) / 255.0 - mean) / std

    def describe(self) -> str:
        """A stable description, used in feature-cache keys."""
        return f"targetpad(ratio={self.ratio},size={self.size},mean={self.mean},std={self.std})"


def to_model_input(
    pixels: np.ndarray, transform: TargetPadTransform, device: torch.device
) -> torch.Tensor:
    """uint8 (B, 3, S, S) -> float tensor on ``device``, normalised as ``transform`` says."""
    batch = torch.from_numpy(np.require(pixels, requirements=["C", "W"])).to(device)
    mean = torch.tensor(transform.mean, device=device).view(1, 3, 1, 1)
    std = torch.tensor(transform.std, device=device).view(1, 3, 1, 1)
    return (batch.float() / 255.0 - mean) / std
