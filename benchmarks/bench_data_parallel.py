"""Data-parallel training under torchrun against one process: samples per second per phase.

Trains one spec (default: CLIP4CIR on synthetic FashionIQ ``small``, dress, 1024 queries,
random weights, one epoch per phase, then the bank stage N) in a temporary
``CIRBENCH_HOME``, first in one process, then with ``torchrun --nproc_per_node N`` (gloo
on the CPU, NCCL on GPUs), and prints each phase's training throughput (samples per
second, all ranks together) and the ratio torchrun / one process. The one-process run
uses every CPU thread; each torchrun rank gets ``threads / N``.

    python benchmarks/bench_data_parallel.py [--nproc 2] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
import yaml

SPEC = {
    "name": "bench-ddp",
    "experiment": "cirbench-bench-ddp",
    "dataset": {
        "format": "fashioniq",
        "synthetic_size": "small",
        "categories": ["dress"],
        "max_train_queries": 1024,
    },
    "backbone": {"pretrained": "random"},
    "train": {"epochs": 1, "batch_size": 64, "lr": 1e-4, "phases": {"combiner": {"epochs": 1}}},
    "spn": {"negatives": {"epochs": 1, "batch_size": 64, "lr": 1e-3}},
}


def _train(home: Path, spec_file: Path, nproc: int) -> dict[str, float]:
    """Train the spec (stage 1, then N) from scratch; samples/s per phase."""
    from bench.config import parse_spec
    from bench.train.checkpoints import TrainResult
    from bench.train.session import run_dir_for

    threads = max(1, (os.cpu_count() or 1) // nproc)
    env = {
        **os.environ,
        "CIRBENCH_HOME": str(home),
        "MLFLOW_TRACKING_URI": f"sqlite:///{home}/mlflow.db",
        "OMP_NUM_THREADS": str(threads),
    }
    cmd = [sys.executable, "-m", "bench.cli", "train", str(spec_file), "--quiet", "--restart"]
    if nproc > 1:
        launch = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
        cmd = [*launch, f"--nproc_per_node={nproc}", *cmd[1:]]
    subprocess.run(cmd, env=env, check=True, capture_output=True, cwd=home)
    spec = parse_spec(SPEC)
    os.environ["CIRBENCH_HOME"] = str(home)  # run_dir_for reads it
    out: dict[str, float] = {}
    for each in (spec.stage1_spec(), spec):
        result = TrainResult.load(run_dir_for(each))
        assert result is not None, f"{run_dir_for(each)}: no result"
        for record in result.history:
            out[record["phase"]] = record["samples_per_s"]
    return out


def run(nproc: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        spec_file = home / "spec.yaml"
        spec_file.write_text(yaml.safe_dump(SPEC))
        single = _train(home, spec_file, 1)
        shutil.rmtree(home / "runs")  # both runs train stage 1 and N from scratch
        parallel = _train(home, spec_file, nproc)
    out: dict[str, float] = {"nproc": nproc, "cpu_threads": os.cpu_count() or 1}
    for phase, rate in single.items():
        out[f"{phase}_single_samples_s"] = rate
        out[f"{phase}_torchrun_samples_s"] = parallel[phase]
        out[f"{phase}_ratio"] = parallel[phase] / rate
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nproc", type=int, default=2)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    result = run(args.nproc)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    print(f"device {device}, {result['cpu_threads']} CPU threads, {args.nproc} ranks")
    for key in result:
        if key.endswith("_ratio"):
            phase = key[: -len("_ratio")]
            print(
                f"{phase:14s} one process {result[f'{phase}_single_samples_s']:8.1f} samples/s"
                f"   torchrun {result[f'{phase}_torchrun_samples_s']:8.1f} samples/s"
                f"   ratio {result[key]:.2f}x"
            )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
