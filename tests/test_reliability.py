"""Reliability of studies, readers, specs and MLflow bookkeeping (the unit parts; the
kills are in ``tests/test_fault_injection.py``, the bad files in ``tests/test_bad_inputs.py``).

Real code throughout: in-memory Optuna studies asked through the workers' own function,
real readers on written files, real spec parsing, a real MLflow store.
"""

from __future__ import annotations

import optuna
import pytest
from optuna.trial import TrialState

from bench.runner.grid import SweepError
from bench.runner.study import (
    anchor_values,
    ask_trial,
    enqueue_missing_anchors,
    fail_dead_trials,
    require_anchors,
)
from bench.runner.suites import StudySpec
from tests.conftest import cirbench_home

# ----------------------------------------------------------------------------- studies

BANK = 200


def _study(spec: StudySpec) -> optuna.Study:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize")
    study.set_user_attr("bank_size", BANK)
    study.set_user_attr("anchors", anchor_values(spec, BANK))
    enqueue_missing_anchors(study, spec)
    return study


def _values(spec: StudySpec, order: str, n: int = 6) -> list[int]:
    """Run a study of ``n`` trials with ``order`` 'serial' (one worker) or 'pairs' (two
    trials asked before either is told, as two workers do); returns the anchors' values
    in order, then the sampled values by slot."""
    study = _study(spec)
    anchors: list[int] = []
    by_slot: dict[int, int] = {}
    while True:
        batch = []
        for _ in range(1 if order == "serial" else 2):
            trial, value = ask_trial(study, spec, n, BANK - 1)
            if trial is not None:
                batch.append((trial, value))
        if not batch:
            break
        for trial, value in batch:
            if "anchor" in trial.user_attrs:
                anchors.append(value)
            else:
                by_slot[trial.user_attrs["slot"]] = value
            study.tell(trial, float(value % 7))
    assert len(study.trials) == n
    return anchors + [by_slot[i] for i in sorted(by_slot)]


@pytest.mark.parametrize("sampler", ["tpe", "random"])
def test_sampled_values_do_not_depend_on_workers_or_runs(sampler):
    spec = StudySpec(sampler=sampler, enqueue=(16,), sampler_seed=3)
    serial = _values(spec, "serial")
    assert serial[:2] == [BANK - 1, 16]  # the anchors first, in order
    assert _values(spec, "serial") == serial  # a second identical run
    assert _values(spec, "pairs") == serial  # two workers (TPE: within its 10 startup trials)
    other = _values(StudySpec(sampler=sampler, enqueue=(16,), sampler_seed=4), "serial")
    assert other[2:] != serial[2:]  # the seed matters


def test_a_killed_trial_is_redone_with_its_value_and_a_killed_anchor_re_enqueued():
    spec = StudySpec(enqueue=("bank", 8))
    assert anchor_values(spec, BANK) == [BANK - 1, 8]
    uninterrupted = _values(spec, "serial", n=4)
    study = _study(spec)
    # the first anchor's worker dies (a pid that cannot be alive on this host)
    trial, value = ask_trial(study, spec, 4, BANK - 1)
    assert value == BANK - 1
    trial.set_user_attr("worker", f"{__import__('socket').gethostname()}:999999999")
    # a study that ends now lacks both anchors: an error, not a table
    with pytest.raises(SweepError, match=f"neg_num={BANK - 1}, spn.negatives.neg_num=8"):
        require_anchors(study, spec)
    assert fail_dead_trials(study) == 1
    assert enqueue_missing_anchors(study, spec) == [BANK - 1]  # 8 still waits
    values = []
    while (asked := ask_trial(study, spec, 4, BANK - 1))[0] is not None:
        values.append(asked[1])
        study.tell(asked[0], float(asked[1] % 7))
    assert sorted(values) == sorted(uninterrupted)  # the same values, the budget exact
    states = [t.state for t in study.trials]
    assert states.count(TrialState.COMPLETE) == 4 and states.count(TrialState.FAIL) == 1
    require_anchors(study, spec)


def test_a_re_enqueued_anchor_runs_even_when_sampled_trials_filled_the_budget():
    spec = StudySpec()
    study = _study(spec)
    anchor, _ = ask_trial(study, spec, 3, BANK - 1)
    for _ in range(2):  # another worker fills the budget meanwhile
        trial, value = ask_trial(study, spec, 3, BANK - 1)
        study.tell(trial, 1.0)
    study.tell(anchor, state=TrialState.FAIL)
    assert enqueue_missing_anchors(study, spec) == [BANK - 1]
    trial, value = ask_trial(study, spec, 3, BANK - 1)
    assert value == BANK - 1
    study.tell(trial, 2.0)
    assert ask_trial(study, spec, 3, BANK - 1)[0] is None
    require_anchors(study, spec)


# ----------------------------------------------------------------------------- MLflow


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    yield from cirbench_home(tmp_path_factory)


def test_a_dead_processs_run_is_ended_killed_and_a_resume_does_not_repeat_points(store):
    import socket

    from bench.cli import Terminated
    from bench.tracking import TrackedRun, client, default_tracking_uri
    from bench.tracking.store import PROCESS_TAG, RUN_DIR_TAG, end_dead_runs

    tags = {"cirbench.spec_digest": "d1", PROCESS_TAG: f"{socket.gethostname()}:999999999"}
    dead = TrackedRun("rel", "dead", params={"a": 1}, tags={**tags, RUN_DIR_TAG: "/elsewhere"})
    dead.__enter__()  # its process "dies": never exited
    alive = TrackedRun("rel", "alive", params={}, tags={**tags, PROCESS_TAG: "otherhost:1"})
    alive.__enter__()
    ended = end_dead_runs("rel", "d1", "/mine")
    mlflow = client(default_tracking_uri())
    assert ended == [dead.run_id]
    assert mlflow.get_run(dead.run_id).info.status == "KILLED"
    assert mlflow.get_run(alive.run_id).info.status == "RUNNING"  # another host's: kept
    # the run folder's lock is held by the caller: any RUNNING run of it is dead
    assert end_dead_runs("rel", "d1", "/mine", keep=dead.run_id) == []
    alive_dir = TrackedRun("rel", "x", params={}, tags={**tags, RUN_DIR_TAG: "/mine"})
    alive_dir.__enter__()
    assert end_dead_runs("rel", "d1", "/mine") == [alive_dir.run_id]
    alive.__exit__(None, None, None)
    for leftover in (alive_dir, dead):  # leave no enclosing run to the tests after this one
        leftover.__exit__(None, None, None)

    # a resumed run replaces the points it already holds; SIGTERM ends a run KILLED
    with TrackedRun("rel", "r", params={}) as first:
        first.log_metrics({"val.Rmean": 1.5}, step=1)
    with pytest.raises(Terminated), TrackedRun("rel", "r", params={}, run_id=first.run_id) as run:
        run.log_metrics({"val.Rmean": 1.5, "train.loss": 0.5}, step=1)
        run.log_metrics({"val.Rmean": 2.5}, step=2)
        raise Terminated("signal 15")
    history = mlflow.get_metric_history(first.run_id, "val.Rmean")
    assert sorted((m.step, m.value) for m in history) == [(1, 1.5), (2, 2.5)]
    assert mlflow.get_run(first.run_id).info.status == "KILLED"


# ----------------------------------------------------------------------------- readers


def test_the_one_reader_names_the_file_for_every_os_error(tmp_path, monkeypatch):
    from bench.core.errors import DataFormatError
    from bench.core.reading import read_json

    (tmp_path / "ok.json").write_text('{"a": [1, 2]}')
    assert read_json(tmp_path / "ok.json") == {"a": [1, 2]}
    (tmp_path / "loop.json").symlink_to("loop.json")
    (tmp_path / "deep.json").write_text("[" * 40 + "]" * 40)
    (tmp_path / "big.json").write_text("[" + " " * 3000 + "]")
    for name, says in [
        ("missing.json", "not found"),
        ("loop.json", "symlink loop"),
        ("deep.json", "40 levels deep"),
        (".", "is a directory"),
    ]:
        with pytest.raises(DataFormatError, match=says) as caught:
            read_json(tmp_path / name)
        assert caught.value.file == str(tmp_path / name)
    with pytest.raises(DataFormatError, match="limit"):
        read_json(tmp_path / "big.json", limit=1000)
    monkeypatch.setenv("CIRBENCH_MAX_FILE_MB", "0.001")
    with pytest.raises(DataFormatError, match="CIRBENCH_MAX_FILE_MB"):
        read_json(tmp_path / "big.json")


# ----------------------------------------------------------------------------- fault points


@pytest.mark.parametrize(
    ("kill", "status", "seen"), [("*:3", -9, 3), ("b:2", -9, 4), ("c:1", 0, 10)]
)
def test_fault_points_record_and_kill(tmp_path, kill, status, seen):
    import os
    import subprocess
    import sys

    record = tmp_path / "points.log"
    code = "from bench.core.faults import reached\nfor i in range(5):\n reached('a'); reached('b')"
    env = {**os.environ, "CIRBENCH_FAULT_KILL": kill, "CIRBENCH_FAULT_RECORD": str(record)}
    proc = subprocess.run([sys.executable, "-c", code], env=env, check=False)
    assert proc.returncode == status
    assert len(record.read_text().split()) == seen
