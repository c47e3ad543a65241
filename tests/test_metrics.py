"""Metric semantics: hand-computed cases, errors, and fast == literal == faiss on random data."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import numpy as np
import pytest

from bench.core.errors import MetricInputError
from bench.metrics import (
    DEFAULT_FASHIONIQ_PROTOCOL,
    FASHIONIQ_PROTOCOLS,
    cirr_metrics,
    cirr_metrics_from_features,
    fashioniq_average,
    fashioniq_metrics,
    fashioniq_metrics_for_protocol,
    fashioniq_metrics_from_features,
    fashioniq_protocol_gallery,
    kernels,
    subset_topk_from_scores,
    subset_topk_names,
    topk_from_scores,
    topk_names,
)
from bench.metrics.reference import cirr_metrics_naive, fashioniq_metrics_naive

ROOT = Path(__file__).resolve().parents[1]
FIQ_DATA = Path("/work/shared/data/fashioniq")

G12 = [f"g{i}" for i in range(12)]  # a 12-image gallery for R@10 boundary cases
DESC12 = np.arange(12, 0, -1, dtype=float)  # g0 best ... g11 worst

# CIRR hand case: gallery a..h, four queries (reference, target, scores, group).
ABC = list("abcdefgh")
CIRR_SCORES = np.array(
    [
        [0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2],  # Q0 ref a, tgt b
        [0.9, 0.8, 0.95, 0.1, 0.2, 0.3, 0.4, 0.0],  # Q1 ref c, tgt b
        [0.5, 0.5, 0.5, 0.1, 0.1, 0.1, 0.1, 0.1],  # Q2 ref a, tgt b (ties)
        [0.5, 0.5, 0.5, 0.1, 0.1, 0.1, 0.1, 0.1],  # Q3 ref c, tgt b (ties)
    ]
)
CIRR_REFS = ["a", "c", "a", "c"]
CIRR_TARGETS = ["b", "b", "b", "b"]
CIRR_GROUPS = [
    ["a", "b", "c", "d"],
    ["c", "a", "b", "e"],
    ["a", "c", "b", "h"],
    ["c", "d", "e", "b"],
]


# ----------------------------------------------------------------- hand-computed cases


def test_tie_break_follows_gallery_order() -> None:
    # All 12 scores equal: the ranking is the gallery order g0, g1, ..., g11.
    # Q0 target g9 -> 9 images before it -> rank 9 -> hit@10.
    # Q1 target g10 -> rank 10 -> miss@10, hit@50.  R@10 = 1/2 = 50, R@50 = 100.
    scores = np.ones((2, 12))
    out = fashioniq_metrics(scores, G12, ["g9", "g10"])
    assert out == {"R@10": 50.0, "R@50": 100.0}
    assert out == fashioniq_metrics_naive(scores, G12, ["g9", "g10"])
    stable = np.argsort(-scores[1], kind="stable")
    assert int(np.flatnonzero(stable == 10)[0]) == 10


def test_tie_with_higher_and_equal_scores() -> None:
    # scores g0..g11 = [1, 5, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1]; target g11 (score 1):
    # 1 higher (g1) + 10 equal earlier (g0, g2..g10) -> rank 11 -> miss@10.
    # target g8: 1 higher + 7 equal earlier (g0, g2..g7) -> rank 8 -> hit@10.
    row = np.ones(12)
    row[1] = 5
    scores = np.stack([row, row])
    assert fashioniq_metrics(scores, G12, ["g11", "g8"]) == {"R@10": 50.0, "R@50": 100.0}


def test_fashioniq_reference_kept_vs_dropped() -> None:
    # Scores descend with the index (g0 best).  Q0: ref g0, tgt g10 -> rank 10 with the
    # reference kept (miss@10), rank 9 with it dropped (hit@10).  Q1: ref g11 is ranked
    # after tgt g10 -> rank 10 either way (miss@10).  Both hit@50.
    scores = np.stack([DESC12, DESC12])
    refs, tgts = ["g0", "g11"], ["g10", "g10"]
    kept = fashioniq_metrics(scores, G12, tgts, reference_names=refs)
    dropped = fashioniq_metrics(scores, G12, tgts, reference_names=refs, drop_reference=True)
    assert kept == {"R@10": 0.0, "R@50": 100.0}
    assert dropped == {"R@10": 50.0, "R@50": 100.0}
    assert fashioniq_metrics(scores, G12, tgts) == kept  # default keeps the reference
    naive = fashioniq_metrics_naive(scores, G12, tgts, reference_names=refs, drop_reference=True)
    assert naive == dropped


def test_fashioniq_dropped_reference_tied_with_target() -> None:
    # All equal; ref g3 (earlier than tgt g10) is removed -> g10 moves from rank 10 to 9.
    # ref g11 (later) removed -> g10 stays at rank 10.  R@10 = 50.
    scores = np.ones((2, 12))
    out = fashioniq_metrics(
        scores, G12, ["g10", "g10"], reference_names=["g3", "g11"], drop_reference=True
    )
    assert out == {"R@10": 50.0, "R@50": 100.0}


def test_cirr_hand_case() -> None:
    # Global ranking, reference removed:
    #   Q0: a .9 (ref, removed), b .8 -> rank 0, hit@1
    #   Q1: c .95 (ref), a .9, b .8 -> a, b -> rank 1, miss@1
    #   Q2: ties a, b, c (gallery order); remove a -> b rank 0, hit@1
    #   Q3: ties a, b, c; remove c (after b) -> b rank 1, miss@1
    #   R@1 = 2/4 = 50; R@5 = R@10 = R@50 = 100.
    # Subsets (reference excluded):
    #   Q0: b .8, c .7, d .6 -> rank 0 hit@1
    #   Q1: a .9, b .8, e .2 -> rank 1: miss@1, hit@2 (with the ref c .95 it would be rank 2)
    #   Q2: b .5 and c .5 tie -> b first by gallery order, h .1 -> rank 0 hit@1
    #   Q3: b .5, d .1, e .1 -> rank 0 hit@1
    #   Rsubset@1 = 75, @2 = @3 = 100; Rmean = (100 + 75) / 2 = 87.5.
    expected = {
        "R@1": 50.0,
        "R@5": 100.0,
        "R@10": 100.0,
        "R@50": 100.0,
        "Rsubset@1": 75.0,
        "Rsubset@2": 100.0,
        "Rsubset@3": 100.0,
        "Rmean": 87.5,
    }
    args = (CIRR_SCORES, ABC, CIRR_REFS, CIRR_TARGETS, CIRR_GROUPS)
    assert cirr_metrics(*args) == expected
    assert cirr_metrics_naive(*args) == expected


def test_cirr_reference_removal_changes_r1() -> None:
    # Q0 scores: a .9, b .8, ...; target b.  Reference a (ranked first) is removed -> b at
    # rank 0 -> R@1 = 100.  With reference h (ranked last) nothing ahead of b is removed ->
    # b stays at rank 1 -> R@1 = 0.
    scores = CIRR_SCORES[:1]
    assert cirr_metrics(scores, ABC, ["a"], ["b"], [["a", "b", "c", "d"]])["R@1"] == 100.0
    assert cirr_metrics(scores, ABC, ["h"], ["b"], [["h", "b", "c", "d"]])["R@1"] == 0.0


def test_soft_targets_best_rank_counts() -> None:
    # DESC12: rank of gi is i.  Q0 targets (g11, g3) -> best rank 3 -> hit@10.
    # Q1 targets (g0, g11) with ref g0: kept -> rank 0 hit@10; dropped -> g0 cannot be
    # retrieved, g11 moves to rank 10 -> miss@10, hit@50.
    scores = np.stack([DESC12, DESC12])
    tgts = [("g11", "g3"), ["g0", "g11"]]
    refs = ["g5", "g0"]
    assert fashioniq_metrics(scores, G12, tgts, reference_names=refs) == {
        "R@10": 100.0,
        "R@50": 100.0,
    }
    dropped = fashioniq_metrics(scores, G12, tgts, reference_names=refs, drop_reference=True)
    # Q0 with ref g5 dropped: g3 still rank 3 -> hit.  R@10 = 50.
    assert dropped == {"R@10": 50.0, "R@50": 100.0}
    assert dropped == fashioniq_metrics_naive(
        scores, G12, tgts, reference_names=refs, drop_reference=True
    )


def test_cirr_soft_targets_in_subset() -> None:
    # Q1 of the hand case with targets (e, b): global ranks after removing c: a 0, b 1,
    # ..., e -> b is best (rank 1).  Subset (a .9, b .8, e .2): b rank 1 -> miss@1.
    # Targets (h, a): a is rank 0 globally and in the subset (h is not a member).
    scores = CIRR_SCORES[1:2]
    out = cirr_metrics(scores, ABC, ["c"], [("e", "b")], [CIRR_GROUPS[1]])
    assert (out["R@1"], out["R@5"], out["Rsubset@1"], out["Rsubset@2"]) == (0.0, 100.0, 0.0, 100.0)
    out = cirr_metrics(scores, ABC, ["c"], [("h", "a")], [CIRR_GROUPS[1]])
    assert (out["R@1"], out["Rsubset@1"]) == (100.0, 100.0)
    # target only outside the group: a subset miss, not an error
    out = cirr_metrics(scores, ABC, ["c"], ["h"], [CIRR_GROUPS[1]])
    assert (out["R@5"], out["Rsubset@3"]) == (0.0, 0.0)
    assert out == cirr_metrics_naive(scores, ABC, ["c"], ["h"], [CIRR_GROUPS[1]])


def test_subset_repeated_member_counted_once() -> None:
    # Group of Q1 with b listed twice and a repeated: members a .9, b .8, e .2 -> b rank 1.
    out = cirr_metrics(CIRR_SCORES[1:2], ABC, ["c"], ["b"], [["c", "a", "a", "b", "b", "e"]])
    assert (out["Rsubset@1"], out["Rsubset@2"]) == (0.0, 100.0)


def test_torch_input() -> None:
    torch = pytest.importorskip("torch")
    scores = torch.tensor(CIRR_SCORES, dtype=torch.float64, requires_grad=True)
    args = (ABC, CIRR_REFS, CIRR_TARGETS, CIRR_GROUPS)
    assert cirr_metrics(scores, *args) == cirr_metrics(CIRR_SCORES, *args)
    half = torch.tensor(np.stack([DESC12, DESC12]), dtype=torch.bfloat16)
    out = fashioniq_metrics(half, G12, ["g9", "g10"])
    assert out == {"R@10": 50.0, "R@50": 100.0}
    feats = torch.randn(4, 8)
    gal = torch.randn(12, 8)
    assert fashioniq_metrics_from_features(feats, gal, G12, ["g0"] * 4)["R@50"] == 100.0


# ----------------------------------------------------------------- errors


def test_missing_target_names_query_and_count() -> None:
    scores = np.stack([DESC12] * 3)
    with pytest.raises(MetricInputError, match=r"2 of 3 queries.*query 1: 'nope'.*query 2: 'x'"):
        fashioniq_metrics(scores, G12, ["g1", "nope", ["g2", "x"]])
    with pytest.raises(MetricInputError, match=r"query 2: 'zz'"):
        cirr_metrics(CIRR_SCORES, ABC, CIRR_REFS, ["b", "b", "zz", "b"], CIRR_GROUPS)
    with pytest.raises(MetricInputError, match=r"1 of 4 queries have a reference.*query 3: 'q'"):
        cirr_metrics(CIRR_SCORES, ABC, ["a", "c", "a", "q"], CIRR_TARGETS, CIRR_GROUPS)
    with pytest.raises(MetricInputError, match=r"group member.*query 0: 'zz'"):
        cirr_metrics(CIRR_SCORES, ABC, CIRR_REFS, CIRR_TARGETS, [["a", "zz"], *CIRR_GROUPS[1:]])
    with pytest.raises(MetricInputError, match=r"query 0"):
        fashioniq_metrics(scores, G12, [[], "g1", "g2"])
    qf = np.eye(3, 12, dtype=np.float32)
    with pytest.raises(MetricInputError, match=r"query 1: 'nope'"):
        fashioniq_metrics_from_features(qf, np.eye(12, dtype=np.float32), G12, ["g1", "nope", "g2"])


def test_shape_and_value_errors() -> None:
    scores = np.zeros((2, 3))
    with pytest.raises(MetricInputError, match=r"gallery_names has 4 entries.*score columns is 3"):
        fashioniq_metrics(scores, list("abcd"), ["a", "b"])
    with pytest.raises(MetricInputError, match=r"target_names has 3 entries.*is 2"):
        fashioniq_metrics(scores, list("abc"), ["a", "b", "c"])
    with pytest.raises(MetricInputError, match=r"2-D"):
        fashioniq_metrics(np.zeros(3), list("abc"), ["a"])
    with pytest.raises(MetricInputError, match=r"group_members has 3 entries"):
        cirr_metrics(CIRR_SCORES, ABC, CIRR_REFS, CIRR_TARGETS, CIRR_GROUPS[:3])
    with pytest.raises(MetricInputError, match=r"duplicate.*\['a'\]"):
        fashioniq_metrics(scores, ["a", "b", "a"], ["a", "b"])
    bad = CIRR_SCORES.copy()
    bad[2, 5] = np.nan
    with pytest.raises(MetricInputError, match=r"1 NaN.*query 2"):
        cirr_metrics(bad, ABC, CIRR_REFS, CIRR_TARGETS, CIRR_GROUPS)
    with pytest.raises(MetricInputError, match=r"needs reference_names"):
        fashioniq_metrics(scores, list("abc"), ["a", "b"], drop_reference=True)
    with pytest.raises(MetricInputError, match=r"dim 4 but gallery_features have dim 5"):
        fashioniq_metrics_from_features(np.ones((2, 4)), np.ones((3, 5)), list("abc"), ["a", "b"])
    with pytest.raises(MetricInputError, match=r"unknown FashionIQ protocol"):
        fashioniq_protocol_gallery("nope", G12, [], [])


# ----------------------------------------------------------------- random equivalence


def _random_cirr(rng: np.random.Generator, q: int, g: int, soft: bool) -> tuple:
    names = [f"n{i:04d}" for i in range(g)]
    refs, targets, groups = [], [], []
    for _ in range(q):
        pick = rng.choice(g, size=6, replace=False)
        refs.append(names[pick[0]])
        if soft and rng.random() < 0.3:  # soft targets, sometimes outside the group
            extra = rng.choice(g, size=2, replace=False)
            targets.append([names[pick[1]], *(names[i] for i in extra)])
        else:
            targets.append(names[pick[rng.integers(1, 6)]])
        groups.append([names[i] for i in rng.permutation(pick)])
    return names, refs, targets, groups


@pytest.mark.parametrize("soft", [False, True])
def test_cirr_fast_equals_naive_random(soft: bool) -> None:
    rng = np.random.default_rng(1)
    names, refs, targets, groups = _random_cirr(rng, 300, 120, soft)
    scores = rng.random((300, 120))  # float64: no ties
    fast = cirr_metrics(scores, names, refs, targets, groups)
    assert fast == cirr_metrics_naive(scores, names, refs, targets, groups, chunk=64)
    assert 0 < fast["R@10"] < 100 and 0 < fast["Rsubset@1"] < 100
    # heavy ties (scores on 4 levels) also agree: both use the gallery-order tie-break
    tied = np.floor(scores * 4)
    assert cirr_metrics(tied, names, refs, targets, groups) == cirr_metrics_naive(
        tied, names, refs, targets, groups
    )


@pytest.mark.parametrize("drop", [False, True])
def test_fashioniq_fast_equals_naive_random(drop: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kernels, "_CHUNK_ELEMS", 1000)  # exercise several row blocks
    rng = np.random.default_rng(2)
    q, g = 250, 200
    names = [f"m{i}" for i in range(g)]
    refs = [names[i] for i in rng.integers(0, g, q)]
    targets = [names[i] for i in rng.integers(0, g, q)]
    targets[:20] = [[names[i], names[j]] for i, j in rng.integers(0, g, (20, 2))]
    scores = rng.standard_normal((q, g)).astype(np.float32)
    kw = {"reference_names": refs, "drop_reference": drop}
    fast = fashioniq_metrics(scores, names, targets, **kw)
    assert fast == fashioniq_metrics_naive(scores, names, targets, **kw)
    assert 0 < fast["R@10"] < fast["R@50"] < 100
    tied = np.round(scores)
    assert fashioniq_metrics(tied, names, targets, **kw) == fashioniq_metrics_naive(
        tied, names, targets, **kw
    )


def _features(rng: np.random.Generator, q: int, g: int, d: int, tgt: np.ndarray) -> tuple:
    gf = rng.standard_normal((g, d)).astype(np.float32)
    gf /= np.linalg.norm(gf, axis=1, keepdims=True)
    qf = (3 * rng.standard_normal((q, d)) / np.sqrt(d) + gf[tgt]).astype(np.float32)
    qf /= np.linalg.norm(qf, axis=1, keepdims=True)
    return qf, gf


def test_cirr_faiss_equals_scores() -> None:
    rng = np.random.default_rng(3)
    q, g = 300, 400
    names, refs, targets, groups = _random_cirr(rng, q, g, soft=True)
    index = {n: i for i, n in enumerate(names)}
    tgt = np.array([index[t if isinstance(t, str) else t[0]] for t in targets])
    qf, gf = _features(rng, q, g, 32, tgt)
    via_faiss = cirr_metrics_from_features(qf, gf, names, refs, targets, groups)
    via_scores = cirr_metrics(qf @ gf.T, names, refs, targets, groups)
    assert via_faiss == via_scores
    assert 0 < via_scores["R@1"] < via_scores["R@50"] < 100


@pytest.mark.parametrize("drop", [False, True])
def test_fashioniq_faiss_equals_scores(drop: bool) -> None:
    rng = np.random.default_rng(4)
    q, g = 300, 500
    names = [f"f{i}" for i in range(g)]
    tgt = rng.integers(0, g, q)
    qf, gf = _features(rng, q, g, 32, tgt)
    ref_idx = np.argsort(-(qf @ gf.T), axis=1)[:, 3]  # a reference ranked near the top
    refs = [names[i] for i in ref_idx]
    targets = [names[i] for i in tgt]
    kw = {"reference_names": refs, "drop_reference": drop}
    via_faiss = fashioniq_metrics_from_features(qf, gf, names, targets, **kw)
    assert via_faiss == fashioniq_metrics(qf @ gf.T, names, targets, **kw)
    assert 0 < via_faiss["R@10"] < via_faiss["R@50"] < 100
    # features are normalised inside: scaling them changes nothing
    assert via_faiss == fashioniq_metrics_from_features(qf * 7, gf * 0.5, names, targets, **kw)


def test_faiss_entries_with_ties_match_scores() -> None:
    # Integer features (exact dot products, hundreds of equal scores per query): the feature
    # entries follow the gallery-order tie-break inside the top-k and at its cut-off.
    rng = np.random.default_rng(6)
    q, g = 60, 300
    gf = rng.integers(-1, 2, (g, 4)).astype(np.float32)
    qf = rng.integers(-2, 3, (q, 4)).astype(np.float32)
    names = [f"d{i}" for i in range(g)]
    scores = qf @ gf.T
    stable = np.argsort(-scores, axis=1, kind="stable")
    expected = [[names[i] for i in row[:50]] for row in stable]
    assert topk_names(qf, gf, names, 50, normalize=False) == expected
    rows = np.arange(q)
    targets = [names[i] for i in stable[rows, rng.integers(0, 80, q)]]
    refs = [names[i] for i in stable[rows, rng.integers(0, 20, q)]]
    for drop in (False, True):
        kw = {"reference_names": refs, "drop_reference": drop}
        via_faiss = fashioniq_metrics_from_features(qf, gf, names, targets, normalize=False, **kw)
        assert via_faiss == fashioniq_metrics(scores, names, targets, **kw)
        assert 0 < via_faiss["R@10"] < via_faiss["R@50"] < 100
    groups = [[r, *(names[i] for i in stable[j, 1:6])] for j, r in enumerate(refs)]
    assert cirr_metrics_from_features(
        qf, gf, names, refs, targets, groups, normalize=False
    ) == cirr_metrics(scores, names, refs, targets, groups)


def test_faiss_ties_inside_topk_follow_gallery_order() -> None:
    # 12 copies of the query's own direction v (score exactly 1) at scattered gallery
    # positions, every other image scores < 1: the top 12 are tied and must come in gallery
    # order (faiss itself lists them in reverse), with a clean cut-off after them.
    rng = np.random.default_rng(7)
    g, d = 200, 16
    gf = rng.standard_normal((g, d)).astype(np.float32)
    gf /= np.linalg.norm(gf, axis=1, keepdims=True)
    v = np.where(rng.random(d) < 0.5, -0.25, 0.25).astype(np.float32)  # unit norm, exact
    copies = np.sort(rng.choice(g, 12, replace=False))
    gf[copies] = v
    names = [f"v{i}" for i in range(g)]
    qf = np.stack([v, v])
    top = topk_names(qf, gf, names, 15)
    assert top[0][:12] == [names[i] for i in copies]
    # target = last copy: stable rank 11; the reference (first copy) dropped -> rank 10 ->
    # miss@10 (faiss's own order would put it at rank 0).  R@10 = 0, R@50 = 100.
    target = [names[copies[-1]]] * 2
    kw = {"reference_names": [names[copies[0]]] * 2, "drop_reference": True}
    assert fashioniq_metrics_from_features(qf, gf, names, target, **kw) == {
        "R@10": 0.0,
        "R@50": 100.0,
    }
    # target = 10th copy: rank 9 kept -> hit@10
    assert fashioniq_metrics_from_features(qf, gf, names, [names[copies[9]]] * 2)["R@10"] == 100.0


def test_topk_helpers_match_stable_sort() -> None:
    rng = np.random.default_rng(5)
    q, g = 40, 90
    names = [f"t{i}" for i in range(g)]
    qf, gf = _features(rng, q, g, 16, rng.integers(0, g, q))
    scores = qf @ gf.T
    refs = [names[i] for i in np.argmax(scores, axis=1)]
    expected = [
        [names[i] for i in np.argsort(-row, kind="stable") if names[i] != ref][:10]
        for row, ref in zip(scores, refs, strict=True)
    ]
    assert topk_from_scores(scores, names, 10, exclude_names=refs) == expected
    assert topk_names(qf, gf, names, 10, exclude_names=refs) == expected
    # ties straddling the cut-off: the lowest gallery indices win
    tied = np.round(scores * 2)
    exp_tied = [[names[i] for i in np.argsort(-r, kind="stable")[:7]] for r in tied]
    assert topk_from_scores(tied, names, 7) == exp_tied
    # subset top-3: the group ranked by score, reference excluded
    groups = [[ref, *(names[i] for i in rng.choice(g, 5, replace=False))] for ref in refs]
    want = []
    for row, ref, grp in zip(scores, refs, groups, strict=True):
        members = sorted({names.index(n) for n in grp if n != ref})
        want.append([names[i] for i in sorted(members, key=lambda i: (-row[i], i))][:3])
    assert subset_topk_from_scores(scores, names, refs, groups) == want
    assert subset_topk_names(qf, gf, names, refs, groups) == want
    with pytest.raises(MetricInputError, match="k=90 exceeds"):
        topk_from_scores(scores, names, 90, exclude_names=refs)


# ----------------------------------------------------------------- protocols and averages


def test_fashioniq_protocols() -> None:
    assert DEFAULT_FASHIONIQ_PROTOCOL == "full_gallery"
    assert set(FASHIONIQ_PROTOCOLS) == {"full_gallery", "drop_reference", "triplet_gallery"}
    assert not FASHIONIQ_PROTOCOLS["full_gallery"].drop_reference
    assert FASHIONIQ_PROTOCOLS["drop_reference"].drop_reference
    assert FASHIONIQ_PROTOCOLS["triplet_gallery"].drop_reference
    split = ["s0", "s1", "s2", "s3", "s4", "s5"]
    refs, tgts = ["s4", "s1"], ["s0", ["s4", "s5"]]
    assert fashioniq_protocol_gallery("full_gallery", split, refs, tgts) == split
    assert fashioniq_protocol_gallery("drop_reference", split, refs, tgts) == split
    assert fashioniq_protocol_gallery("triplet_gallery", split, refs, tgts) == [
        "s0",
        "s1",
        "s4",
        "s5",
    ]
    with pytest.raises(MetricInputError, match=r"1 triplet image.*\['zz'\]"):
        fashioniq_protocol_gallery("triplet_gallery", split, ["zz"], ["s0"])


def test_fashioniq_metrics_for_protocol() -> None:
    # 12-image split, scores descending with index; Q0 ref g0 tgt g10, Q1 ref g11 tgt g10.
    # full_gallery: g10 at rank 10 for both -> R@10 = 0.  drop_reference: Q0 rank 9 -> 50.
    # triplet_gallery: gallery {g0, g10, g11} -> Q0: drop g0 -> g10 rank 0 hit; Q1: g0, g10
    # -> rank 1 hit -> R@10 = 100.
    scores = np.stack([DESC12, DESC12])
    refs, tgts = ["g0", "g11"], ["g10", "g10"]
    results = {
        name: fashioniq_metrics_for_protocol(name, scores, G12, refs, tgts)["R@10"]
        for name in FASHIONIQ_PROTOCOLS
    }
    assert results == {"full_gallery": 0.0, "drop_reference": 50.0, "triplet_gallery": 100.0}


@pytest.mark.skipif(not FIQ_DATA.is_dir(), reason="FashionIQ annotations not available")
def test_triplet_gallery_sizes_on_real_fashioniq_val() -> None:
    # TG-CIR's triplet gallery sizes and the split sizes quoted in SPN_METHOD.md
    expected = {"dress": (3817, 2628), "shirt": (6346, 3089), "toptee": (5373, 2902)}
    for cat, (n_split, n_triplet) in expected.items():
        split = json.loads((FIQ_DATA / f"image_splits/split.{cat}.val.json").read_text())
        caps = json.loads((FIQ_DATA / f"captions/cap.{cat}.val.json").read_text())
        refs = [c["candidate"] for c in caps]
        tgts = [c["target"] for c in caps]
        assert len(fashioniq_protocol_gallery("full_gallery", split, refs, tgts)) == n_split
        gallery = fashioniq_protocol_gallery("triplet_gallery", split, refs, tgts)
        assert len(gallery) == n_triplet


def test_fashioniq_average_matches_published_cirplant_row() -> None:
    # SPN Table 2, CIRPLANT: avg R@10 (17.45 + 17.53 + 21.64) / 3 = 18.873 -> 18.87;
    # avg R@50 (40.41 + 38.81 + 45.38) / 3 = 41.533 -> 41.53; Rmean 30.203 -> 30.20.
    per_cat = {
        "dress": {"R@10": 17.45, "R@50": 40.41},
        "shirt": {"R@10": 17.53, "R@50": 38.81},
        "toptee": {"R@10": 21.64, "R@50": 45.38},
    }
    out = fashioniq_average(per_cat)
    assert set(out) == {
        "dress_R@10",
        "dress_R@50",
        "shirt_R@10",
        "shirt_R@50",
        "toptee_R@10",
        "toptee_R@50",
        "avg_R@10",
        "avg_R@50",
        "Rmean",
    }
    assert (round(out["avg_R@10"], 2), round(out["avg_R@50"], 2)) == (18.87, 41.53)
    assert round(out["Rmean"], 2) == 30.20
    assert out["shirt_R@50"] == 38.81
    with pytest.raises(MetricInputError, match=r"'dress' has no 'R@50'"):
        fashioniq_average({"dress": {"R@10": 1.0}})


# ----------------------------------------------------------------- benchmark smoke test


def test_benchmark_run_produces_expected_keys() -> None:
    spec = importlib.util.spec_from_file_location(
        "bench_metrics_script", ROOT / "benchmarks" / "bench_metrics.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for dataset, keys in (("cirr", 8), ("fashioniq", 2)):
        out = module.run(40, 60, 16, 1, dataset=dataset)
        assert {
            "naive_s",
            "matmul_s",
            "fast_s",
            "fast_total_s",
            "faiss_s",
            "speedup_fast",
            "speedup_faiss",
            "max_abs_diff_fast_vs_naive",
            "max_abs_diff_faiss_vs_fast",
        } <= set(out)
        assert len(out["metrics"]) == keys
        assert out["max_abs_diff_fast_vs_naive"] == 0.0
        assert re.fullmatch(r"cirr|fashioniq", out["dataset"])
