"""CIRR submission files: official examples validate, written files round-trip, errors are named."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bench.core.errors import DataFormatError, MetricInputError
from bench.metrics import (
    check_cirr_submission,
    cirr_submission_from_features,
    cirr_submission_from_scores,
    validate_cirr_submission,
    write_cirr_submission,
)

CIRR = Path("/work/shared/data/cirr")
EXAMPLES = CIRR / "submission_examples"
needs_cirr = pytest.mark.skipif(
    not (EXAMPLES / "test1_pred_ranks_recall.json").is_file(), reason="CIRR files not available"
)

NAMES = [f"g{i}" for i in range(55)]


@pytest.fixture(scope="module")
def test1() -> dict:
    captions = json.loads((CIRR / "captions/cap.rc2.test1.json").read_text())
    gallery = list(json.loads((CIRR / "image_splits/split.rc2.test1.json").read_text()))
    return {
        "pair_ids": [c["pairid"] for c in captions],
        "gallery": gallery,
        "groups": {c["pairid"]: c["img_set"]["members"] for c in captions},
        "refs": {c["pairid"]: c["reference"] for c in captions},
    }


@needs_cirr
@pytest.mark.parametrize(
    ("file", "metric", "length"),
    [
        ("test1_pred_ranks_recall.json", "recall", 50),
        ("test1_pred_ranks_recall_subset.json", "recall_subset", 3),
    ],
)
def test_official_examples_validate_clean(test1: dict, file: str, metric: str, length: int) -> None:
    path = EXAMPLES / file
    kw = {
        "expected_pair_ids": test1["pair_ids"],
        "gallery_names": test1["gallery"],
        "groups": test1["groups"],
        "references": test1["refs"],
    }
    assert validate_cirr_submission(path, **kw) == []
    payload = check_cirr_submission(path, **kw)
    assert payload["version"] == "rc2" and payload["metric"] == metric
    assert len(payload) - 2 == len(test1["pair_ids"]) == 4148
    assert {len(v) for k, v in payload.items() if k not in ("version", "metric")} == {length}
    # the same file checked against a wrong pair-id set is not clean
    problems = validate_cirr_submission(path, expected_pair_ids=[*test1["pair_ids"], 99999999])
    assert len(problems) == 1 and "1 of 4149 expected pair ids are missing" in problems[0]


def _case() -> tuple[np.ndarray, list[int], list[str], list[list[str]]]:
    # 55-image gallery, 3 queries.
    # Q0: scores descend with the index, ref g0 -> top50 = g1..g50; group
    #     [g0, g9, g3, g7, g2, g54] -> top3 = g2, g3, g7 (the reference g0 is left out).
    # Q1: all scores equal (ties -> gallery order), ref g4 -> top50 = g0..g3, g5..g50;
    #     group [g4, g40, g30, g20, g10, g1] -> top3 = g1, g10, g20.
    # Q2: scores ascend with the index, ref g2 (rank 52, outside the top 51) ->
    #     top50 = g54..g5; group [g2, g21, g22, g23, g24, g25] -> top3 = g25, g24, g23.
    scores = np.stack([np.arange(55, 0, -1), np.ones(55), np.arange(55)]).astype(float)
    refs = ["g0", "g4", "g2"]
    groups = [
        ["g0", "g9", "g3", "g7", "g2", "g54"],
        ["g4", "g40", "g30", "g20", "g10", "g1"],
        ["g2", "g21", "g22", "g23", "g24", "g25"],
    ]
    return scores, [101, 7, 2024], refs, groups


def test_submission_from_scores_hand_case() -> None:
    scores, pids, refs, groups = _case()
    top50, top3 = cirr_submission_from_scores(scores, NAMES, pids, refs, groups)
    assert top50[0] == [f"g{i}" for i in range(1, 51)]
    assert top50[1] == [f"g{i}" for i in range(51) if i != 4]
    assert top50[2] == [f"g{i}" for i in range(54, 4, -1)]
    assert top3 == [["g2", "g3", "g7"], ["g1", "g10", "g20"], ["g25", "g24", "g23"]]
    with pytest.raises(MetricInputError, match="pair_ids has 2 entries"):
        cirr_submission_from_scores(scores, NAMES, pids[:2], refs, groups)


def test_submission_from_features_matches_scores() -> None:
    rng = np.random.default_rng(0)
    qf = rng.standard_normal((6, 8)).astype(np.float32)
    gf = rng.standard_normal((55, 8)).astype(np.float32)
    qf /= np.linalg.norm(qf, axis=1, keepdims=True)
    gf /= np.linalg.norm(gf, axis=1, keepdims=True)
    refs = [NAMES[i] for i in rng.integers(0, 55, 6)]
    groups = []
    for ref in refs:
        others = [n for n in NAMES if n != ref]
        groups.append([ref, *(others[i] for i in rng.choice(54, 5, replace=False))])
    pids = list(range(6))
    assert cirr_submission_from_features(qf, gf, NAMES, pids, refs, groups) == (
        cirr_submission_from_scores(qf @ gf.T, NAMES, pids, refs, groups)
    )


def test_write_round_trip(tmp_path: Path) -> None:
    scores, pids, refs, groups = _case()
    top50, top3 = cirr_submission_from_scores(scores, NAMES, pids, refs, groups)
    recall, subset = write_cirr_submission(tmp_path / "out", pids, top50, top3, name="run1")
    assert recall.name == "recall_submission_run1.json"
    assert subset.name == "recall_subset_submission_run1.json"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(
        [recall.name, subset.name]
    )  # no temp files left behind
    kw = {
        "expected_pair_ids": pids,
        "gallery_names": NAMES,
        "groups": dict(zip(pids, groups, strict=True)),
        "references": dict(zip(pids, refs, strict=True)),
    }
    assert validate_cirr_submission(recall, **kw) == []
    assert validate_cirr_submission(subset, **kw) == []
    payload = json.loads(recall.read_text())
    assert list(payload)[:3] == ["version", "metric", "101"]
    assert payload["metric"] == "recall" and payload["2024"] == top50[2]
    assert json.loads(subset.read_text())["7"] == ["g1", "g10", "g20"]
    # rewriting replaces the files
    write_cirr_submission(tmp_path / "out", pids, top50[::-1], top3, name="run1")
    assert json.loads(recall.read_text())["101"] == top50[2]


def test_writer_refuses_bad_lists(tmp_path: Path) -> None:
    scores, pids, refs, groups = _case()
    top50, top3 = cirr_submission_from_scores(scores, NAMES, pids, refs, groups)
    short = [top50[0], top50[1][:49], top50[2]]
    with pytest.raises(DataFormatError) as err:
        write_cirr_submission(tmp_path, pids, short, top3)
    assert err.value.record == "7" and err.value.field == "prediction"
    assert "exactly 50" in str(err.value) and "recall_submission_cirbench.json" in str(err.value)
    with pytest.raises(DataFormatError, match="2 pair ids but 3 prediction lists"):
        write_cirr_submission(tmp_path, pids[:2], top50, top3)
    with pytest.raises(DataFormatError, match="occur more than once"):
        write_cirr_submission(tmp_path, [1, 1, 2], top50, top3)
    with pytest.raises(ValueError, match="submission name"):
        write_cirr_submission(tmp_path, pids, top50, top3, name="../x")
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_validator_reports_each_problem(tmp_path: Path) -> None:
    good = [f"g{i}" for i in range(50)]
    bad = {
        "version": "rc1",
        "metric": "recall",
        "12": good[:49],  # too short
        "13": [*good[:49], "g0"],  # repeated name
        "x1": good,  # not a pair id
        "014": good,  # not canonical
        "15": [*good[:49], "zz"],  # not in the gallery
        "16": [*good[:49], 3],  # not a string
        "17": "g1",  # not a list
        "18": [*good[1:], "g54"],  # holds its reference g54
    }
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(bad))
    problems = validate_cirr_submission(
        path,
        expected_pair_ids=[12, 13, 15, 16, 17, 18, 19],
        gallery_names=NAMES,
        references={18: "g54"},
    )
    text = "\n".join(problems)
    assert all(p.startswith(str(path)) for p in problems)
    assert "field 'version': must be 'rc2', got 'rc1'" in text
    assert "record 12: field 'prediction': must hold exactly 50 names" in text
    assert "record 13: field 'prediction': repeated names ['g0']" in text
    assert "record x1: key is not a pair id" in text
    assert "record 014: key is not a pair id" in text
    assert "record 15: field 'prediction': 1 name(s) not in the gallery: ['zz']" in text
    assert "record 16: field 'prediction': names must be strings" in text
    assert "record 17: field 'prediction': must be a list" in text
    assert "record 18: field 'prediction': holds the reference image 'g54'" in text
    assert "field 'pairid': 1 of 7 expected pair ids are missing; first: ['19']" in text
    assert len(problems) == 10
    with pytest.raises(DataFormatError) as err:
        check_cirr_submission(path, expected_pair_ids=[12, 13, 15, 16, 17, 18, 19])
    assert err.value.file == str(path) and err.value.field == "version"
    assert "more problem" in str(err.value)


def test_validator_subset_membership_and_metric(tmp_path: Path) -> None:
    path = tmp_path / "subset.json"
    path.write_text(json.dumps({"version": "rc2", "metric": "recall_subset", "5": ["a", "b", "q"]}))
    groups = {5: ["r", "a", "b", "c", "d", "e"]}
    (problem,) = validate_cirr_submission(path, groups=groups)
    assert "record 5: field 'prediction': 1 name(s) not in the query's img_set: ['q']" in problem
    assert validate_cirr_submission(path) == []
    path.write_text(json.dumps({"version": "rc2", "metric": "recall_at_k", "5": ["a"]}))
    (problem,) = validate_cirr_submission(path)
    assert "field 'metric': must be one of ['recall', 'recall_subset']" in problem


def test_validator_unreadable_files(tmp_path: Path) -> None:
    path = tmp_path / "dup.json"
    path.write_text('{"version": "rc2", "metric": "recall_subset", "1": ["a","b","c"], "1": []}')
    (problem,) = validate_cirr_submission(path)
    assert "not valid JSON" in problem and "duplicate key '1'" in problem
    (problem,) = validate_cirr_submission(tmp_path / "missing.json")
    assert "cannot be read" in problem
    path.write_text("[1, 2]")
    with pytest.raises(DataFormatError, match="top level must be a JSON object"):
        check_cirr_submission(path)
