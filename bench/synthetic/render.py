"""Pixels of the synthetic world: shape polygons, fill patterns, colors, and ``render()``
(one FashionIQ-style object or one CIRR-style scene, drawn supersampled then reduced)."""

from __future__ import annotations

import math
import random
from collections.abc import Mapping

from PIL import Image, ImageDraw

from bench.synthetic.world import CIRR_SLOTS, EMPTY

RGB: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 40),
    "orange": (245, 130, 20),
    "yellow": (245, 205, 10),
    "green": (40, 160, 60),
    "teal": (0, 150, 150),
    "blue": (30, 70, 210),
    "purple": (130, 50, 180),
    "pink": (240, 110, 180),
    "brown": (120, 70, 30),
    "black": (25, 25, 25),
}
BACKGROUND_RGB: dict[str, tuple[int, int, int]] = {
    "white": (250, 250, 250),
    "grey": (140, 140, 140),
    "black": (20, 20, 20),
    "light blue": (160, 205, 240),
}
FIQ_BACKGROUND = (250, 250, 250)
_DARK_INK = (30, 30, 30)
_LIGHT_INK = (255, 255, 255)
_DARK_INK_COLORS = ("orange", "yellow", "pink")

SUPERSAMPLE = 4


def _regular(n: int, start_deg: float) -> list[tuple[float, float]]:
    return [
        (
            math.cos(math.radians(start_deg + 360 * k / n)),
            math.sin(math.radians(start_deg + 360 * k / n)),
        )
        for k in range(n)
    ]


def _arc(cx: float, cy: float, rx: float, ry: float, a0: float, a1: float, n: int = 24):
    return [
        (
            cx + rx * math.cos(math.radians(a0 + (a1 - a0) * k / n)),
            cy + ry * math.sin(math.radians(a0 + (a1 - a0) * k / n)),
        )
        for k in range(n + 1)
    ]


def _heart() -> list[tuple[float, float]]:
    pts = []
    for k in range(64):
        t = 2 * math.pi * k / 64
        x = 16 * math.sin(t) ** 3
        y = -(13 * math.cos(t) - 5 * math.cos(2 * t) - 2 * math.cos(3 * t) - math.cos(4 * t))
        pts.append((x, y))
    return pts


def _star() -> list[tuple[float, float]]:
    pts = []
    for k in range(10):
        r = 1.0 if k % 2 == 0 else 0.45
        a = math.radians(-90 + 36 * k)
        pts.append((r * math.cos(a), r * math.sin(a)))
    return pts


def _normalise(points: list[tuple[float, float]]) -> tuple[tuple[float, float], ...]:
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    x0, y0, dx, dy = min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)
    return tuple(((x - x0) / dx, (y - y0) / dy) for x, y in points)


SHAPE_POLYGONS: dict[str, tuple[tuple[float, float], ...]] = {
    name: _normalise(list(points))
    for name, points in {
        "triangle": [(0.5, 0), (1, 1), (0, 1)],
        "trapezoid": [(0.28, 0), (0.72, 0), (1, 1), (0, 1)],
        "hourglass": [(0, 0), (1, 0), (0.62, 0.5), (1, 1), (0, 1), (0.38, 0.5)],
        "diamond": [(0.5, 0), (1, 0.5), (0.5, 1), (0, 0.5)],
        "bell": [*_arc(0.5, 0.4, 0.32, 0.4, 180, 360), (0.86, 0.75), (1, 1), (0, 1), (0.14, 0.75)],
        "arch": [(0, 1), *_arc(0.5, 0.5, 0.5, 0.5, 180, 360), (1, 1)],
        "square": [(0, 0), (1, 0), (1, 1), (0, 1)],
        "t-shape": [
            (0, 0),
            (1, 0),
            (1, 0.36),
            (0.67, 0.36),
            (0.67, 1),
            (0.33, 1),
            (0.33, 0.36),
            (0, 0.36),
        ],
        "cross": [
            (0.32, 0),
            (0.68, 0),
            (0.68, 0.32),
            (1, 0.32),
            (1, 0.68),
            (0.68, 0.68),
            (0.68, 1),
            (0.32, 1),
            (0.32, 0.68),
            (0, 0.68),
            (0, 0.32),
            (0.32, 0.32),
        ],
        "pentagon": _regular(5, -90),
        "octagon": _regular(8, 22.5),
        "l-shape": [(0, 0), (0.42, 0), (0.42, 0.58), (1, 0.58), (1, 1), (0, 1)],
        "circle": _regular(48, 0),
        "heart": _heart(),
        "star": _star(),
        "hexagon": _regular(6, 0),
        "semicircle": _arc(0.5, 1, 0.5, 1, 180, 360),
        "drop": [(0.5, 0), *_arc(0.5, 0.64, 0.36, 0.36, -34, 214, 32)],
    }.items()
}


def _shade(rgb: tuple[int, int, int], f: float) -> tuple[int, int, int]:
    return (int(rgb[0] * f), int(rgb[1] * f), int(rgb[2] * f))


def _pattern(draw: ImageDraw.ImageDraw, pattern: str, box: tuple[float, ...], ink: tuple) -> None:
    """Draw a pattern over ``box`` (hi-res pixels); the shape mask clips it later."""
    s = SUPERSAMPLE
    x0, y0, x1, y1 = (int(v) for v in box)
    if pattern == "stripes":
        for y in range(y0 + 2 * s, y1, 8 * s):
            draw.rectangle((x0, y, x1, y + 3 * s - 1), fill=ink)
    elif pattern == "dots":
        for row, y in enumerate(range(y0 + 3 * s, y1, 7 * s)):
            for x in range(x0 + 3 * s + (row % 2) * 7 * s // 2, x1, 7 * s):
                draw.ellipse((x - 2 * s, y - 2 * s, x + 2 * s, y + 2 * s), fill=ink)
    elif pattern == "checks":
        c = 5 * s
        for j, y in enumerate(range(y0, y1, c)):
            for i, x in enumerate(range(x0, x1, c)):
                if (i + j) % 2:
                    draw.rectangle((x, y, x + c - 1, y + c - 1), fill=ink)
    elif pattern == "zigzag":
        for y in range(y0 + 3 * s, y1, 8 * s):
            pts = [
                (x, y + (2 * s if k % 2 else -2 * s))
                for k, x in enumerate(range(x0, x1 + 4 * s, 4 * s))
            ]
            draw.line(pts, fill=ink, width=2 * s)


def _draw_object(
    canvas: Image.Image,
    shape: str,
    color: str,
    pattern: str,
    box: tuple[float, float, float, float],
) -> None:
    """Draw one (patterned) shape into ``box`` of the hi-res canvas, with a darker outline."""
    x0, y0, x1, y1 = box
    pts = [(x0 + px * (x1 - x0), y0 + py * (y1 - y0)) for px, py in SHAPE_POLYGONS[shape]]
    mask = Image.new("L", canvas.size, 0)
    ImageDraw.Draw(mask).polygon(pts, fill=255)
    rgb = RGB[color]
    layer = Image.new("RGB", canvas.size, rgb)
    if pattern != "solid":
        ink = _DARK_INK if color in _DARK_INK_COLORS else _LIGHT_INK
        _pattern(ImageDraw.Draw(layer), pattern, box, ink)
    canvas.paste(layer, (0, 0), mask)
    outline = _shade(rgb, 0.55) if color != "black" else (90, 90, 90)
    ImageDraw.Draw(canvas).polygon(pts, outline=outline, width=SUPERSAMPLE)


def render(
    image_kind: str, attributes: Mapping[str, str], width: int, height: int, rng: random.Random
) -> Image.Image:
    """Render one image (``image_kind`` "fiq-<category>" or "cirr"); ``rng`` adds jitter."""
    s = SUPERSAMPLE
    W, H = width * s, height * s
    side = min(W, H)
    if image_kind.startswith("fiq-"):
        canvas = Image.new("RGB", (W, H), FIQ_BACKGROUND)
        size = {"small": 0.42, "medium": 0.58, "large": 0.74}[attributes["size"]]
        length = {"short": 0.8, "regular": 1.0, "long": 1.25}[attributes["length"]]
        w, h = side * size, side * size * length
        cx = W / 2 + rng.uniform(-0.03, 0.03) * side
        cy = H / 2 + rng.uniform(-0.03, 0.03) * side
        box = (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)
        _draw_object(canvas, attributes["shape"], attributes["color"], attributes["pattern"], box)
    elif image_kind == "cirr":
        canvas = Image.new("RGB", (W, H), BACKGROUND_RGB[attributes["background"]])
        for k, slot in enumerate(CIRR_SLOTS):
            obj = attributes[slot]
            if obj == EMPTY:
                continue
            color, shape = obj.split(" ")
            d = side * 0.27 * rng.uniform(0.94, 1.06)
            cx = W * (0.2 + 0.3 * k) + rng.uniform(-0.03, 0.03) * side
            cy = H / 2 + rng.uniform(-0.12, 0.12) * side
            _draw_object(
                canvas, shape, color, "solid", (cx - d / 2, cy - d / 2, cx + d / 2, cy + d / 2)
            )
    else:
        raise ValueError(f"unknown image kind {image_kind!r}")
    return canvas.resize((width, height), Image.Resampling.BOX)
