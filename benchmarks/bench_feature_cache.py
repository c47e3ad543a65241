"""What the on-disk caches save: preprocessed pixels and frozen image features.

For the eval galleries of a spec (default: the synthetic FashionIQ CLIP4CIR spec), time
(1) preprocessing every gallery image from PNG (cold) against reading the pixel cache
(warm), and (2) encoding the galleries with the image encoder (cold) against reading the
feature cache (warm). Prints seconds and the warm/cold speed-up.

    python benchmarks/bench_feature_cache.py [SPEC] [--set KEY=VALUE ...] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from bench.config import load_spec
from bench.core.arrays import ArrayCache
from bench.evaluation.encode import encode_cached
from bench.images.pixels import load_pixels
from bench.train.session import build_session

DEFAULT_SPEC = (
    Path(__file__).resolve().parents[1] / "experiments" / "specs" / "clip4cir_fashioniq.yaml"
)


def run(spec_path: Path, overrides: list[str]) -> dict[str, float]:
    spec = load_spec(spec_path, overrides=["backbone.pretrained=random", *overrides])
    session = build_session(spec, progress=False, pretrained=False)
    method, device = session.method, session.device
    method.eval()
    images = sum(len(s.split.gallery) for s in session.eval_images)
    with tempfile.TemporaryDirectory() as tmp:
        cache = ArrayCache(Path(tmp))
        timings: dict[str, float] = {"images": images}
        for label in ("pixels_cold", "pixels_warm"):
            start = time.perf_counter()
            for s in session.eval_images:
                split = s.split
                load_pixels(
                    cache, split.gallery, split.image_paths, method.transform, progress=False
                )
            timings[label] = time.perf_counter() - start
        for label in ("features_cold", "features_warm"):
            start = time.perf_counter()
            for s in session.eval_images:
                encode_cached(method, s.pixels, s.pixels_key, device, 256, cache)
            timings[label] = time.perf_counter() - start
    timings["pixels_speedup"] = timings["pixels_cold"] / timings["pixels_warm"]
    timings["features_speedup"] = timings["features_cold"] / timings["features_warm"]
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("spec", nargs="?", type=Path, default=DEFAULT_SPEC)
    parser.add_argument("--set", action="append", default=[])
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    t = run(args.spec, args.set)
    print(f"eval galleries: {t['images']:.0f} images ({args.spec.name})")
    print(
        f"  pixels   cold {t['pixels_cold']:7.3f} s   warm {t['pixels_warm']:7.3f} s   "
        f"{t['pixels_speedup']:6.1f}x"
    )
    print(
        f"  features cold {t['features_cold']:7.3f} s   warm {t['features_warm']:7.3f} s   "
        f"{t['features_speedup']:6.1f}x"
    )
    if args.json:
        args.json.write_text(json.dumps(t, indent=2))


if __name__ == "__main__":
    main()
