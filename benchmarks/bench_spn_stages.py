"""Wall time of one stage-1 epoch (image encoder trained) against one SPN stage-2 epoch
(image side frozen, static bank) for the same spec and data.

    python benchmarks/bench_spn_stages.py [SPEC] [--set KEY=VALUE ...]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from bench.config import load_spec
from bench.engine import (
    _train_epoch,
    build_session,
    make_objective,
    phase_optimizer,
    plan_phases,
    set_trainable,
)

DEFAULT_SPEC = (
    Path(__file__).resolve().parents[1] / "experiments" / "specs" / "clip4cir_fashioniq.yaml"
)


def time_epoch(session, phase, cfg) -> float:
    """Seconds of one training epoch of ``phase`` (bank and feature caches warm)."""
    method = session.method
    params = set_trainable(method, phase)
    objective = make_objective(session.spec, method, phase)
    optimizer, schedule = phase_optimizer(params, cfg, 10_000)
    scaler = torch.amp.GradScaler("cuda", enabled=False)
    frozen = phase.image_frozen(method)
    args = (session, phase, 0, 0, cfg, optimizer, schedule, scaler, frozen, objective, None)
    if frozen:  # the bank is built once per run: warm it outside the timing
        _train_epoch(*args)
    start = time.perf_counter()
    _train_epoch(*args)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("spec", nargs="?", type=Path, default=DEFAULT_SPEC)
    parser.add_argument("--set", action="append", default=[])
    args = parser.parse_args()
    spec = load_spec(
        args.spec, overrides=["backbone.pretrained=random", "spn.negatives={}", *args.set]
    )
    session = build_session(spec, progress=False, pretrained=False)
    stage1 = session.method.phases[0]
    stage1_s = time_epoch(session, stage1, spec.train.phase(stage1.name))
    [(phase, cfg)] = plan_phases(spec, session.method)
    stage2_s = time_epoch(session, phase, cfg)
    n = len(session.data.train)
    print(f"{args.spec.name}: {n} training triplets, bank of {len(session.pool_names)} images")
    print(f"  stage 1 epoch ({stage1.name}, batch {spec.train.batch_size}): {stage1_s:8.2f} s")
    print(f"  stage 2 epoch ({phase.name}, batch {cfg.batch_size}): {stage2_s:8.2f} s")
    print(f"  stage 2 / stage 1: {stage2_s / stage1_s:.3f} ({stage1_s / stage2_s:.1f}x faster)")


if __name__ == "__main__":
    main()
