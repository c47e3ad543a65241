"""Data-parallel training under torchrun: two gloo ranks on this CPU, the real engine.

Two ranks must take the steps of one process on the whole batch: in-batch objectives
(stage 1) through all-gathered features, the bank stage (N) through share-weighted
per-query losses. The tests compare the two runs epoch by epoch (dropout off, so that
the ranks' random draws cannot differ from the single process's). A torchrun killed
mid-way and resumed must end with the epochs of an uninterrupted one."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest
import torch
import yaml

from bench.config import parse_spec
from bench.train.checkpoints import TrainResult
from bench.train.engine import train
from bench.train.session import run_dir_for
from tests.conftest import cirbench_home

SPEC = {
    "name": "ddp-tiny",
    "experiment": "cirbench-ddp-tests",
    "dataset": {
        "format": "fashioniq",
        "synthetic_size": "tiny",
        "categories": ["dress"],
        "max_train_queries": 65,
    },
    "backbone": {"pretrained": "random"},
    "method": {"name": "clip4cir", "params": {"dropout": 0.0}},
    "train": {"epochs": 1, "batch_size": 16, "lr": 1e-4, "phases": {"combiner": {"epochs": 1}}},
    # 65 queries in global batches of 16: four steps of 8 rows per rank, then a last
    # batch of one row, which leaves rank 1 with an empty shard
    "spn": {"negatives": {"epochs": 2, "batch_size": 16, "lr": 1e-3}},
}


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    yield from cirbench_home(tmp_path_factory)


def torchrun(spec_file: Path, *args: str, nproc: int = 2) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    cmd += [f"--nproc_per_node={nproc}", "-m", "bench.cli", "train", str(spec_file), "--quiet"]
    done = subprocess.run(cmd + list(args), env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    return done


def runs_named(name: str) -> list[str]:
    found = mlflow.search_runs(
        experiment_names=[SPEC["experiment"]],
        filter_string=f"attributes.run_name = '{name}'",
        output_format="list",
    )
    return [r.info.run_id for r in found]


@pytest.mark.slow
def test_two_ranks_take_the_single_process_steps_of_the_bank_stage(home, tmp_path):
    spec = parse_spec(SPEC)
    single = train(spec, progress=False)
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(yaml.safe_dump(SPEC))

    done = torchrun(spec_file, "--restart")  # the N run again, on two ranks
    printed = json.loads(done.stdout[done.stdout.index("{") :])  # rank 0 alone reports
    assert done.stdout.count('"run_dir"') == 1
    assert printed["run_dir"] == str(run_dir_for(spec))

    ddp = TrainResult.load(run_dir_for(spec))
    assert ddp is not None and len(ddp.history) == len(single.history) == 2
    for one, two in zip(single.history, ddp.history, strict=True):
        assert two["loss"] == pytest.approx(one["loss"], rel=1e-5)
        assert two["Rmean"] == one["Rmean"]
    assert ddp.metrics == single.metrics
    assert ddp.mlflow_run_id not in (None, single.mlflow_run_id)
    # one MLflow run per training (rank 1 logs nothing), the stage 1 reused, not retrained
    assert set(runs_named("ddp-tiny[N]")) == {single.mlflow_run_id, ddp.mlflow_run_id}
    assert len(runs_named("ddp-tiny")) == 1


@pytest.mark.slow
def test_stage1_on_two_ranks_takes_the_single_process_steps(home, tmp_path):
    """In-batch objectives: each rank encodes its shard of the images, the features are
    all-gathered, every query sees the whole batch's negatives; both phases (image
    encoder trained, then Combiner on cached features) match one process. The last global
    batch holds one row, so rank 1 encodes an empty shard there."""
    data = {**SPEC, "name": "ddp-stage1", "seed": 3, "spn": {}}
    spec = parse_spec(data)
    single = train(spec, progress=False)
    spec_file = tmp_path / "stage1.yaml"
    spec_file.write_text(yaml.safe_dump(data))
    torchrun(spec_file, "--restart")
    ddp = TrainResult.load(run_dir_for(spec))
    assert ddp is not None
    assert [h["phase"] for h in ddp.history] == ["finetune", "combiner"]
    for one, two in zip(single.history, ddp.history, strict=True):
        assert two["loss"] == pytest.approx(one["loss"], rel=1e-5)
        assert two["Rmean"] == one["Rmean"]
    assert set(runs_named("ddp-stage1")) == {single.mlflow_run_id, ddp.mlflow_run_id}
    # a finished run is returned as it is: no retraining, no new MLflow run
    again = torchrun(spec_file, "--resume")
    assert json.loads(again.stdout[again.stdout.index("{") :])["metrics"] == ddp.metrics
    assert set(runs_named("ddp-stage1")) == {single.mlflow_run_id, ddp.mlflow_run_id}


@pytest.mark.slow
def test_a_killed_torchrun_resumes_where_it_stopped(home, tmp_path):
    """SIGTERM to torchrun mid-way through the bank stage, then ``--resume`` on two ranks:
    the run ends with exactly the epochs of an uninterrupted two-rank run, in the MLflow
    run the killed one had started."""
    data = {**SPEC, "name": "ddp-killed"}
    data["spn"] = {"negatives": {**SPEC["spn"]["negatives"], "epochs": 12}}
    spec = parse_spec(data)
    spec_file = tmp_path / "killed.yaml"
    spec_file.write_text(yaml.safe_dump(data))
    torchrun(spec_file)  # uninterrupted (trains the stage 1 both runs share)
    uninterrupted = TrainResult.load(run_dir_for(spec))
    assert uninterrupted is not None
    shutil.rmtree(run_dir_for(spec))

    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    cmd += ["-m", "bench.cli", "train", str(spec_file), "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, env=env, start_new_session=True, stderr=subprocess.DEVNULL)
    last = run_dir_for(spec) / "last.pt"
    deadline = time.monotonic() + 300
    while proc.poll() is None and time.monotonic() < deadline:
        if last.is_file():
            try:
                done = torch.load(last, weights_only=False)["state"]["epochs_done"]
            except Exception:  # being replaced right now
                done = 0
            if done >= 2:
                break
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(timeout=60)
    assert TrainResult.load(run_dir_for(spec)) is None, "finished before it was killed"
    killed_run = (run_dir_for(spec) / "mlflow_run_id").read_text().strip()

    torchrun(spec_file, "--resume")
    resumed = TrainResult.load(run_dir_for(spec))
    assert resumed is not None
    assert [(h["loss"], h["Rmean"]) for h in resumed.history] == [
        (h["loss"], h["Rmean"]) for h in uninterrupted.history
    ]
    # it continued the killed run: the same MLflow run, each epoch logged once
    assert resumed.mlflow_run_id == killed_run
    client = mlflow.MlflowClient()
    assert client.get_run(killed_run).info.status == "FINISHED"
    steps = [m.step for m in client.get_metric_history(killed_run, "val.Rmean")]
    assert sorted(steps) == list(range(1, 13))
    assert set(runs_named("ddp-killed[N]")) == {uninterrupted.mlflow_run_id, killed_run}


def test_a_sweep_under_torchrun_is_refused(monkeypatch):
    from bench.runner.ablate import sweep
    from bench.runner.grid import SweepError

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(SweepError, match="without torchrun"):
        sweep("ablation_spn", profile="quick")
