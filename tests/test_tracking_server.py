"""Tracking through an MLflow tracking server (``MLFLOW_TRACKING_URI=http://...``), the set-up
for many machines: a real ``mlflow server`` on loopback with its own SQLite store and
served artifacts; several processes and the engine log to it over HTTP."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pytest

from bench.config import parse_spec
from bench.tracking import UI_ENV, find_runs
from bench.train.engine import train
from tests.conftest import cirbench_home, run_processes_at_once


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    folder = tmp_path_factory.mktemp("mlflow-server")
    port = _free_port()
    cmd = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port)]
    cmd += ["--backend-store-uri", f"sqlite:///{folder}/server.db", "--workers", "1"]
    cmd += ["--artifacts-destination", str(folder / "artifacts")]
    log = (folder / "server.log").open("w")
    proc = subprocess.Popen(cmd, env={**os.environ, **UI_ENV}, stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while True:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    break
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"mlflow server did not start: {(folder / 'server.log').read_text()}")
        time.sleep(0.5)
    yield url
    proc.terminate()
    proc.wait(timeout=30)
    log.close()


@pytest.fixture(scope="module")
def home(tmp_path_factory, server):
    previous = mlflow.get_tracking_uri()
    for path in cirbench_home(tmp_path_factory):
        os.environ["MLFLOW_TRACKING_URI"] = server  # cirbench_home restores it afterwards
        mlflow.set_tracking_uri(server)
        yield path
    mlflow.set_tracking_uri(previous)  # later modules must not talk to a stopped server


def test_processes_log_side_by_side_through_the_server(server, home: Path) -> None:
    script = textwrap.dedent(
        """
        import sys
        from bench.tracking import TrackedRun
        with TrackedRun("via-server", "w" + sys.argv[1], params={"w": sys.argv[1]}) as run:
            for step in range(1, 4):
                run.log_metrics({"R@1": float(step)}, step=step)
            run.log_text("hello " + sys.argv[1], "hello.txt")
        """
    )
    env = {k: v for k, v in os.environ.items() if k != "RANK"}
    run_processes_at_once(script, 3, env)
    runs = find_runs("via-server", tracking_uri=server)
    assert sorted(r.info.run_name for r in runs) == ["w0", "w1", "w2"]
    client = mlflow.MlflowClient(server)
    for run in runs:
        assert run.info.status == "FINISHED"
        # artifacts go to the server (which other machines reach), not a local folder
        assert run.info.artifact_uri.startswith("mlflow-artifacts:")
        history = client.get_metric_history(run.info.run_id, "R_at_1")
        assert [m.value for m in sorted(history, key=lambda m: m.step)] == [1.0, 2.0, 3.0]
        local = client.download_artifacts(run.info.run_id, "hello.txt", str(home))
        assert Path(local).read_text() == f"hello {run.info.run_name[1:]}"
    assert not (home / "mlruns").exists() and not (home / "mlflow.db").exists()


def test_a_training_run_is_tracked_on_the_server(server, home: Path) -> None:
    spec = parse_spec(
        {
            "name": "server-tiny",
            "experiment": "cirbench-server-tests",
            "dataset": {
                "format": "fashioniq",
                "synthetic_size": "tiny",
                "categories": ["dress"],
                "max_train_queries": 32,
            },
            "backbone": {"pretrained": "random"},
            "train": {"epochs": 1, "batch_size": 16, "phases": {"combiner": {"epochs": 1}}},
        }
    )
    result = train(spec, progress=False)
    run = mlflow.MlflowClient(server).get_run(result.mlflow_run_id)
    assert run.info.status == "FINISHED"
    assert run.data.metrics["final.Rmean"] == pytest.approx(result.metrics["Rmean"])
    artifacts = {a.path for a in mlflow.MlflowClient(server).list_artifacts(run.info.run_id)}
    assert {"spec.yaml", "metrics.json"} <= artifacts
