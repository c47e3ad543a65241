"""Wall time of one stage-1 epoch (image encoder trained) against one SPN stage-2 epoch
(image side frozen, static bank) for the same spec and data.

    python benchmarks/bench_spn_stages.py [SPEC] [--set KEY=VALUE ...]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from bench.config import load_spec
from bench.spn.modifiers import PlannedPhase
from bench.train.engine import plan_phases
from bench.train.loop import PhaseTraining, train_epoch
from bench.train.session import build_session

DEFAULT_SPEC = (
    Path(__file__).resolve().parents[1] / "experiments" / "specs" / "clip4cir_fashioniq.yaml"
)


def time_epoch(session, planned) -> float:
    """Seconds of one training epoch of a planned phase (bank and feature caches warm)."""
    training = PhaseTraining.create(session, planned.phase, 0, planned.settings, planned.objective)
    if training.frozen:  # the bank is built once per run: warm it outside the timing
        train_epoch(session, training, 0)
    start = time.perf_counter()
    train_epoch(session, training, 0)
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
    stage1_s = time_epoch(session, PlannedPhase(stage1, spec.train.phase(stage1.name)))
    [planned] = plan_phases(spec, session.method)
    phase, cfg = planned.phase, planned.settings
    stage2_s = time_epoch(session, planned)
    n = len(session.data.train)
    print(f"{args.spec.name}: {n} training triplets, bank of {len(session.pool_names)} images")
    print(f"  stage 1 epoch ({stage1.name}, batch {spec.train.batch_size}): {stage1_s:8.2f} s")
    print(f"  stage 2 epoch ({phase.name}, batch {cfg.batch_size}): {stage2_s:8.2f} s")
    print(f"  stage 2 / stage 1: {stage2_s / stage1_s:.3f} ({stage1_s / stage2_s:.1f}x faster)")


if __name__ == "__main__":
    main()
