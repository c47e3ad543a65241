"""bench.tracking against a real MLflow SQLite store (one store per module: init is slow)."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest
from mlflow import MlflowClient

import bench
from bench.config import parse_spec
from bench.tracking import (
    TrackedRun,
    TrackingError,
    default_tracking_uri,
    find_runs,
    metric_key,
    ui_command,
)
from bench.tracking.tags import is_main_process, run_tags
from tests.conftest import run_processes_at_once

# MLflow 3.17 + SQLAlchemy 2.1: deprecation warning from inside mlflow on store init.
pytestmark = pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy:DeprecationWarning")


class Boom(RuntimeError):
    pass


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    root = tmp_path_factory.mktemp("mlstore")
    return root, f"sqlite:///{root}/mlflow.db"


@pytest.fixture
def uri(store: tuple[Path, str], monkeypatch: pytest.MonkeyPatch) -> str:
    root, uri = store
    monkeypatch.chdir(root)
    monkeypatch.delenv("RANK", raising=False)
    return uri


def _spec():
    return parse_spec(
        {"name": "t", "dataset": {"format": "fashioniq"}, "method": {"params": {"k": [1, 2]}}}
    )


def test_run_params_metrics_tags_artifacts(uri: str, store: tuple[Path, str]) -> None:
    root, _ = store
    spec = _spec()
    extra = {"cirbench.dataset_fingerprint": "abc123"}
    with TrackedRun("exp-a", "run-1", params=spec.flat(), tags=extra, tracking_uri=uri) as run:
        for step, value in enumerate([0.5, 0.25, 0.125], start=1):
            run.log_metrics({"train.loss": value, "val.R@10": 10.0 * step}, step=step)
        run.log_dict({"R@10": 30.0}, "metrics.json")
        run.log_text(spec.to_yaml(), "spec.yaml")
        run.set_tags({"cirbench.note": 1})
    client = MlflowClient(uri)
    got = client.get_run(run.run_id)
    assert got.info.status == "FINISHED"
    assert got.info.run_name == "run-1"
    params = got.data.params
    assert params["train.lr"] == "0.0001"
    assert params["dataset.format"] == "fashioniq"
    assert params["method.params.k"] == "[1, 2]"
    assert set(params) == set(spec.flat())
    history = client.get_metric_history(run.run_id, "train.loss")
    assert [(m.step, m.value) for m in history] == [(1, 0.5), (2, 0.25), (3, 0.125)]
    recall = client.get_metric_history(run.run_id, "val.R_at_10")
    assert [(m.step, m.value) for m in recall] == [(1, 10.0), (2, 20.0), (3, 30.0)]
    tags = got.data.tags
    assert tags["cirbench.git_commit"]
    assert tags["cirbench.version"] == bench.__version__
    assert "torch" in tags["cirbench.device"]
    assert tags["cirbench.dataset_fingerprint"] == "abc123"
    assert tags["cirbench.note"] == "1"
    names = {a.path for a in client.list_artifacts(run.run_id)}
    assert names == {"metrics.json", "spec.yaml"}
    local = Path(client.download_artifacts(run.run_id, "metrics.json"))
    artifact_dir = root / "mlartifacts" / "exp-a" / run.run_id / "artifacts"
    assert (artifact_dir / "metrics.json").is_file()
    assert (artifact_dir / "spec.yaml").read_text() == spec.to_yaml()
    assert local.read_text().strip().startswith("{")
    assert not (root / "mlruns").exists()
    assert [r.info.run_id for r in find_runs("exp-a", "tags.`cirbench.note` = '1'", uri)] == [
        run.run_id
    ]
    assert find_runs("no-such-experiment", tracking_uri=uri) == []


def test_failed_run_records_error(uri: str) -> None:
    with (
        pytest.raises(Boom, match="injected"),
        TrackedRun("exp-a", "fails", params={"a": 1}, tracking_uri=uri) as run,
    ):
        run.log_metrics({"x": 1.0}, step=0)
        raise Boom("injected failure")
    client = MlflowClient(uri)
    got = client.get_run(run.run_id)
    assert got.info.status == "FAILED"
    assert got.data.tags["cirbench.error"] == "Boom: injected failure"
    assert "error.txt" in {a.path for a in client.list_artifacts(run.run_id)}
    text = Path(client.download_artifacts(run.run_id, "error.txt")).read_text()
    assert "Traceback" in text and "injected failure" in text


def test_keyboard_interrupt_kills_run(uri: str) -> None:
    with (
        pytest.raises(KeyboardInterrupt),
        TrackedRun("exp-a", "killed", params={}, tracking_uri=uri) as run,
    ):
        raise KeyboardInterrupt
    assert MlflowClient(uri).get_run(run.run_id).info.status == "KILLED"


def test_nested_runs(uri: str) -> None:
    with TrackedRun("exp-b", "parent", params={"grid": "g"}, tracking_uri=uri) as parent:
        with TrackedRun("exp-b", "child", params={"p": 1}, nested=True, tracking_uri=uri) as c1:
            pass
        with TrackedRun(
            "exp-b", "child2", params={}, parent_run_id=parent.run_id, tracking_uri=uri
        ) as c2:
            pass
    client = MlflowClient(uri)
    for child in (c1, c2):
        assert client.get_run(child.run_id).data.tags["mlflow.parentRunId"] == parent.run_id
    assert "mlflow.parentRunId" not in client.get_run(parent.run_id).data.tags
    with (
        pytest.raises(TrackingError, match="no enclosing run"),
        TrackedRun("exp-b", "orphan", params={}, nested=True, tracking_uri=uri),
    ):
        pass


def test_resume_continues_the_same_run(uri: str) -> None:
    with TrackedRun("exp-c", "r", params={"a": 1}, tracking_uri=uri) as first:
        first.log_metrics({"loss": 1.0}, step=1)
    with TrackedRun(
        "exp-c", "r", params={"a": 1, "b": 2}, tracking_uri=uri, run_id=first.run_id
    ) as again:
        again.log_metrics({"loss": 0.5}, step=2)
    assert again.run_id == first.run_id
    client = MlflowClient(uri)
    got = client.get_run(first.run_id)
    assert got.info.status == "FINISHED"
    assert got.data.params == {"a": "1", "b": "2"}
    assert [m.step for m in client.get_metric_history(first.run_id, "loss")] == [1, 2]


def test_disabled_tracking_creates_no_run(uri: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with TrackedRun("exp-off", "x", params={"a": 1}, tracking_uri=uri, enabled=False) as run:
        run.log_metrics({"x": 1.0})
        run.log_dict({}, "d.json")
        run.log_text("t", "t.txt")
        run.log_artifact(__file__)
        run.set_tags({"a": "b"})
        assert run.run_id is None
    monkeypatch.setenv("RANK", "1")
    assert not is_main_process()
    with TrackedRun("exp-off", "rank1", params={}, tracking_uri=uri) as run:
        assert run.run_id is None
    assert MlflowClient(uri).get_experiment_by_name("exp-off") is None


def test_many_and_long_params(uri: str) -> None:
    params = {f"p{i}": i for i in range(250)} | {"long": "x" * 7000}
    with TrackedRun("exp-a", "many", params=params, tracking_uri=uri) as run:
        run.log_artifact(__file__, "src")
    got = MlflowClient(uri).get_run(run.run_id)
    assert len(got.data.params) == 251
    assert len(got.data.params["long"]) == 6000
    assert [a.path for a in MlflowClient(uri).list_artifacts(run.run_id, "src")] == [
        "src/test_tracking.py"
    ]


def test_default_tracking_uri(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:////elsewhere/x.db")
    assert default_tracking_uri() == "sqlite:////elsewhere/x.db"
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    monkeypatch.chdir(tmp_path)
    assert default_tracking_uri() == f"sqlite:///{tmp_path.resolve()}/mlflow.db"
    cmd = ui_command()
    assert cmd[:4] == ["mlflow", "ui", "--backend-store-uri", default_tracking_uri()]
    assert cmd[cmd.index("--workers") + 1] == "1"


def test_metric_key_and_tags() -> None:
    assert metric_key("R@10") == "R_at_10"
    assert metric_key("val.avg_R@50") == "val.avg_R_at_50"
    assert metric_key("loss (train)/step:1") == "loss _train_/step_1"
    assert metric_key("../x") == "_.._x"
    tags = run_tags({"cirbench.dataset_fingerprint": "f"})
    assert tags["cirbench.dataset_fingerprint"] == "f"
    assert tags["cirbench.git_commit"] == "unknown" or len(tags["cirbench.git_commit"]) >= 40


def test_processes_racing_on_a_fresh_default_store(tmp_path: Path) -> None:
    """Several processes creating the default store and one experiment at once."""
    script = textwrap.dedent(
        """
        import sys
        from bench.tracking import TrackedRun
        with TrackedRun("race", "w" + sys.argv[1], params={"w": sys.argv[1]}) as run:
            run.log_metrics({"R@1": 1.0}, step=1)
            run.log_text("x", "x.txt")
        """
    )
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "RANK")}
    env["PYTHONWARNINGS"] = "ignore"
    run_processes_at_once(script, 3, env, cwd=tmp_path)
    uri = f"sqlite:///{tmp_path.resolve()}/mlflow.db"
    runs = find_runs("race", tracking_uri=uri)
    assert sorted(r.info.run_name for r in runs) == ["w0", "w1", "w2"]
    assert {r.info.status for r in runs} == {"FINISHED"}
    for r in runs:
        assert (tmp_path / "mlartifacts" / "race" / r.info.run_id / "artifacts" / "x.txt").is_file()
    assert not (tmp_path / "mlruns").exists()
