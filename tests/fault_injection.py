"""Fault-injection harness: kill -9 ``cirbench train`` / ``cirbench sweep`` at recorded
progress points, resume, and check that nothing was lost or duplicated.

An uninterrupted reference run records the progress points it passes
(:mod:`bench.core.faults`: cache fills, training steps, files written but not yet renamed
into place, study trials, the report swap). A *chain* then runs the same command in
another home (sharing only the generated synthetic data) again and again, each process
killed with SIGKILL at a point drawn at random from the reference's record (the ``n``-th
time it reaches that point), until a process finishes. A process that finishes before its
kill point ends the chain; the next chain starts with the next seed (a fresh spec).

``python -m tests.fault_injection --kills 40`` runs a longer campaign than CI's
(``tests/test_fault_injection.py``); both print a summary line per chain.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
#: Exit status of a process killed by SIGKILL (as ``subprocess`` reports it).
KILLED = -9

TRAIN_SPEC = """\
name: fault{seed}
experiment: cirbench-faults
seed: {seed}
dataset: {{format: fashioniq, synthetic_size: tiny, categories: [dress], max_train_queries: 48}}
backbone: {{pretrained: random}}
train: {{epochs: 2, batch_size: 16, lr: 1.0e-4, phases: {{combiner: {{epochs: 1}}}}}}
eval: {{batch_size: 128}}
"""


def environment(home: Path, **extra: str) -> dict[str, str]:
    """The environment of a cirbench process with its own home and MLflow store."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CIRBENCH_FAULT")}
    env.update(
        CIRBENCH_HOME=str(home),
        MLFLOW_TRACKING_URI=f"sqlite:///{home}/mlflow.db",
        PYTHONPATH=str(REPO) + os.pathsep + env.get("PYTHONPATH", ""),
        OMP_NUM_THREADS="1",
        **extra,
    )
    return env


def cirbench(home: Path, args: list[str], timeout: float = 900, **extra: str) -> int:
    """Run ``cirbench ARGS`` (``python -m bench.cli``) in ``home``; its exit status.

    A traceback on stderr fails (every error must be a one-line ``cirbench: error``)."""
    proc = subprocess.run(
        [sys.executable, "-m", "bench.cli", *args],
        cwd=home,
        env=environment(home, **extra),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if proc.returncode not in (0, KILLED) or "Traceback" in proc.stderr:
        raise AssertionError(f"cirbench {args} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    return proc.returncode


def share_data(source: Path, home: Path) -> None:
    """``home`` with ``source``'s generated synthetic data (nothing else)."""
    home.mkdir(parents=True, exist_ok=True)
    if not (home / "data").exists():
        (home / "data").symlink_to(source / "data", target_is_directory=True)


def recorded(home: Path, args: list[str]) -> list[str]:
    """Run ``args`` uninterrupted, recording its progress points (in order)."""
    record = home / "points.log"
    record.unlink(missing_ok=True)
    assert cirbench(home, args, CIRBENCH_FAULT_RECORD=str(record)) == 0
    return record.read_text().split() if record.is_file() else []


def draw(points: list[str], rng: random.Random, skip: set[str] = frozenset()) -> str:
    """A kill point ``NAME:N``: a recorded point at random, ``N`` its occurrence there."""
    candidates = [p for p in points if p not in skip]
    position = rng.randrange(len(candidates))
    name = candidates[position]
    return f"{name}:{candidates[: position + 1].count(name)}"


@dataclass
class Campaign:
    """Kills delivered and what the checks saw."""

    kills: list[str] = field(default_factory=list)
    chains: int = 0
    missed: int = 0  #: processes that finished before reaching their kill point
    notes: list[str] = field(default_factory=list)


def mlflow_runs(home: Path, experiment: str) -> list[Any]:
    """Every run of ``experiment`` in ``home``'s store."""
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{home}/mlflow.db")
    found = client.get_experiment_by_name(experiment)
    return [] if found is None else client.search_runs([found.experiment_id], max_results=10000)


def check_bookkeeping(home: Path, experiment: str) -> Counter[str]:
    """No run RUNNING, at most one FINISHED run per spec digest; the status counts."""
    runs = mlflow_runs(home, experiment)
    running = [r.info.run_id for r in runs if r.info.status == "RUNNING"]
    assert not running, f"runs left RUNNING: {running}"
    finished = Counter(
        r.data.tags.get("cirbench.spec_digest")
        for r in runs
        if r.info.status == "FINISHED" and r.data.tags.get("cirbench.kind") == "train"
    )
    duplicates = {d: n for d, n in finished.items() if n > 1}
    assert not duplicates, f"spec digests with several FINISHED runs: {duplicates}"
    return Counter(r.info.status for r in runs)


def _result(home: Path, seed: int) -> dict[str, Any]:
    [folder] = [p for p in (home / "runs").iterdir() if p.name.startswith(f"fault{seed}-")]
    result = json.loads((folder / "result.json").read_text())
    return {"metrics": result["metrics"], "losses": [h["loss"] for h in result["history"]]}


def kill_chain(
    home: Path,
    args: list[str],
    points: list[str],
    kills: int,
    rng: random.Random,
    resumable: bool = True,
) -> tuple[list[str], bool]:
    """Run ``args`` in ``home`` killed ``kills`` times, then to the end; returns the
    points killed at (``NAME:N`` as the killed process reached them) and whether every
    kill landed (a process that finishes first ends the chain early).

    Each kill comes at the ``k``-th progress point of its process, ``k`` drawn from what
    the reference run (``points``) leaves after the earlier kills (a resume skips what
    was saved and redoes its interrupted epoch, so this is an estimate; a process that
    finishes first ends the chain). ``resumable``: the command takes ``--resume``
    (``cirbench train``; a sweep always resumes)."""
    done, landed = 0, []
    record = home / "kill-points.log"
    for _ in range(kills):
        remaining = max(2, len(points) - done)
        k = rng.randint(1, remaining - 1)
        record.unlink(missing_ok=True)
        status = cirbench(
            home,
            [*args, *(_resume(home, rng) if resumable else [])],
            CIRBENCH_FAULT_KILL=f"*:{k}",
            CIRBENCH_FAULT_RECORD=str(record),
        )
        if status == 0:
            return landed, False
        seen = record.read_text().split()
        landed.append(f"{seen[-1]}:{seen.count(seen[-1])}")
        done += k
    assert cirbench(home, [*args, *(_resume(home, rng) if resumable else [])]) == 0
    return landed, True


def _resume(home: Path, rng: random.Random) -> list[str]:
    """``--resume`` for ``cirbench train`` once a run folder holds a resume record (before
    that, a rerun without it is allowed, and tried half the time)."""
    started = (home / "runs").is_dir() and any((home / "runs").glob("*/last.pt"))
    return ["--resume"] if started or rng.random() < 0.5 else []


def train_campaign(
    reference_home: Path, kill_home: Path, kills: int, seed: int = 0, max_chains: int = 8
) -> Campaign:
    """Kill ``cirbench train`` ``kills`` times over chains of one tiny spec per seed."""
    rng = random.Random(seed)
    campaign = Campaign()
    for chain in range(max_chains):
        if len(campaign.kills) >= kills:
            break
        campaign.chains += 1
        name = f"fault-seed{chain}.yaml"
        text = TRAIN_SPEC.format(seed=chain)
        for home in (reference_home, kill_home):
            home.mkdir(parents=True, exist_ok=True)
            (home / name).write_text(text)
        points = recorded(reference_home, ["train", name, "--quiet"])
        reference = _result(reference_home, chain)
        share_data(reference_home, kill_home)
        wanted = kills - len(campaign.kills)
        landed, complete = kill_chain(kill_home, ["train", name, "--quiet"], points, wanted, rng)
        campaign.kills += [f"train:{p}" for p in landed]
        campaign.missed += not complete
        assert _result(kill_home, chain) == reference, f"chain {chain}: results differ"
        statuses = check_bookkeeping(kill_home, "cirbench-faults")
        campaign.notes.append(f"chain {chain}: {len(landed)} kills; runs {dict(statuses)}")
    leftovers = [p for p in kill_home.rglob("*.tmp") if p.is_file()]
    assert not leftovers, f"temporary files left: {leftovers}"
    return campaign


def sweep_campaign(
    reference_home: Path, kill_home: Path, kills: int, seed: int = 0, trials: int = 2
) -> Campaign:
    """Kill ``cirbench sweep bank_size --profile quick`` (then ``cirbench report``)
    ``kills`` times; the study's anchors, trial budget, runs and report must match an
    uninterrupted sweep's."""
    rng = random.Random(seed)
    campaign = Campaign(chains=1)
    sweep = ["sweep", "bank_size", "--profile", "quick", "--trials", str(trials), "--quiet"]
    report = ["report", "bank_size", "--profile", "quick"]
    points = recorded(reference_home, sweep)
    report_points = recorded(reference_home, report)
    share_data(reference_home, kill_home)
    landed, complete = kill_chain(kill_home, sweep, points, kills, rng, resumable=False)
    campaign.kills += [f"sweep:{p}" for p in landed]
    campaign.missed += not complete
    if not complete:
        assert cirbench(kill_home, sweep) == 0
    kill = draw(report_points, rng) if report_points else None
    if kill and cirbench(kill_home, report, CIRBENCH_FAULT_KILL=kill) != 0:
        campaign.kills.append(f"report:{kill}")
    assert cirbench(kill_home, report) == 0
    check_bookkeeping(kill_home, "cirbench-ablate-quick")
    campaign.notes.append(_same_study(reference_home, kill_home, trials))
    for table in sorted((reference_home / "reports" / "bank_size").glob("*.csv")):
        other = kill_home / "reports" / "bank_size" / table.name
        assert _rows(other) == _rows(table), f"report table {table.name} differs"
    return campaign


def _rows(table: Path) -> list[dict[str, str]]:
    """A report table's rows without the Optuna trial number, in a canonical order (a
    killed trial keeps its number as FAIL and the redone one gets the next, so with two
    anchors a killed first one is listed after the second)."""
    import csv
    import json

    with table.open(newline="") as handle:
        rows = [{k: v for k, v in row.items() if k != "trial"} for row in csv.DictReader(handle)]
    return sorted(rows, key=lambda row: json.dumps(row, sort_keys=True))


def _same_study(reference_home: Path, kill_home: Path, trials: int) -> str:
    """The killed study holds the reference's values and objectives, its anchors complete."""
    import optuna

    def values(home: Path) -> tuple[list[tuple[int, float]], Counter[str], list[int]]:
        storage = optuna.storages.JournalStorage(
            optuna.storages.journal.JournalFileBackend(str(home / "optuna" / "journal.log"))
        )
        study = optuna.load_study(study_name="bank_size-quick", storage=storage)
        done = sorted(
            (t.params["spn.negatives.neg_num"], round(t.value, 6))
            for t in study.trials
            if t.state.name == "COMPLETE"
        )
        return done, Counter(t.state.name for t in study.trials), study.user_attrs["anchors"]

    reference, _, anchors = values(reference_home)
    killed, states, _ = values(kill_home)
    assert killed == reference, f"study values differ: {killed} vs {reference}"
    assert states["COMPLETE"] + states["PRUNED"] == trials and not states["RUNNING"]
    assert all(a in {v for v, _ in killed} for a in anchors), "an anchor is missing"
    return f"study: {dict(states)}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=8, help="train kills (sweep: a third)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dir", type=Path, default=Path("fault-injection"))
    args = parser.parse_args()
    shutil.rmtree(args.dir, ignore_errors=True)
    ref, kill = args.dir / "reference", args.dir / "killed"
    train = train_campaign(ref, kill / "train", args.kills, args.seed)
    sweep = sweep_campaign(ref, kill / "sweep", max(1, args.kills // 3), args.seed)
    for name, c in (("train", train), ("sweep", sweep)):
        print(f"{name}: {len(c.kills)} kills, {c.chains} chains, {c.missed} finished early")
        print("  " + "\n  ".join(c.kills + c.notes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
