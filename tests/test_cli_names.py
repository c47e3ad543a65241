"""The suite commands check every name they are given before any work: a mistyped suite,
method, profile, format or backbone is a "did you mean" error with exit code 2, and leaves
no data, no run folder and no MLflow run behind; hints keep the user's flags; every
command's ``--help`` says what it does (and the suite commands what each profile costs)."""

from __future__ import annotations

import pytest

from bench.cli import build_parser, main

CASES = [
    (
        ["sweep", "ablation_spnn", "--profile", "quick"],
        "unknown suite 'ablation_spnn' (did you mean 'ablation_spn'?)",
    ),
    (
        ["sweep", "ablation_spn", "--profile", "quick", "--methods", "clip4cirr"],
        "unknown method 'clip4cirr' (did you mean 'clip4cir'",
    ),
    (
        ["sweep", "ablation_spn", "--profile", "quik"],
        "unknown profile 'quik' (did you mean 'quick'?)",
    ),
    (
        ["ablate", "--profile", "quick", "--suites", "ablation_spn", "papr"],
        "unknown suite 'papr' (did you mean 'paper'?)",
    ),
    (
        ["ablate", "--profile", "quick", "--methods", "clip4cir", "tgcirr"],
        "unknown method 'tgcirr' (did you mean 'tgcir'?)",
    ),
    (
        ["sweep", "table2_fashioniq", "--profile", "quick", "--data-root", "fashionik=/nowhere"],
        "unknown format 'fashionik' (did you mean 'fashioniq'?)",
    ),
    (
        ["sweep", "table2_fashioniq", "--profile", "quick", "--set", "method.name=clip4cirr"],
        "unknown method 'clip4cirr' (did you mean 'clip4cir'",
    ),
    (
        ["sweep", "table2_fashioniq", "--profile", "quick", "--set", "backbone.arch=RN5O"],
        "unknown backbone 'RN5O' (did you mean 'RN50'",
    ),
]


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CIRBENCH_HOME", str(tmp_path))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    return tmp_path


@pytest.mark.parametrize(
    ("argv", "message"), CASES, ids=[c[1].split("(")[0].strip() for c in CASES]
)
def test_a_mistyped_name_fails_before_any_work_and_leaves_the_store_alone(
    workdir, capsys, argv, message
):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("cirbench: error: ") and message in err, err
    # no synthetic data, no run folder, no MLflow store (so no FAILED parent run)
    assert sorted(p.name for p in workdir.iterdir()) == []


def test_the_report_hint_keeps_the_users_flags(workdir, capsys):
    from bench.tracking import find_runs

    argv = ["report", "zero_shot", "--profile", "quick", "--methods", "clip4cir", "--seeds", "3"]
    assert main([*argv, "--out", str(workdir / "reports")]) == 2
    err = capsys.readouterr().err
    assert (
        "run `cirbench sweep zero_shot --profile quick --methods clip4cir --seeds 3` first" in err
    )
    assert find_runs("cirbench-ablate-quick") == []  # reading it made no run


def test_every_command_help_says_what_it_does_and_the_suite_commands_what_profiles_cost():
    parser = build_parser()
    [commands] = [a for a in parser._actions if a.dest == "command"]
    for name, command in commands.choices.items():
        assert command.description and len(command.description) > 10, name
    for name in ("sweep", "report", "ablate"):
        text = commands.choices[name].format_help()
        assert "profiles (--profile):" in text, name
        for profile in ("quick", "default", "small", "full"):
            assert f"\n  {profile} " in text, (name, profile)
        assert "min" in text or "hour" in text, name  # what each profile costs
