"""Per-query values and the paired bootstrap: known answers, determinism, strata, exact
reproduction of the official metrics, the per-query file, and ``cirbench compare`` on two
tiny tracked runs."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bench.formats import EvalOptions, get_format
from bench.formats.records import CIRSplit, Query
from bench.metrics import (
    QueryValues,
    circo_metrics,
    circo_metrics_from_features,
    circo_query_values,
    cirr_metrics,
    cirr_metrics_from_features,
    fashioniq_average,
    fashioniq_metrics,
    fashioniq_metrics_from_features,
)
from bench.metrics.reference import cirr_metrics_naive, fashioniq_metrics_naive
from bench.stats import PerQueryError, RunQueryValues, paired_bootstrap
from tests.conftest import cirbench_home

N = 200


def cirr_run(r5: np.ndarray, rs1: np.ndarray | None = None, ids: list[str] | None = None):
    """A CIRR run whose queries hit R@5 (and Rsubset@1) as given; the other recalls follow."""
    n = len(r5)
    rs1 = r5 if rs1 is None else rs1
    values = {
        "R@1": r5.copy(),
        "R@5": r5,
        "R@10": r5.copy(),
        "R@50": r5.copy(),
        "Rsubset@1": rs1,
        "Rsubset@2": rs1.copy(),
        "Rsubset@3": rs1.copy(),
    }
    ids = ids or [str(i) for i in range(n)]
    return RunQueryValues(
        "cirr", "hard_targets", {"hard_targets": {None: QueryValues.of(ids, values)}}
    )


def hits(rate: float, seed: int, n: int = N) -> np.ndarray:
    return np.random.default_rng(seed).random(n) < rate


# ----------------------------------------------------------------------------- known answers


def test_identical_runs_give_a_zero_width_interval_containing_zero():
    run = cirr_run(hits(0.4, 1), hits(0.6, 2))
    result = paired_bootstrap([(run, run)], "Rmean")
    assert result.difference == 0.0
    assert result.low == result.high == 0.0 and not result.excludes_zero
    assert result.text() == "+0.00 [+0.00, +0.00]"
    assert result.resamples >= 1000 and result.queries == {None: N}


def test_a_run_hitting_every_query_the_other_misses_is_resolved():
    base = hits(0.4, 3)
    everything = cirr_run(np.ones(N, dtype=bool))
    result = paired_bootstrap([(everything, cirr_run(base))], "R@5")
    assert result.difference == pytest.approx(100.0 - 100.0 * base.mean())
    assert result.excludes_zero and result.low > 0
    # the complement of a 30% run (hits exactly the queries it misses) at 70%
    weak = hits(0.3, 4)
    flipped = paired_bootstrap([(cirr_run(~weak), cirr_run(weak))], "Rmean")
    assert flipped.excludes_zero and flipped.difference > 0
    assert "*" in flipped.text()


def test_one_flipped_query_is_not_resolved_and_the_resolvable_difference_is_binomial():
    base = hits(0.5, 5)
    one = base.copy()
    one[np.flatnonzero(~base)[0]] = True
    result = paired_bootstrap([(cirr_run(one), cirr_run(base))], "R@5")
    assert result.difference == pytest.approx(100.0 / N)
    assert result.low <= 0 <= result.high and not result.excludes_zero
    # 1.96 x sqrt(2 p (1 - p) / n) in points, for two runs at p ~ 0.5
    p = base.mean()
    assert result.resolvable == pytest.approx(1.96 * np.sqrt(2 * p * (1 - p) / N) * 100, rel=0.1)


def test_seeded_and_deterministic():
    a, b = cirr_run(hits(0.5, 6)), cirr_run(hits(0.45, 7))
    first = paired_bootstrap([(a, b)], "Rmean", seed=3)
    assert paired_bootstrap([(a, b)], "Rmean", seed=3) == first
    other = paired_bootstrap([(a, b)], "Rmean", seed=4)
    assert (other.low, other.high) != (first.low, first.high)
    assert other.difference == first.difference


def test_resampling_is_stratified_by_seed():
    """Seed 0: identical arms; seed 1: A hits everything, B nothing. Within each seed the
    draw keeps the seed's size, so every resample's difference is exactly (0 + 100) / 2;
    pooling the seeds' queries would make it vary."""
    same = cirr_run(hits(0.5, 8))
    all_hits, no_hits = cirr_run(np.ones(N, dtype=bool)), cirr_run(np.zeros(N, dtype=bool))
    result = paired_bootstrap([(same, same), (all_hits, no_hits)], "R@5")
    assert result.difference == 50.0 and result.low == result.high == 50.0
    assert result.seeds == 2 and result.draw == "shared"
    # seeds on different queries: each seed draws its own, still within the seed
    shifted = [str(i + N) for i in range(N)]
    other = (
        cirr_run(np.ones(N, dtype=bool), ids=shifted),
        cirr_run(np.zeros(N, dtype=bool), ids=shifted),
    )
    result = paired_bootstrap([(same, same), other], "R@5")
    assert result.draw == "per-seed" and result.low == result.high == 50.0


def test_runs_on_different_queries_are_refused_by_name():
    a = cirr_run(hits(0.5, 9))
    b = cirr_run(hits(0.5, 9), ids=[f"q{i}" for i in range(N)])
    with pytest.raises(PerQueryError, match="not on the same queries"):
        paired_bootstrap([(a, b)], "Rmean")
    with pytest.raises(PerQueryError, match="not a CIRR metric"):
        paired_bootstrap([(a, a)], "mAP@10")
    # the same ids standing for other queries (another synthetic seed): refused too
    from dataclasses import replace

    seed0, seed1 = replace(a, digests={None: "d0"}), replace(a, digests={None: "d1"})
    with pytest.raises(PerQueryError, match="stand for different queries"):
        paired_bootstrap([(seed0, seed1)], "Rmean")
    assert paired_bootstrap([(seed0, seed0)], "Rmean").high == 0.0
    # the same queries in another order are paired by id
    order = np.random.default_rng(0).permutation(N)
    base = hits(0.5, 10)
    shuffled = cirr_run(base[order], ids=[str(i) for i in order])
    assert paired_bootstrap([(cirr_run(base), shuffled)], "Rmean").high == 0.0


def test_fashioniq_rmean_is_the_mean_over_categories():
    """The statistic is the format's own: FashionIQ Rmean averages categories of different
    sizes equally (not a pooled mean over queries)."""
    groups = {}
    for cat, n, rate in (("dress", 50, 0.2), ("shirt", 150, 0.6)):
        h = hits(rate, n, n)
        groups[cat] = QueryValues.of([f"{cat}{i}" for i in range(n)], {"R@10": h, "R@50": h})
    run = RunQueryValues("fashioniq", "full_gallery", {"full_gallery": groups})
    expected = fashioniq_average(
        {
            c: {"R@10": 100 * v.values["R@10"].mean(), "R@50": 100 * v.values["R@50"].mean()}
            for c, v in groups.items()
        }
    )
    assert run.metrics() == pytest.approx(expected)
    zero = RunQueryValues(
        "fashioniq",
        "full_gallery",
        {
            "full_gallery": {
                c: QueryValues(v.query_ids, {k: np.zeros_like(x) for k, x in v.values.items()})
                for c, v in groups.items()
            }
        },
    )
    result = paired_bootstrap([(run, zero)], "Rmean")
    assert result.difference == pytest.approx(expected["Rmean"])
    assert result.queries == {"dress": 50, "shirt": 150}


# ----------------------------------------------------------------------------- exact metrics


def _fiq_inputs(rng, q=40, g=60):
    gallery = [f"g{i}" for i in range(g)]
    refs = [gallery[i] for i in rng.integers(0, g, q)]
    targets = [gallery[i] for i in rng.integers(0, g, q)]
    return gallery, refs, targets


def test_per_query_hits_reproduce_fashioniq_metrics_exactly():
    rng = np.random.default_rng(0)
    gallery, refs, targets = _fiq_inputs(rng)
    qf = rng.normal(size=(40, 8)).astype(np.float32)
    gf = rng.normal(size=(60, 8)).astype(np.float32)
    qf /= np.linalg.norm(qf, axis=1, keepdims=True)
    gf /= np.linalg.norm(gf, axis=1, keepdims=True)
    scores = np.round(qf @ gf.T, 1)  # ties, to exercise the tie-break
    fmt = get_format("fashioniq")
    split = CIRSplit(
        "fashioniq",
        "val",
        "dress",
        [
            Query(f"q{i}", i, r, t, ("c",))
            for i, (r, t) in enumerate(zip(refs, targets, strict=True))
        ],
        gallery,
        {},
    )
    for protocol in ("full_gallery", "drop_reference"):
        values = fmt.split_query_values(split, qf, gf, EvalOptions(protocol=protocol), None)
        drop = protocol == "drop_reference"
        assert values.query_ids == tuple(f"q{i}" for i in range(40))
        assert values.metrics() == fashioniq_metrics_from_features(
            qf, gf, gallery, targets, reference_names=refs, drop_reference=drop
        )
    from bench.metrics import fashioniq_query_values

    v = QueryValues.of(range(40), fashioniq_query_values(scores, gallery, targets))
    assert v.metrics() == fashioniq_metrics(scores, gallery, targets)
    assert v.metrics() == pytest.approx(fashioniq_metrics_naive(scores, gallery, targets), abs=0)


def test_per_query_hits_reproduce_cirr_metrics_exactly():
    rng = np.random.default_rng(1)
    g, q = 48, 30
    gallery = [f"g{i}" for i in range(g)]
    groups = [[gallery[j] for j in rng.choice(g, 6, replace=False)] for _ in range(q)]
    refs = [m[0] for m in groups]
    targets = [m[int(rng.integers(1, 6))] for m in groups]
    qf = rng.normal(size=(q, 8)).astype(np.float32)
    gf = rng.normal(size=(g, 8)).astype(np.float32)
    qf /= np.linalg.norm(qf, axis=1, keepdims=True)
    gf /= np.linalg.norm(gf, axis=1, keepdims=True)
    queries = [
        Query(str(100 + i), i, r, t, ("c",), group=tuple(m))
        for i, (r, t, m) in enumerate(zip(refs, targets, groups, strict=True))
    ]
    split = CIRSplit("cirr", "val", None, queries, gallery, {})
    fmt = get_format("cirr")
    values = fmt.split_query_values(split, qf, gf, EvalOptions(), None)
    run = RunQueryValues("cirr", "hard_targets", {"hard_targets": {None: values}})
    assert run.metrics() == cirr_metrics_from_features(qf, gf, gallery, refs, targets, groups)
    assert fmt.split_metrics(split, qf, gf, EvalOptions(), None) == run.metrics()
    scores = np.round(qf @ gf.T, 1)
    got = cirr_metrics(scores, gallery, refs, targets, groups)
    assert got == pytest.approx(cirr_metrics_naive(scores, gallery, refs, targets, groups), abs=0)


def test_per_query_ap_reproduces_circo_map_exactly():
    rng = np.random.default_rng(2)
    g, q = 80, 25
    gallery = [str(i) for i in range(g)]
    gts = [
        [gallery[j] for j in rng.choice(g, int(rng.integers(1, 5)), replace=False)]
        for _ in range(q)
    ]
    refs = [gallery[i] for i in rng.integers(0, g, q)]
    qf = rng.normal(size=(q, 8)).astype(np.float32)
    gf = rng.normal(size=(g, 8)).astype(np.float32)
    scores = qf @ gf.T
    values = circo_query_values(scores, gallery, refs, gts)
    assert all(v.dtype == np.float64 and ((v >= 0) & (v <= 1)).all() for v in values.values())
    assert QueryValues.of(range(q), values).metrics() == circo_metrics(scores, gallery, refs, gts)
    queries = [
        Query(str(i), i, r, t[0], ("c",), targets=tuple(t))
        for i, (r, t) in enumerate(zip(refs, gts, strict=True))
    ]
    split = CIRSplit("circo", "val", None, queries, gallery, {})
    fmt = get_format("circo")
    qn = qf / np.linalg.norm(qf, axis=1, keepdims=True)
    gn = gf / np.linalg.norm(gf, axis=1, keepdims=True)
    got = fmt.split_query_values(split, qn, gn, EvalOptions(), None).metrics()
    assert got == circo_metrics_from_features(qn, gn, gallery, refs, gts)


def test_per_query_file_round_trip_and_errors(tmp_path):
    from dataclasses import replace

    run = replace(cirr_run(hits(0.5, 11), hits(0.3, 12)), digests={None: "abc"})
    path = run.save(tmp_path / "per_query.npz")
    back = RunQueryValues.load(path)
    assert back.metrics() == run.metrics() and back.digests == run.digests
    assert back.groups()[None].query_ids == run.groups()[None].query_ids
    assert back.groups()[None].values["R@5"].dtype == np.bool_
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(PerQueryError, match=r"bad\.npz"):
        RunQueryValues.load(tmp_path / "bad.npz")
    with pytest.raises(PerQueryError, match="not found"):
        RunQueryValues.load(tmp_path / "absent.npz")


# ----------------------------------------------------------------------------- compare CLI


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    yield from cirbench_home(tmp_path_factory)


def test_compare_cli_on_two_tiny_tracked_runs(home, tmp_path, capsys):
    from bench.cli import main
    from bench.config import parse_spec
    from bench.stats import PER_QUERY_FILE
    from bench.train.engine import train

    base = {
        "name": "tiny",
        "experiment": "cirbench-tests-compare",
        "dataset": {
            "format": "fashioniq",
            "synthetic_size": "tiny",
            "categories": ["dress"],
            "max_train_queries": 32,
        },
        "backbone": {"pretrained": "random"},
        "method": {"params": {"use_combiner": False}},
        "train": {"epochs": 1, "batch_size": 16, "lr": 1e-4},
    }
    results = [train(parse_spec(base, overrides=[f"seed={s}"]), progress=False) for s in (0, 1)]
    for r in results:
        values = RunQueryValues.load(r.run_dir / PER_QUERY_FILE)
        assert values.metrics() == r.metrics  # the file reproduces the run's metrics
    ids = [r.mlflow_run_id for r in results]
    assert main(["compare", ids[0], ids[1]]) == 0
    out = capsys.readouterr().out
    assert "Rmean" in out and "dress" in out and "resamples" in out
    assert main(["compare", str(results[0].run_dir), ids[0], "--json"]) == 0
    [record, *_] = json.loads(capsys.readouterr().out)
    assert record["metric"] == "Rmean" and record["difference"] == 0.0
    assert record["ci_low"] == record["ci_high"] == 0.0
    # runs on other queries: a clear error
    values = RunQueryValues.load(results[1].run_dir / PER_QUERY_FILE)
    dress = values.groups()["dress"]
    fewer = QueryValues(dress.query_ids[1:], {k: v[1:] for k, v in dress.values.items()})
    other = RunQueryValues("fashioniq", values.primary, {values.primary: {"dress": fewer}})
    other.save(tmp_path / "other.npz")
    assert main(["compare", ids[0], str(tmp_path / "other.npz")]) == 2
    assert "not on the same queries" in capsys.readouterr().err
    assert main(["compare", ids[0], "no-such-run"]) == 2
    assert "not a run folder" in capsys.readouterr().err


# ----------------------------------------------------------------------------- report tables


def _fake_run(spec, rate: float, seed: int) -> dict[str, float]:
    """Write a per-query file (FashionIQ dress, 100 queries) where the spec's run folder
    is, as a finished run leaves it; returns its metrics."""
    from bench.stats import PER_QUERY_FILE
    from bench.train.session import run_dir_for

    rng = np.random.default_rng(seed)
    h10 = rng.random(100) < rate
    h50 = h10 | (rng.random(100) < rate)
    dress = QueryValues.of([f"d{i}" for i in range(100)], {"R@10": h10, "R@50": h50})
    values = RunQueryValues("fashioniq", "full_gallery", {"full_gallery": {"dress": dress}})
    values.save(run_dir_for(spec) / PER_QUERY_FILE)
    return values.metrics()


def test_report_tables_carry_intervals_val_size_and_published_gain(home):
    """Tables of the compositions, the methods compared, Table 2 and the published gain,
    from per-query files where the points' runs keep them (no training)."""
    from bench.report.collect import TrackedPoint
    from bench.report.paper import paper_table
    from bench.report.tables import compositions_table
    from bench.runner.profiles import get_profile
    from bench.runner.suites import SuiteRun, load_suite

    rates = {"none": 0.2, "P": 0.5, "N": 0.21, "P+N": 0.5}
    for suite in ("ablation_spn", "table2_fashioniq"):
        run = SuiteRun(
            load_suite(suite), get_profile("quick"), methods_override=("clip4cir", "tgcir")
        )
        points = []
        for i, point in enumerate(p for p in run.points() if p.dataset == "fashioniq"):
            spec = run.spec(point)
            bonus = 0.1 if point.method == "tgcir" else 0.0
            metrics = _fake_run(spec, rates[point.composition] + bonus, i)
            points.append(TrackedPoint(point, spec.digest(), None, metrics))
        builder = paper_table if suite.startswith("table") else compositions_table
        tables = {t.name: t for t in builder(run, points)}
        main = tables[next(iter(tables))]
        text = main.markdown()
        assert "Val size: dress 100 queries" in text and "Smallest resolvable difference" in text
        assert "2000 resamples" in text
        assert any("]*" in cell for row in main.rows for cell in row)  # P: resolved
        methods = next(t for name, t in tables.items() if name.endswith("_methods"))
        assert {r[1] for r in methods.rows} == {"TG-CIR"}  # tgcir ranks above clip4cir
        if suite == "ablation_spn":
            n_row = next(r for r in main.rows if r[:2] == ["CLIP4CIR", "N"])
            assert "[" in n_row[-2] and not n_row[-2].endswith("*")  # +1 point: noise
            assert main.warning and "below the smallest resolvable difference" in main.warning
        else:
            assert {r[-1] for r in main.rows if r[1] in ("–", "+P+N")} == {"1"}  # one seed
            published = tables["table2_fashioniq_published_gain"]
            verdicts = {r[0]: r[-1] for r in published.rows}
            assert verdicts == {"CLIP4CIR": "same sign", "TG-CIR": "same sign"}
            assert "only comparison the synthetic benchmark supports" in published.note
            assert "≠" in published.markdown()  # CLIP4CIR's published rows mix protocols


def test_axis_and_study_tables_compare_each_point_with_its_stage1(home, tmp_path):
    """An axis value and an Optuna trial are compared with the stage-1 run they continue
    from; the study's note says whether the curve's range exceeds its own interval."""
    from bench.report.collect import TrackedPoint
    from bench.report.tables import axis_table, study_table
    from bench.runner.profiles import get_profile
    from bench.runner.suites import SuiteRun, load_suite
    from bench.stats import PER_QUERY_FILE
    from bench.tracking import TrackedRun
    from bench.train.session import run_dir_for

    run = SuiteRun(load_suite("negatives_tau"), get_profile("quick"))
    points = []
    for i, point in enumerate(p for p in run.points() if p.dataset == "fashioniq"):
        spec = run.spec(point)
        _fake_run(spec.stage1_spec(), 0.2, 0)  # one stage 1 for every tau
        tau = dict(point.extra)["spn.negatives.tau"]
        metrics = _fake_run(spec, 0.2 if tau < 0.02 else 0.6, 1 + i)
        points.append(TrackedPoint(point, spec.digest(), None, metrics))
    [table, *_] = axis_table(run, points)
    by_tau = {float(r[2]): r[-2] for r in table.rows}
    assert by_tau[0.05].endswith("*") and "[" in by_tau[0.005]
    assert "over the stage-1 run" in table.note and "Val size: dress 100" in table.note

    study = SuiteRun(load_suite("bank_size"), get_profile("quick"))
    stage1 = tmp_path / "stage1" / "best.pt"
    values = {}
    for rate, seed in ((0.2, 0), (0.25, 1), (0.7, 2)):
        path = tmp_path / f"trial{seed}" / PER_QUERY_FILE
        metrics = _fake_run(study.spec(study.points()[0]), rate, seed)
        RunQueryValues.load(run_dir_for(study.spec(study.points()[0])) / PER_QUERY_FILE).save(path)
        with TrackedRun("cirbench-tests-study", f"trial{seed}", params={}) as tracked:
            tracked.log_artifact(path)
        values[seed] = (tracked.run_id, metrics)
    stage1.parent.mkdir()
    RunQueryValues.load(tmp_path / "trial0" / PER_QUERY_FILE).save(stage1.parent / PER_QUERY_FILE)
    records = [
        {
            "trial": trial,
            "value": 4 * 10**trial,
            "seed": 0,
            "status": "FINISHED",
            "pruned": False,
            "metrics": metrics,
            "run_id": run_id,
            "stage1": str(stage1),
        }
        for trial, (run_id, metrics) in values.items()
    ]
    [table] = study_table(study, records, None)
    gains = [r[-2] for r in table.rows]
    assert gains[0] == "+0.00 [+0.00, +0.00]" and gains[2].endswith("*")
    assert "Range of the curve: trial 2 against trial 0" in table.note
    assert "exceeds its own interval" in table.note


def test_p_is_compared_with_its_control(home):
    from bench.report.collect import TrackedPoint
    from bench.report.tables import compositions_table
    from bench.runner.profiles import get_profile
    from bench.runner.suites import SuiteRun, load_suite

    run = SuiteRun(load_suite("positives_control"), get_profile("quick"))
    rates = {"none": 0.2, "P-control": 0.2, "P": 0.6}
    points = []
    for i, point in enumerate(p for p in run.points() if p.dataset == "fashioniq"):
        spec = run.spec(point)
        metrics = _fake_run(spec, rates[point.composition], 20 + i)
        points.append(TrackedPoint(point, spec.digest(), None, metrics))
    [table, *_] = compositions_table(run, points)
    [row] = [r for r in table.rows if r[1] == "P vs P-control"]
    assert row[-2].endswith("*") and row[-2].startswith("+")
