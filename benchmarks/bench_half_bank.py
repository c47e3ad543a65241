"""The SPN negative bank held in RAM as float32 against float16 memory-mapped from disk.

Two measurements, each mode in a fresh process (Linux: memory from ``/proc/self/status``):

1. ``epoch``: one SPN stage-2 (bank) epoch of a spec (default: CLIP4CIR on the synthetic
   CIRR set, ``small`` profile, random weights, the paper's bank-stage settings) with the
   training features (target bank + reference representations) as float32 copies in RAM
   (the behaviour before banks were memory-mapped), memory-mapped float32, and
   memory-mapped float16 (``spn.negatives.half_bank``). Reports the wall time of the epoch
   (caches warm; the fastest of ``--repeats``) and the memory the epochs add over the
   process before them.
2. ``bank``: the bank objective alone (full-bank InfoNCE, forward + backward) against a
   random bank of ``--rows`` x ``--dim`` (default 100k x 512, 200 MB as float32): an
   in-RAM float32 tensor against a float16 memory-mapped file, chunk-wise.

Memory is reported as the peak growth of private memory (``RssAnon``: what the process
really holds) and of mapped file pages (``RssFile``: page cache, reclaimable by the OS).

    python benchmarks/bench_half_bank.py [SPEC] [--set KEY=VALUE ...] [--rows N --dim D]
        [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SPEC = REPO / "experiments" / "specs" / "clip4cir_cirr.yaml"
DEFAULT_SET = [
    "dataset.synthetic_size=small",
    "backbone.pretrained=random",
    "spn.negatives={}",
]
EPOCH_MODES = {  # mode -> (half_bank, features in RAM)
    "ram-fp32": (False, True),
    "mmap-fp32": (False, False),
    "mmap-fp16": (True, False),
}
BANK_MODES = ("ram-fp32", "mmap-fp16")


def memory_kb() -> dict[str, int]:
    """RssAnon and RssFile of this process in kB."""
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("RssAnon", "RssFile"):
            out[key] = int(value.split()[0])
    return out


class PeakMemory:
    """Samples :func:`memory_kb` in a thread; ``growth`` = peak minus the value at start."""

    def __init__(self, interval: float = 0.002) -> None:
        self.interval = interval
        self.start = memory_kb()
        self.peak = dict(self.start)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            for key, value in memory_kb().items():
                self.peak[key] = max(self.peak[key], value)
            time.sleep(self.interval)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        for key, value in memory_kb().items():
            self.peak[key] = max(self.peak[key], value)

    def growth_mb(self) -> dict[str, float]:
        return {k: round((self.peak[k] - self.start[k]) / 1024, 1) for k in self.start}


def child_epoch(mode: str, spec_path: Path, overrides: list[str], repeats: int) -> dict[str, Any]:
    """Stage-2 epochs in ``mode`` after a warm-up epoch that fills the caches: the fastest
    of ``repeats`` (the machine is shared) and the peak memory growth over all of them."""
    from bench.config import load_spec
    from bench.train.engine import plan_phases
    from bench.train.loop import PhaseTraining, train_epoch, training_features
    from bench.train.session import build_session

    half, in_ram = EPOCH_MODES[mode]
    spec = load_spec(spec_path, [*overrides, f"spn.negatives.half_bank={str(half).lower()}"])
    session = build_session(spec, progress=False, pretrained=False)
    session.features_in_ram = in_ram
    [planned] = plan_phases(spec, session.method)
    training = PhaseTraining.create(session, planned.phase, 0, planned.settings, planned.objective)
    args = (session, training, 0)
    train_epoch(*args)  # warm: the feature cache of this dtype exists afterwards
    features = training_features(session, True, True)
    assert features is not None
    bank_bytes = features.target.element_size() * features.target.nelement()
    ref_bytes = features.reference.element_size() * features.reference.nelement()
    del features
    times, cpu_times = [], []
    with PeakMemory() as memory:
        for _ in range(repeats):
            start, cpu_start = time.perf_counter(), time.process_time()
            train_epoch(*args)
            times.append(time.perf_counter() - start)
            cpu_times.append(time.process_time() - cpu_start)
    return {
        "mode": mode,
        "seconds": round(min(times), 3),
        "cpu_seconds": round(min(cpu_times), 3),
        "triplets": len(session.epoch_triplets(0)),
        "bank_rows": len(session.pool_names),
        "bank_mb": round(bank_bytes / 2**20, 2),
        "reference_mb": round(ref_bytes / 2**20, 2),
        "growth_mb": memory.growth_mb(),
    }


def child_bank(mode: str, folder: Path, steps: int, batch: int) -> dict[str, Any]:
    """``steps`` full-bank objective steps (forward + backward) in ``mode``."""
    from bench.spn.negatives import BankObjective

    path = folder / ("bank-fp32.npy" if mode == "ram-fp32" else "bank-fp16.npy")
    with PeakMemory() as memory:
        if mode == "ram-fp32":
            bank = torch.from_numpy(np.load(path))  # the whole bank read into RAM
        else:
            bank = torch.from_numpy(np.load(path, mmap_mode="c"))
        objective = BankObjective(0.02, learnable=False, neg_num=None)
        generator = torch.Generator().manual_seed(0)
        query_source = torch.Generator().manual_seed(1)
        start, cpu_start = time.perf_counter(), time.process_time()
        for _ in range(steps):
            query = torch.nn.functional.normalize(
                torch.randn(batch, bank.shape[1], generator=query_source), dim=-1
            ).requires_grad_(True)
            positives = torch.randint(0, bank.shape[0], (batch,), generator=generator)
            objective(query, bank, positives, generator).backward()
        seconds = (time.perf_counter() - start) / steps
        cpu_seconds = (time.process_time() - cpu_start) / steps
    return {
        "mode": mode,
        "seconds_per_step": round(seconds, 4),
        "cpu_seconds_per_step": round(cpu_seconds, 4),
        "bank_mb_on_disk": round(path.stat().st_size / 2**20, 1),
        "growth_mb": memory.growth_mb(),
    }


def run_child(argv: list[str]) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, __file__, *argv], check=True, capture_output=True, text=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("spec", nargs="?", type=Path, default=DEFAULT_SPEC)
    parser.add_argument("--set", action="append", default=[])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=2, help="timed epochs per mode")
    parser.add_argument("--only", choices=("epoch", "bank"), help="run one measurement")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--child", nargs=2, metavar=("KIND", "MODE"), help=argparse.SUPPRESS)
    parser.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    overrides = [*DEFAULT_SET, *args.set]
    if args.child:
        kind, mode = args.child
        if kind == "epoch":
            result = child_epoch(mode, args.spec, overrides, args.repeats)
        else:
            result = child_bank(mode, args.folder, args.steps, args.batch)
        print(json.dumps(result))
        return

    report: dict[str, Any] = {"epoch": [], "bank": []}
    for mode in EPOCH_MODES if args.only != "bank" else ():
        extra = [f"--set={s}" for s in args.set]
        child = [str(args.spec), *extra, "--repeats", str(args.repeats), "--child", "epoch", mode]
        report["epoch"].append(run_child(child))
    with tempfile.TemporaryDirectory() as tmp:
        if args.only == "epoch":
            args.rows = args.dim = 1
        rng = np.random.default_rng(0)
        bank = rng.standard_normal((args.rows, args.dim), dtype=np.float32)
        bank /= np.linalg.norm(bank, axis=1, keepdims=True)
        np.save(Path(tmp) / "bank-fp32.npy", bank)
        np.save(Path(tmp) / "bank-fp16.npy", bank.astype(np.float16))
        del bank
        for mode in BANK_MODES if args.only != "epoch" else ():
            child = ["--child", "bank", mode, "--folder", tmp]
            child += ["--steps", str(args.steps), "--batch", str(args.batch)]
            report["bank"].append(run_child(child))

    for row in report["epoch"]:
        base = report["epoch"][0]
        if row is base:
            print(
                f"{args.spec.name} (stage-2 epoch, {base['triplets']} triplets, bank of "
                f"{base['bank_rows']} images); wall and CPU seconds, ratio to {base['mode']}"
            )
        g = row["growth_mb"]
        print(
            f"  {row['mode']:9s} {row['seconds']:7.2f} s ({row['seconds'] / base['seconds']:.2f}x)"
            f" cpu {row['cpu_seconds']:7.2f} s ({row['cpu_seconds'] / base['cpu_seconds']:.2f}x)"
            f"  bank {row['bank_mb']:6.2f} MB + references {row['reference_mb']:6.2f} MB"
            f"  epochs add RssAnon {g['RssAnon']:7.1f} MB, RssFile {g['RssFile']:6.1f} MB"
        )
    for row in report["bank"]:
        first = report["bank"][0]
        if row is first:
            print(f"bank objective alone: {args.rows} x {args.dim}, batch {args.batch}, full bank")
        g = row["growth_mb"]
        wall, cpu = row["seconds_per_step"], row["cpu_seconds_per_step"]
        print(
            f"  {row['mode']:9s} {wall:7.4f} s/step ({wall / first['seconds_per_step']:.2f}x)"
            f" cpu {cpu:7.4f} s ({cpu / first['cpu_seconds_per_step']:.2f}x)"
            f"  file {row['bank_mb_on_disk']:6.1f} MB  RssAnon +{g['RssAnon']:7.1f} MB,"
            f" RssFile +{g['RssFile']:6.1f} MB"
        )
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
