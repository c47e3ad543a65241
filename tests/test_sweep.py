"""The ablation runner on the quick profile: suites, resume, Optuna workers, reports.

Real code throughout: sweeps train tiny CLIP4CIR runs, studies run in worker processes on
a journal file or a PostgreSQL server on loopback, reports are read back from MLflow.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
import pytest

from bench.core.errors import UnknownNameError
from bench.report import build_report, tracked_runs_by_digest
from bench.runner.ablate import sweep
from bench.runner.profiles import get_profile
from bench.runner.storage import open_storage, storage_url
from bench.runner.suites import Point, SuiteRun, list_suites, load_suite
from bench.tracking import find_runs
from bench.train.checkpoints import TrainResult
from bench.train.session import run_dir_for
from tests.conftest import cirbench_home

QUICK = "quick"
ONLY = ("clip4cir",)


@pytest.fixture(scope="module", autouse=True)
def home(tmp_path_factory):
    yield from cirbench_home(tmp_path_factory)


def quick_run(suite: str) -> SuiteRun:
    return SuiteRun(load_suite(suite), get_profile(QUICK), methods_override=ONLY)


# ----------------------------------------------------------------------------- suites


def test_every_suite_resolves_to_valid_specs():
    assert set(list_suites()) >= {
        "table2_fashioniq",
        "table3_cirr",
        "ablation_spn",
        "bank_size",
        "positives_count",
        "zero_shot",
        "positives_control",
        "negatives_tau",
        "negatives_lr",
        "positives_noise",
        "positives_window",
        "bank_size_tuned_lr",
    }
    for name in list_suites():
        run = SuiteRun(load_suite(name), get_profile(QUICK))
        for point in run.points():
            spec = run.spec(point)
            assert spec.spn.composition.name == point.composition
            data = spec.model_dump()
            for key, value in point.extra:  # every axis value lands in the spec
                *parents, leaf = key.split(".")
                for part in parents:
                    data = data[part]
                assert data[leaf] == value, (name, key)


def test_compositions_share_stage1_and_suites_share_points():
    ablation = quick_run("ablation_spn")
    table2 = quick_run("table2_fashioniq")
    specs = {p.composition: ablation.spec(p) for p in ablation.points() if p.dataset == "fashioniq"}
    stage1 = {s.stage1_spec().digest() for s in specs.values()}
    assert len(stage1) == 1 and specs["none"].digest() in stage1
    # the profile's stage-2 overrides did not switch N on where the composition has none
    assert specs["none"].spn.negatives is None and specs["P"].spn.negatives is None
    assert specs["N"].spn.negatives.batch_size == 64
    shared = {table2.spec(p).digest() for p in table2.points()}
    assert shared == {specs["none"].digest(), specs["P+N"].digest()}


def test_suite_errors_name_the_file_and_field(tmp_path):
    from bench.config import SpecError

    bad = tmp_path / "bad.yaml"
    bad.write_text("suite: bad\ntitle: t\ndatasets: [fashioniq]\ncompositions: [Q]\n")
    with pytest.raises(SpecError, match=r"bad.yaml: compositions: .*unknown compositions \['Q'\]"):
        load_suite(str(bad))
    with pytest.raises(SpecError, match="suite file not found"):
        load_suite(str(tmp_path / "absent.yaml"))
    with pytest.raises(UnknownNameError, match=r"unknown suite 'ablation_spm' \(did you mean"):
        load_suite("ablation_spm")


def test_suite_overrides_reach_only_the_modifier_they_name():
    tuned, plain = quick_run("bank_size_tuned_lr"), quick_run("bank_size")
    n_point = Point("clip4cir", "fashioniq", "N", 0)
    assert tuned.spec(n_point).spn.negatives.lr == 5.0e-4
    # the method's synthetic recipe (experiments/methods/clip4cir.yaml) now has the same
    # bank-stage lr as the tuned study (the real recipe's 2e-5: tests/test_recipe.py)
    assert plain.spec(n_point).spn.negatives.lr == 5.0e-4
    # the stage-1 point of the tuned study is the plain study's: one stage 1 for both
    none = Point("clip4cir", "fashioniq", "none", 0)
    assert tuned.spec(none).spn.negatives is None
    assert tuned.spec(none).digest() == plain.spec(none).digest()


def test_unknown_suite_name_fails_before_anything_runs(tmp_path, monkeypatch):
    from bench.runner.ablate import ablate

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CIRBENCH_HOME", str(tmp_path))
    with pytest.raises(UnknownNameError, match=r"unknown suite 'no_such_suite'.*diagnostics"):
        ablate(profile=QUICK, suites=("ablation_spn", "no_such_suite"), out=tmp_path / "r")
    assert list(tmp_path.iterdir()) == []  # no data, no runs, no MLflow store


# ----------------------------------------------------------------------------- grids


def _finished(run: SuiteRun) -> dict[str, float]:
    """digest -> mtime of result.json, for the points that finished."""
    out = {}
    for point in run.points():
        spec = run.spec(point)
        result = run_dir_for(spec) / "result.json"
        if result.is_file():
            out[spec.digest()] = result.stat().st_mtime
    return out


def test_interrupted_sweep_resumes_without_rerunning_or_duplicating(home):
    run = quick_run("table2_fashioniq")
    none_spec = run.spec(Point("clip4cir", "fashioniq", "none", 0))
    command = [
        sys.executable,
        "-m",
        "bench.cli",
        "sweep",
        "table2_fashioniq",
        "--profile",
        QUICK,
        "--methods",
        "clip4cir",
        "--quiet",
    ]
    process = subprocess.Popen(command, env=os.environ.copy(), cwd=home)
    deadline = time.time() + 600
    while TrainResult.load(run_dir_for(none_spec)) is None:  # stage 1 finished
        assert process.poll() is None, "the sweep ended before it could be interrupted"
        assert time.time() < deadline
        time.sleep(0.5)
    process.send_signal(signal.SIGKILL)  # a crash: no clean-up at all
    process.wait()
    before = _finished(run)
    assert none_spec.digest() in before and len(before) < len(run.points())

    result = sweep("table2_fashioniq", profile=QUICK, methods=ONLY, progress=False)
    after = _finished(run)
    assert len(after) == len(run.points())
    for digest, mtime in before.items():  # finished points were not run again
        assert after[digest] == mtime
    assert result.trained == len(run.points()) - len(before)
    # exactly one MLflow run per spec digest, all finished, nested under one suite run
    runs = find_runs(run.experiment, "tags.`cirbench.kind` = 'train'")
    digests = [r.data.tags["cirbench.spec_digest"] for r in runs]
    assert len(digests) == len(set(digests))
    wanted = {run.spec(p).digest() for p in run.points()}
    mine = [r for r in runs if r.data.tags["cirbench.spec_digest"] in wanted]
    assert {r.info.status for r in mine} == {"FINISHED"}
    parents = find_runs(run.experiment, "tags.`cirbench.kind` = 'suite'")
    assert len(parents) == 1
    assert {r.data.tags["mlflow.parentRunId"] for r in mine} == {parents[0].info.run_id}

    again = sweep("table2_fashioniq", profile=QUICK, methods=ONLY, progress=False)
    assert again.trained == 0 and all(o.reused for o in again.outcomes)
    assert len(find_runs(run.experiment, "tags.`cirbench.kind` = 'train'")) == len(runs)
    assert len(find_runs(run.experiment, "tags.`cirbench.kind` = 'suite'")) == 1


def test_report_tables_equal_the_tracked_metrics(tmp_path):
    run = quick_run("table2_fashioniq")
    report = build_report("table2_fashioniq", profile=QUICK, methods=ONLY, out=tmp_path)
    assert report.missing == []
    folder = tmp_path / "table2_fashioniq"
    table, published = report.tables  # one method: no methods table; synthetic: published gain
    assert published.name == f"{table.name}_published_gain"
    with (folder / f"{table.name}.csv").open() as handle:
        rows = {row["spn"]: row for row in csv.DictReader(handle)}
    tracked = tracked_runs_by_digest(run.experiment)
    for point in run.points():
        metrics = tracked[run.spec(point).digest()].data.metrics
        row = rows[point.composition]
        for column in ("dress_R@10", "dress_R@50", "Rmean"):
            key = "final." + column.replace("@", "_at_")
            assert float(row[f"{column} mean"]) == pytest.approx(metrics[key])
    markdown = (folder / f"{table.name}.md").read_text()
    assert "synthetic benchmark" in markdown and "CLIP4CIR" in markdown and "gain" in markdown
    # the gain's paired interval, the val size and the resolvable difference under the table
    gain = rows["P+N"]
    assert float(gain["gain Rmean ci_low"]) <= float(gain["gain Rmean ci_high"])
    assert "Val size: dress 100 queries" in markdown and "Smallest resolvable" in markdown
    below = "differences shown are below it" in markdown
    assert bool(report.warnings) == below  # the quick profile warns when it cannot resolve
    verdict = (folder / f"{published.name}.md").read_text()
    assert "only comparison the synthetic benchmark supports" in verdict
    assert any(v in verdict for v in ("same sign", "opposite", "not resolved"))
    assert "\\begin{tabular}" in (folder / f"{table.name}.tex").read_text()
    assert (tmp_path / "index.md").read_text().count("table2_fashioniq") >= 1
    assert not list(tmp_path.glob(".*tmp*"))  # no staging folder left behind


def test_report_without_runs_says_what_to_do(tmp_path):
    from bench.report import ReportError

    with pytest.raises(ReportError, match="cirbench sweep zero_shot"):
        build_report("zero_shot", profile=QUICK, methods=ONLY, out=tmp_path)
    assert not (tmp_path / "zero_shot").exists()


def test_grid_plot_exists_and_is_not_empty(tmp_path):
    sweep("ablation_spn", profile=QUICK, methods=ONLY, progress=False, seeds=(0,))
    report = build_report("ablation_spn", profile=QUICK, methods=ONLY, out=tmp_path)
    assert {"ablation_spn_bars.png", "ablation_spn_bars.svg"} <= set(report.plots)
    for plot in report.plots:
        assert (tmp_path / "ablation_spn" / plot).stat().st_size > 5000
    text = (tmp_path / "ablation_spn" / "ablation_spn_fashioniq.md").read_text()
    for composition in ("none", "P", "N", "P+N"):
        assert f"| CLIP4CIR | {composition} |" in text
    # stage 1 beside the single-modality attribute rankers, on CLIP4CIR's protocol
    folder = tmp_path / "ablation_spn"
    rows = list(csv.DictReader(io.StringIO((folder / "ablation_spn_fashioniq.csv").read_text())))
    none = next(r for r in rows if r["method"] == "clip4cir" and r["composition"] == "none")
    text = (folder / "ablation_spn_fashioniq_baselines.csv").read_text()
    line = next(r for r in csv.DictReader(io.StringIO(text)) if r["method"] == "clip4cir")
    assert float(line["stage1 Rmean"]) == pytest.approx(float(none["Rmean mean"]))
    margin = float(line["stage1 Rmean"]) - max(
        float(line["image_only Rmean"]), float(line["text_only Rmean"])
    )
    assert float(line["margin"]) == pytest.approx(margin)
    assert line["beats_both"] == str(margin > 0)
    # the margin's interval pairs the run with the ranker on the same queries
    assert float(line["margin ci_low"]) <= margin <= float(line["margin ci_high"])
    assert line["stronger"] in ("image_only", "text_only")
    assert line["protocol"] == "drop_reference"  # SPN's clip4cir/validate.py drops it


# ----------------------------------------------------------------------------- studies


def test_two_workers_complete_exactly_the_requested_trials(tmp_path):
    storage = str(tmp_path / "study.log")
    sweep("bank_size", profile=QUICK, workers=2, storage=storage, n_trials=3, progress=False)
    study = optuna.load_study(
        study_name="bank_size-quick",
        storage=_open(storage),
    )
    assert len(study.trials) == 3
    assert {t.state.name for t in study.trials} <= {"COMPLETE", "PRUNED"}
    bank = study.user_attrs["bank_size"]
    assert study.trials[0].params["spn.negatives.neg_num"] == bank - 1  # the whole bank first
    # rerun with the same budget: nothing new; a larger budget adds exactly the difference
    sweep("bank_size", profile=QUICK, workers=2, storage=storage, n_trials=3, progress=False)
    assert len(_load(storage).trials) == 3
    sweep("bank_size", profile=QUICK, workers=2, storage=storage, n_trials=4, progress=False)
    assert len(_load(storage).trials) == 4
    # every trial points at one finished MLflow run per seed (nested, tagged with the
    # trial that created it; a trial that repeats a value reuses the earlier run)
    run = SuiteRun(load_suite("bank_size"), get_profile(QUICK))
    runs = {
        r.info.run_id: r for r in find_runs(run.experiment, "tags.`cirbench.suite` = 'bank_size'")
    }
    for trial in _load(storage).trials:
        ids = trial.user_attrs.get("mlflow_run_ids", [])
        if trial.state.name == "COMPLETE":
            assert len(ids) == len(run.seeds)
            assert all(runs[i].info.status == "FINISHED" for i in ids)
    tagged = {
        int(r.data.tags["cirbench.trial"]) for r in runs.values() if "cirbench.trial" in r.data.tags
    }
    assert 0 in tagged and tagged <= {0, 1, 2, 3}
    report = build_report("bank_size", profile=QUICK, storage=storage, out=tmp_path / "reports")
    assert "bank_size_recall_vs_bank.png" in report.plots
    assert "bank_size_optuna_history.png" in report.plots
    assert "(whole bank)" in (tmp_path / "reports" / "bank_size" / "bank_size.md").read_text()


def _open(storage: str):
    return open_storage(storage_url(storage))


def _load(storage: str):
    return optuna.load_study(study_name="bank_size-quick", storage=_open(storage))


# ----------------------------------------------------------------------------- PostgreSQL


def _postgres_bin() -> Path | None:
    for candidate in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (candidate / "initdb").is_file():
            return candidate
    found = shutil.which("initdb")
    return Path(found).parent if found else None


@pytest.fixture(scope="module")
def postgres_url():
    """A throw-away PostgreSQL server on 127.0.0.1 (skipped, with the reason, when the
    server binaries are not installed; `.ci/run` installs them)."""
    binaries = _postgres_bin()
    if binaries is None:
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) not installed")
    pytest.importorskip("psycopg", reason="psycopg (the [postgres] extra) not installed")
    # not under pytest's tmp folder: its parents are private to this user
    folder = Path(tempfile.mkdtemp(prefix="cirbench-pg-"))
    data = folder / "data"
    run_as: list[str] = []
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root
        run_as = ["runuser", "-u", "postgres", "--"]
        shutil.chown(folder, "postgres")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    subprocess.run(
        [*run_as, str(binaries / "initdb"), "-D", str(data), "-U", "cirbench", "--auth=trust"],
        check=True,
        capture_output=True,
    )
    options = f"-c listen_addresses=127.0.0.1 -p {port} -k {folder}"
    log = folder / "server.log"  # the server must not hold our pipes open
    pg_ctl = [*run_as, str(binaries / "pg_ctl"), "-D", str(data)]
    subprocess.run(
        [*pg_ctl, "-o", options, "-l", str(log), "-w", "start"],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        subprocess.run(
            [
                *run_as,
                str(binaries / "createdb"),
                "-h",
                "127.0.0.1",
                "-p",
                str(port),
                "-U",
                "cirbench",
                "optuna",
            ],
            check=True,
            capture_output=True,
        )
        yield f"postgresql://cirbench@127.0.0.1:{port}/optuna"
    finally:
        subprocess.run(
            [*run_as, str(binaries / "pg_ctl"), "-D", str(data), "-m", "fast", "stop"],
            capture_output=True,
        )
        shutil.rmtree(folder, ignore_errors=True)


def test_postgresql_storage_shared_by_two_workers(postgres_url):
    sweep("bank_size", profile=QUICK, workers=2, storage=postgres_url, n_trials=3, progress=False)
    study = optuna.load_study(study_name="bank_size-quick", storage=postgres_url)
    assert len(study.trials) == 3
    assert {t.state.name for t in study.trials} <= {"COMPLETE", "PRUNED"}


# ----------------------------------------------------------------------------- ablate


@pytest.fixture(scope="module")
def quick_ablate(home, tmp_path_factory):
    """`nox -s ablate -- --quick` in CI, once per module: every suite swept and reported
    (CLIP4CIR; the other methods' compositions are covered by tests/test_spn.py)."""
    from bench.runner.ablate import ablate

    tmp = tmp_path_factory.mktemp("ablate")
    out = tmp / "reports"
    seconds = ablate(profile=QUICK, methods=ONLY, storage=str(tmp / "j.log"), out=out)
    return out, seconds, str(tmp / "j.log")


def test_quick_ablate_writes_every_suite_report(quick_ablate):
    from bench.runner.ablate import ABLATE_SUITES

    out, seconds, _ = quick_ablate
    assert set(seconds) == {*ABLATE_SUITES, "total"}
    index = (out / "index.md").read_text()
    for suite in ABLATE_SUITES:
        assert f"[{suite}]({suite}/index.md)" in index
        tables = list((out / suite).glob("*.md"))
        assert len(tables) >= 2  # index.md and at least one table
        for table in tables:
            if table.name != "index.md":
                rows = [line for line in table.read_text().splitlines() if line.startswith("| ")]
                assert len(rows) >= 2, f"{table}: no data rows"  # header + data
    k_table = (out / "positives_count" / "positives_count_fashioniq.md").read_text()
    assert all(f"| {k} |" in k_table for k in (100, 300, 1000, 3000))
    zs_table = (out / "zero_shot" / "zero_shot_cirr.md").read_text()
    assert "| ZS+N |" in zs_table and "| ZS-ood+N |" in zs_table
    header = next(line for line in zs_table.splitlines() if line.startswith("| method"))
    # no "none" row to subtract: the gain is the out-of-domain pool's against ZS+N
    assert "ΔRmean vs ZS+N [95% CI]" in header
    for plot in ("positives_count/positives_count_K.png", "zero_shot/zero_shot_bars.png"):
        assert (out / plot).stat().st_size > 5000
    # Table 3's points wrote their CIRR test1 files (both server metrics), listed in the report
    files = sorted((out / "table3_cirr" / "submissions").glob("*/test1/*.json"))
    folders = {f.parent.parent.name for f in files}
    assert {f.split("_")[1] for f in folders} == {"cirr"} and len(folders) >= 2
    assert len(files) == 2 * len(folders)
    assert all(json.loads(f.read_text())["version"] == "rc2" for f in files)
    assert "Test-server submissions (test1)" in (out / "table3_cirr" / "index.md").read_text()


def test_quick_ablate_publishes_every_report_and_names_runs_in_mlflow(quick_ablate, tmp_path):
    """Through the MLflow client: each suite's parent run holds its report (tables as MLflow
    tables and CSV, plots, index.md, the runs table), every run of the suite (shared ones
    included) carries composition / method / dataset / swept value as params, and run
    names are unique within a suite and carry the swept value."""
    from bench.runner.ablate import ABLATE_SUITES
    from bench.runner.parents import find_parent_run
    from bench.runner.publish import suite_filter, view_key
    from bench.tracking import client, default_tracking_uri
    from bench.tracking.store import (
        DESCRIPTION_TAG,
        EXPERIMENT_KIND,
        EXPERIMENT_KIND_TAG,
        SHARED_VIEW_TAG,
    )

    out, _, storage = quick_ablate
    store = client(default_tracking_uri())
    experiment = store.get_experiment_by_name(quick_run("ablation_spn").experiment)
    assert experiment.tags[EXPERIMENT_KIND_TAG] == EXPERIMENT_KIND
    assert "suite:<name>" in experiment.tags[DESCRIPTION_TAG]
    swept = {"positives_count": "K", "bank_size": "neg_num"}
    for suite in ABLATE_SUITES:
        run = quick_run(suite)
        run.storage = storage
        parent = find_parent_run(run)
        files = {f.path for f in store.list_artifacts(parent, "report")}
        local = {p.name for p in (out / suite).iterdir() if p.is_file()}
        tables = {n[:-4] for n in local if n.endswith(".csv")}
        assert tables, suite
        for name in tables:
            assert {f"report/{name}.json", f"report/{name}.csv"} <= files, (suite, files)
        assert {f"report/{n}" for n in local if n.endswith((".png", ".svg"))} <= files
        assert {"report/index.md", "report/runs.json"} <= files
        assert suite in store.get_run(parent).data.tags[DESCRIPTION_TAG]
        view = json.loads(experiment_tags(store, experiment)[SHARED_VIEW_TAG + view_key(suite)])
        assert "metrics.`final.Rmean`" in view["selectedColumns"]
        runs = find_runs(run.experiment, suite_filter(suite))
        assert runs, suite
        names = [r.info.run_name for r in runs]
        assert len(names) == len(set(names)), (suite, names)
        for tracked in runs:
            params = tracked.data.params
            assert {"composition", "method", "dataset"} <= set(params), tracked.info.run_name
            if suite in swept and params["composition"] != "none":  # not the study's stage 1
                key = swept[suite]
                assert f"{key}={params[key]}" in tracked.info.run_name
    # optuna-dashboard: the objective is named, each trial links its MLflow run(s)
    study = optuna.load_study(study_name="bank_size-quick", storage=_open(storage))
    assert study.metric_names == ["Rmean"]
    done = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert done and all(
        t.user_attrs["mlflow_seed0"].startswith("http://127.0.0.1:5000/#/experiments/")
        for t in done
    )
    # a report published again replaces its tables (MLflow's log_table would append)
    from bench.runner.ablate import report

    again = report("table2_fashioniq", profile=QUICK, methods=ONLY, out=out)
    parent = find_parent_run(quick_run("table2_fashioniq"))
    table = store.download_artifacts(parent, "report/table2_fashioniq.json", str(tmp_path))
    assert len(json.loads(Path(table).read_text())["data"]) == len(again.tables[0].rows)
    # Table 2's points are ablation_spn's runs: listed under both suites
    shared = find_runs(run.experiment, suite_filter("table2_fashioniq"))
    assert all(r.data.tags.get("cirbench.in_suite.ablation_spn") == "true" for r in shared)


def experiment_tags(store, experiment):
    return store.get_experiment(experiment.experiment_id).tags


def test_suite_groups_expand_in_order_without_repeats():
    from bench.runner.ablate import ABLATE_SUITES, DIAGNOSTIC_SUITES, expand_suite_names

    assert expand_suite_names(["paper"]) == ABLATE_SUITES
    both = expand_suite_names(["ablation_spn", "diagnostics", "paper"])
    assert both[: 1 + len(DIAGNOSTIC_SUITES)] == ("ablation_spn", *DIAGNOSTIC_SUITES)
    assert len(both) == len(set(both)) == len(ABLATE_SUITES) + len(DIAGNOSTIC_SUITES)
    assert set(DIAGNOSTIC_SUITES) <= set(list_suites())


def test_mlflow_ui_in_a_real_browser_shows_runs_reports_and_the_compositions_view(
    quick_ablate, tmp_path
):
    """Headless Chromium on the MLflow UI as `nox -s ui` starts it, after the quick ablate:
    the experiment link opens on its runs (not MLflow 3's GenAI overview), a suite's parent
    run shows its table and plot artifacts, and the saved compositions view puts
    composition and final.Rmean side by side. Screenshots: test-artifacts/mlflow-ui/."""
    from bench.runner.parents import find_parent_run
    from bench.runner.publish import view_key
    from bench.tracking import client, default_tracking_uri
    from bench.tracking.store import experiment_url, run_url
    from tests.browser import browser_page, close_assistant, mlflow_ui, require_browser
    from tests.browser import screenshot as shot

    executable = require_browser()
    run = quick_run("ablation_spn")
    experiment = client(default_tracking_uri()).get_experiment_by_name(run.experiment).experiment_id
    parent = find_parent_run(run)
    with (
        mlflow_ui(default_tracking_uri(), tmp_path / "ui.log") as base,
        browser_page(executable) as page,
    ):
        local = experiment_url(experiment).replace("http://127.0.0.1:5000", base)
        page.goto(local)
        page.get_by_text("suite:ablation_spn").first.wait_for()
        assert "overview" not in page.url and "genai" not in page.url, page.url
        close_assistant(page)
        shot(page, "experiment_runs")

        page.goto(run_url(experiment, parent).replace("http://127.0.0.1:5000", base))
        page.get_by_text("Artifacts", exact=True).first.click()
        page.get_by_text("report", exact=True).first.click()
        page.get_by_text("ablation_spn_fashioniq.json").first.click()
        page.get_by_text("View as table").first.wait_for()  # an MLflow table
        page.get_by_role("cell", name="P+N").first.wait_for()
        shot(page, "parent_report_table")
        page.get_by_text("ablation_spn_bars.png").first.click()
        plot = page.locator("img[src^='blob:']").first  # the artifact viewer's image
        plot.wait_for()
        page.wait_for_function(
            "img => img.complete && img.naturalWidth > 300", arg=plot.element_handle()
        )
        shot(page, "parent_report_plot")

        view = experiment_url(experiment, view_key("ablation_spn"))
        page.goto(view.replace("http://127.0.0.1:5000", base))
        page.get_by_text("You're viewing a shared view").first.wait_for()
        for column in ("composition", "method", "final.Rmean"):
            page.get_by_text(column, exact=True).first.wait_for()
        for composition in ("none", "P", "N", "P+N"):
            page.get_by_text(composition, exact=True).first.wait_for()
        shot(page, "compositions_view")


def test_shared_backbones_are_each_pretrained_once_longest_first():
    """`cirbench ablate` pre-trains the synthetic backbones side by side before the grid's
    workers start: each once (CLIP4CIR and TG-CIR share the synthetic CLIP, which is also
    every method's positives matching backbone), the slowest first; the quick profile of
    random weights pre-trains nothing."""
    from bench.runner.grid import shared_backbones, unfinished

    run = SuiteRun.open("ablation_spn", "default")
    jobs = shared_backbones(run, unfinished(run, run.points()))
    assert [j["arch"] for j in jobs] == ["hf-blip2:tiny", "cirbench-tiny", "hf-blip:tiny"]
    assert {(j["synthetic_size"], j["synthetic_seed"]) for j in jobs} == {("compact", 0)}
    quick = SuiteRun.open("ablation_spn", QUICK)
    assert shared_backbones(quick, quick.points()) == []


def test_an_anchor_the_suite_gains_is_measured_on_the_next_run(tmp_path):
    """`bank_size` anchors both ends of the curve (the whole bank, 4 negatives): a study
    begun before the suite declared an anchor measures it on its next run, unpruned, even
    when the trial budget is already spent."""
    import yaml

    from bench.config.paths import SUITES_DIR

    data = yaml.safe_load((SUITES_DIR / "bank_size.yaml").read_text())
    assert data["study"]["enqueue"] == [4]
    without = {**data, "study": {k: v for k, v in data["study"].items() if k != "enqueue"}}
    path = tmp_path / "bank_size.yaml"
    path.write_text(yaml.safe_dump(without))
    storage = str(tmp_path / "study.log")
    sweep(str(path), profile=QUICK, storage=storage, n_trials=1, progress=False)
    assert [t.user_attrs.get("anchor") for t in _load(storage).trials] == [True]
    path.write_text(yaml.safe_dump(data))
    sweep(str(path), profile=QUICK, storage=storage, n_trials=1, progress=False)
    study = _load(storage)
    values = [t.params["spn.negatives.neg_num"] for t in study.trials]
    assert values == [study.user_attrs["bank_size"] - 1, 4]
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE"]
