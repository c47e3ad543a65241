"""The calibration suite: it parses, its studies run one tiny trial each end to end (the
quick profile, CLIP4CIR on FashionIQ) in another synthetic world than the tables', and its
report shows them."""

from __future__ import annotations

import socket
import subprocess
import sys

import optuna
import pytest
import yaml

from bench.config import SpecError
from bench.config.paths import SUITES_DIR
from bench.report import build_report
from bench.runner.ablate import sweep
from bench.runner.calibration import calibration_sampler
from bench.runner.storage import calibration_study_name, open_storage, storage_url
from bench.runner.suites import Point, SuiteRun, load_suite
from bench.tracking import find_runs
from tests.conftest import cirbench_home


@pytest.fixture(scope="module", autouse=True)
def home(tmp_path_factory):
    yield from cirbench_home(tmp_path_factory)


def _suite_file(tmp_path, **changes) -> str:
    data = yaml.safe_load((SUITES_DIR / "calibration.yaml").read_text())
    data.update(changes)
    path = tmp_path / "calibration.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def test_calibration_suite_parses_and_refuses_the_tables_world(tmp_path):
    suite = load_suite("calibration")
    assert suite.kind == "calibration" and suite.calibration is not None
    assert suite.calibration.synthetic_seed != 0  # the tables report seed 0
    assert set(suite.calibration.stage1.parameters) == {"train.lr", "train.epochs"}
    assert set(suite.calibration.stage2.parameters) == {
        "spn.negatives.lr",
        "spn.negatives.tau",
        "spn.negatives.epochs",
    }
    block = yaml.safe_load((SUITES_DIR / "calibration.yaml").read_text())["calibration"]
    with pytest.raises(SpecError, match="synthetic_seed"):
        load_suite(_suite_file(tmp_path, calibration={**block, "synthetic_seed": 0}))
    empty_range = {"train.lr": {"low": 1, "high": 1}}
    bad = {**block, "stage1": {"composition": "none", "parameters": empty_range}}
    with pytest.raises(SpecError, match=r"low 1\.0 must be below high 1\.0"):
        load_suite(_suite_file(tmp_path, calibration=bad))


def test_one_tiny_trial_per_study_end_to_end(tmp_path):
    path = _suite_file(tmp_path, datasets=["fashioniq"])
    storage = str(tmp_path / "journal.log")
    out = tmp_path / "reports"
    sweep(path, profile="quick", methods=("clip4cir",), storage=storage, n_trials=1, progress=False)
    run = SuiteRun.open(path, "quick", methods=("clip4cir",), storage=storage)
    studies = {}
    opened = open_storage(storage_url(storage))
    for stage in ("stage1", "stage2"):
        name = calibration_study_name(run, "clip4cir", "fashioniq", stage)
        studies[stage] = optuna.load_study(study_name=name, storage=opened)
        trials = studies[stage].trials
        assert [t.state.name for t in trials] == ["COMPLETE"]
        assert 0 <= trials[0].value <= 100
        # the first trial is the value the profile uses now (a small budget keeps it
        # unless a trial beats it)
        assert trials[0].user_attrs["incumbent"] is True
        assert studies[stage].user_attrs["n_trials"] == 1
    now1 = run.spec(Point("clip4cir", "fashioniq", "none", 0))
    assert studies["stage1"].trials[0].params == {"train.lr": now1.train.lr, "train.epochs": 1}
    now2 = run.spec(Point("clip4cir", "fashioniq", "N", 0)).spn.negatives
    assert studies["stage2"].trials[0].params == {
        "spn.negatives.lr": now2.lr,
        "spn.negatives.tau": now2.tau,
        "spn.negatives.epochs": 1,  # the quick profile's cap
    }
    best1 = studies["stage1"].best_params
    assert studies["stage2"].user_attrs["fixed"] == [f"{k}={v}" for k, v in sorted(best1.items())]
    query = "tags.`cirbench.suite` = 'calibration' and tags.`cirbench.kind` = 'train'"
    runs = find_runs(run.experiment, query)
    compositions = sorted(r.data.tags["cirbench.composition"] for r in runs)
    assert compositions == ["N", "none"]  # stage 2's N continued the best stage 1, reused
    assert {r.data.params["dataset.synthetic_seed"] for r in runs} == {"1"}
    stage1 = next(r for r in runs if r.data.tags["cirbench.composition"] == "none")
    assert float(stage1.data.params["train.lr"]) == pytest.approx(best1["train.lr"])
    assert best1["train.epochs"] == 1  # the quick profile's cap holds for searched epochs
    # a rerun with the same budget trains nothing more
    sweep(path, profile="quick", methods=("clip4cir",), storage=storage, n_trials=1, progress=False)
    assert len(optuna.load_study(study_name=name, storage=opened).trials) == 1
    # a larger bank-stage budget with stage 1 kept at the incumbent adds one stage-2 trial
    sweep(
        path,
        profile="quick",
        methods=("clip4cir",),
        storage=storage,
        n_trials=2,
        stage1_trials=1,
        progress=False,
    )
    for stage, count in (("stage1", 1), ("stage2", 2)):
        name = calibration_study_name(run, "clip4cir", "fashioniq", stage)
        study = optuna.load_study(study_name=name, storage=opened)
        assert [t.state.name for t in study.trials] == ["COMPLETE"] * count
        assert study.user_attrs["n_trials"] == count

    report = build_report(path, profile="quick", methods=("clip4cir",), storage=storage, out=out)
    summary = (report.folder / "calibration.md").read_text()
    assert "| clip4cir | fashioniq |" in summary and "seed 1" in summary
    trials = (report.folder / "calibration_clip4cir_fashioniq.md").read_text()
    assert "| stage1 | 0 | complete (best) (now) |" in trials
    assert "| stage2 | 0 | complete" in trials and "| stage2 | 1 | complete" in trials
    assert "trials per study: 1 (stage1) and 2 (stage2)" in summary


def test_an_incumbent_whose_worker_died_is_measured_again(tmp_path):
    """A calibration killed while it trained the incumbent (the profile's current values)
    does not lose it: the rerun marks the dead trial failed and enqueues the incumbent
    again, so a budget of 1 still measures the current values, not a random draw."""
    path = _suite_file(tmp_path, datasets=["fashioniq"])
    storage = str(tmp_path / "journal.log")
    run = SuiteRun.open(path, "quick", methods=("clip4cir",), storage=storage)
    name = calibration_study_name(run, "clip4cir", "fashioniq", "stage1")
    study = optuna.create_study(
        study_name=name, storage=open_storage(storage_url(storage)), direction="maximize"
    )
    now = run.spec(Point("clip4cir", "fashioniq", "none", 0)).train
    study.enqueue_trial({"train.lr": now.lr, "train.epochs": 1}, user_attrs={"incumbent": True})
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    trial = study.ask()
    trial.set_user_attr("worker", f"{socket.gethostname()}:{dead.pid}")  # killed mid-trial
    sweep(
        path,
        profile="quick",
        methods=("clip4cir",),
        storage=storage,
        n_trials=1,
        progress=False,
    )
    trials = optuna.load_study(study_name=name, storage=open_storage(storage_url(storage))).trials
    assert [t.state.name for t in trials] == ["FAIL", "COMPLETE"]
    assert trials[1].user_attrs["incumbent"] is True
    assert trials[1].params == {"train.lr": now.lr, "train.epochs": 1}


def _draws(storage: optuna.storages.BaseStorage, name: str, slots: range) -> list[float]:
    """Ask one trial per slot of study ``name`` with the calibration's sampler."""
    study = optuna.create_study(study_name=name, storage=storage, load_if_exists=True)
    values = []
    for slot in slots:
        study.sampler = calibration_sampler(0, name, slot)
        trial = study.ask()
        values.append(trial.suggest_float("train.lr", 1e-5, 1e-2, log=True))
        study.tell(trial, values[-1])
    return values


def test_calibration_draws_differ_per_study_and_survive_a_resume():
    whole = _draws(optuna.storages.InMemoryStorage(), "cal-a", range(4))
    resumed_storage = optuna.storages.InMemoryStorage()
    resumed = _draws(resumed_storage, "cal-a", range(2)) + _draws(
        resumed_storage, "cal-a", range(2, 4)
    )
    assert resumed == whole  # the resumed study does not redraw its first values
    assert len(set(whole)) == 4
    other = _draws(optuna.storages.InMemoryStorage(), "cal-b", range(4))
    assert not set(other) & set(whole)  # another method's study explores elsewhere
