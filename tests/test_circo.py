"""CIRCO: reader (real files, bad input), mAP@k semantics, submissions, synthetic set."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pytest
from PIL import Image

from bench.config import ExperimentSpec, SpecError, parse_spec
from bench.core.arrays import ArrayCache
from bench.core.errors import DataFormatError, MetricInputError
from bench.formats.circo import (
    circo_query_text,
    image_file_name,
    load_circo_shared_concepts,
    load_circo_split,
)
from bench.formats.generated import read_generated, read_provenance
from bench.formats.stats import dataset_stats, format_stats
from bench.metrics import (
    check_circo_submission,
    circo_metrics,
    circo_metrics_from_features,
    circo_metrics_from_rankings,
    circo_submission,
    circo_submission_from_features,
    circo_submission_from_scores,
    validate_circo_submission,
    write_circo_submission,
)
from bench.spn.positives.pipeline import build_positives
from bench.synthetic import (
    CIRCO_SIZES,
    MAX_GTS,
    AttributeIndex,
    circo_attribute_baselines,
    circo_values,
    generate_circo,
)
from bench.synthetic.circo import plan_circo_images, plan_circo_queries
from bench.train.engine import train
from bench.train.session import build_session, run_dir_for
from tests.conftest import cirbench_home

KS = (5, 10, 25, 50)
VAL_KEYS = {
    "reference_img_id",
    "target_img_id",
    "relative_caption",
    "shared_concept",
    "gt_img_ids",
    "id",
    "semantic_aspects",
}
TEST_KEYS = {"reference_img_id", "relative_caption", "shared_concept", "id"}


def read(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def official_map(
    scores: np.ndarray,
    gallery: Sequence[str],
    gts: Sequence[Sequence[str]],
    refs: Sequence[str] | None = None,
) -> dict[str, float]:
    """A literal transcription of the official loop (miccunifi/CIRCO src/evaluation.py and
    SEARLE's circo_compute_val_metrics): top 50 by a stable sort, np.isin, cumsum."""
    aps: dict[int, list[float]] = {k: [] for k in KS}
    names = np.asarray(gallery)
    for q in range(scores.shape[0]):
        order = names[np.argsort(-scores[q], kind="stable")]
        if refs is not None:
            order = order[order != refs[q]]
        labels = np.isin(order[:50], gts[q])
        precisions = np.cumsum(labels) * labels / np.arange(1, labels.shape[0] + 1)
        for k in KS:
            aps[k].append(float(np.sum(precisions[:k]) / min(len(gts[q]), k)))
    return {f"mAP@{k}": float(np.mean(aps[k]) * 100) for k in KS}


def assert_close(a: dict[str, float], b: dict[str, float]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert a[key] == pytest.approx(b[key], abs=1e-9), key


# --------------------------------------------------------------------------- real files


@pytest.fixture(scope="module")
def circo_root(shared_data: Path) -> Path:
    return shared_data / "circo"


def test_real_annotations_counts(circo_root: Path) -> None:
    val = load_circo_split(circo_root, "val", images=False)
    test = load_circo_split(circo_root, "test", images=False)
    assert (len(val.queries), len(test.queries)) == (220, 800)
    assert val.findings == [] and test.findings == []
    assert val.gallery == [] and test.gallery == []  # no image index, images not read
    assert sum(len(q.targets) for q in val.queries) == 916
    assert min(len(q.targets) for q in val.queries) == 1
    assert max(len(q.targets) for q in val.queries) == 14
    assert all(q.targets[0] == q.target for q in val.queries)
    assert all(q.reference not in q.targets for q in val.queries)
    assert all(q.target is None and q.targets == () for q in test.queries)
    assert [q.query_id for q in val.queries] == [str(i) for i in range(220)]
    assert len({q.reference for q in test.queries}) == 798
    first = val.queries[0]
    assert (first.reference, first.target, first.targets) == (
        "271520",
        "355099",
        ("355099", "528417", "534704"),
    )
    assert first.captions == ("shows two people and has a more colorful background",)
    concepts = load_circo_shared_concepts(circo_root, "val")
    assert concepts["0"] == "a girl with a traditional Chinese umbrella" and len(concepts) == 220
    assert circo_query_text(first.captions[0]) == (
        "a photo of $ that shows two people and has a more colorful background"
    )


def test_real_stats(circo_root: Path) -> None:
    stats = dataset_stats("circo", circo_root, images=False)
    assert stats["errors"] == 0 and stats["warnings"] == 0
    assert stats["splits"]["val"]["queries"] == 220
    assert stats["splits"]["val"]["mean_gt"] == pytest.approx(916 / 220, abs=1e-4)
    assert stats["splits"]["test"]["mean_gt"] is None
    assert stats["splits"]["val"]["images"] is None  # gallery unknown without the index
    table = format_stats(stats)
    assert "mean gt" in table and "4.16" in table


def test_real_annotations_without_images_report_missing_files(circo_root: Path) -> None:
    split = load_circo_split(circo_root, "val", strict=False)
    assert split.queries == []
    errors = [f for f in split.findings if f.severity == "error"]
    assert "image folder not found" in errors[0].message
    assert errors[1].count == 1121 and "000000000050.jpg" in errors[1].message
    with pytest.raises(DataFormatError, match="image folder not found"):
        load_circo_split(circo_root, "val")


# --------------------------------------------------------------------------- bad input

IDS = [101, 202, 303, 404, 505, 606]


def make_circo(root: Path, *, with_index: bool = True, images: Sequence[int] = ()) -> Path:
    """A two-query CIRCO folder: annotations, optionally the image index and JPEGs."""
    val = [
        {
            "reference_img_id": 101,
            "target_img_id": 202,
            "relative_caption": "has a dog",
            "shared_concept": "a red car",
            "gt_img_ids": [202, 303],
            "id": 0,
            "semantic_aspects": ["addition"],
        },
        {
            "reference_img_id": 404,
            "target_img_id": 505,
            "relative_caption": "is at night",
            "shared_concept": "a bridge",
            "gt_img_ids": [505],
            "id": 1,
            "semantic_aspects": [],
        },
    ]
    test = [{"reference_img_id": 606, "relative_caption": "x", "shared_concept": "y", "id": 0}]
    (root / "annotations").mkdir(parents=True)
    (root / "annotations" / "val.json").write_text(json.dumps(val))
    (root / "annotations" / "test.json").write_text(json.dumps(test))
    coco = root / "COCO2017_unlabeled"
    if with_index:
        info = {"images": [{"id": i, "file_name": image_file_name(i)} for i in IDS]}
        (coco / "annotations").mkdir(parents=True)
        (coco / "annotations" / "image_info_unlabeled2017.json").write_text(json.dumps(info))
    if images:
        (coco / "unlabeled2017").mkdir(parents=True)
        for i in images:
            Image.new("RGB", (8, 8), (i % 256, 0, 0)).save(coco / "unlabeled2017" / f"{i:012d}.jpg")
    return root


def corrupt(path: Path, edit) -> None:
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


def test_good_folder_reads_clean(tmp_path: Path) -> None:
    root = make_circo(tmp_path, images=IDS)
    split = load_circo_split(root, "val")
    assert split.findings == [] and split.gallery == [str(i) for i in IDS]
    assert [q.targets for q in split.queries] == [("202", "303"), ("505",)]
    assert split.open_image("303").size == (8, 8)
    assert load_circo_split(root, "test").queries[0].target is None
    with pytest.raises(ValueError, match="unknown CIRCO split"):
        load_circo_split(root, "train")
    moved = (root / "COCO2017_unlabeled").rename(tmp_path / "coco")  # COCO kept elsewhere
    assert load_circo_split(root, "val", image_root=moved).gallery == split.gallery


@pytest.mark.parametrize(
    ("edit", "pattern"),
    [
        (lambda d: d[1].pop("relative_caption"), "record 1: field 'relative_caption': missing"),
        (lambda d: d[0].update(reference_img_id="101"), "field 'reference_img_id': expected int"),
        (lambda d: d[0].update(id=True), "record 0: field 'id': expected int, got bool"),
        (lambda d: d[0].update(gt_img_ids=[303]), "target_img_id 202 is not among the gt_img_ids"),
        (lambda d: d[0].update(gt_img_ids=[202, 202]), "repeated ground truth ids \\[202\\]"),
        (lambda d: d[0].update(gt_img_ids=[202, "303"]), "field 'gt_img_ids': expected a non-neg"),
        (lambda d: d[0].update(gt_img_ids=[]), "empty list of ground truths"),
        (lambda d: d[1].update(id=0), "record 1: field 'id': duplicate query id 0"),
        (lambda d: d[1].pop("gt_img_ids"), "record 1: field 'gt_img_ids': missing field"),
        (lambda d: d[0].update(gt_img_ids=[202, 999]), "image 999 is not in image_info"),
        (lambda d: d[0].update(semantic_aspects=[1]), "field 'semantic_aspects'"),
    ],
)
def test_bad_records_name_file_record_and_field(tmp_path: Path, edit, pattern: str) -> None:
    root = make_circo(tmp_path)
    corrupt(root / "annotations" / "val.json", edit)
    with pytest.raises(DataFormatError, match=pattern) as info:
        load_circo_split(root, "val", images=False)
    assert "val.json" in str(info.value)
    lenient = load_circo_split(root, "val", images=False, strict=False)
    assert len(lenient.queries) == 1  # the bad record is skipped, the other kept
    assert [f.severity for f in lenient.findings] == ["error"]


def test_quirks_are_warnings(tmp_path: Path) -> None:
    root = make_circo(tmp_path)

    def edit(d: list) -> None:
        d[0]["gt_img_ids"] = [303, 202, 101]  # target not first, reference among gts
        d[1]["id"] = 7  # id differs from the position

    corrupt(root / "annotations" / "val.json", edit)
    split = load_circo_split(root, "val", images=False)
    assert len(split.queries) == 2
    messages = sorted(f.message for f in split.findings)
    assert all(f.severity == "warning" for f in split.findings) and len(messages) == 3
    assert any("not the first gt" in m for m in messages)
    assert any("reference is among its gts" in m for m in messages)
    assert any("differs from their position" in m for m in messages)


def test_malformed_files(tmp_path: Path) -> None:
    root = make_circo(tmp_path)
    (root / "annotations" / "val.json").write_text("[{")
    with pytest.raises(DataFormatError, match=r"val.json: malformed JSON at line 1"):
        load_circo_split(root, "val", images=False)
    info = root / "COCO2017_unlabeled" / "annotations" / "image_info_unlabeled2017.json"
    info.write_text(json.dumps({"images": [{"id": 1, "file_name": 5}]}))
    with pytest.raises(DataFormatError, match=r"record 0: field 'images\.file_name'"):
        load_circo_split(root, "test", images=False)
    info.write_text(json.dumps([1, 2]))
    with pytest.raises(DataFormatError, match='"images" list'):
        load_circo_split(root, "test", images=False)


def test_missing_image_files(tmp_path: Path) -> None:
    # With the index: missing files are one error with a count, their queries are skipped.
    root = make_circo(tmp_path / "indexed", images=[101, 202, 404, 505, 606])
    with pytest.raises(DataFormatError, match="1 of 6 images listed here are missing"):
        load_circo_split(root, "val")
    split = load_circo_split(root, "val", strict=False)
    assert [q.query_id for q in split.queries] == ["1"] and "303" not in split.gallery
    assert [f.severity for f in split.findings] == ["error", "warning"]
    # Without the index the folder is the gallery (sorted by id); absent ids are an error.
    root = make_circo(tmp_path / "folder", with_index=False, images=[606, 101, 202, 404, 505])
    split = load_circo_split(root, "val", strict=False)
    assert split.gallery == ["101", "202", "404", "505", "606"]
    assert [q.query_id for q in split.queries] == ["1"]
    [error] = split.findings
    assert error.count == 1 and "000000000303.jpg" in error.message
    # Annotations only, no index: no gallery, nothing checked.
    split = load_circo_split(root, "val", images=False)
    assert split.gallery == [] and len(split.queries) == 2 and split.findings == []


# --------------------------------------------------------------------------- mAP semantics

ABC = list("abcdefgh")
DESC = np.arange(8, 0, -1, dtype=float)  # a best ... h worst


def test_map_hand_case_reference_kept() -> None:
    # Ranking a b c d e f g h; reference a stays in it (official). gts {b, d}:
    # precisions at ranks 2 and 4 are 1/2 and 2/4 -> AP@k = (0.5 + 0.5) / min(2, k) = 0.5.
    out = circo_metrics(DESC[None], ABC, ["a"], [["b", "d"]])
    assert out == {"mAP@5": 50.0, "mAP@10": 50.0, "mAP@25": 50.0, "mAP@50": 50.0}
    # Unofficial variant: reference removed -> b at 1, d at 3: (1 + 2/3) / 2.
    dropped = circo_metrics(DESC[None], ABC, ["a"], [["b", "d"]], drop_reference=True)
    assert dropped["mAP@5"] == pytest.approx(100 * (1 + 2 / 3) / 2)


def test_map_normalisation_and_gts_beyond_k() -> None:
    g12 = [f"g{i}" for i in range(12)]
    scores = np.arange(12, 0, -1, dtype=float)[None].repeat(3, axis=0)
    gts = [
        ["g0", "g7"],  # AP@5 = 1/2; AP@10 = (1 + 2/8) / 2
        [f"g{i}" for i in range(7)],  # 7 gts on top: AP@5 = 5/min(7,5) = 1, AP@10 = 7/7
        ["g11", "g3"],  # g3 at rank 4: AP@5 = (1/4)/2; g11 at 12: AP@25 = (1/4 + 2/12)/2
    ]
    out = circo_metrics(scores, g12, None, gts)
    assert out["mAP@5"] == pytest.approx(100 * (0.5 + 1 + 0.125) / 3)
    assert out["mAP@10"] == pytest.approx(100 * (0.625 + 1 + 0.125) / 3)
    assert out["mAP@25"] == pytest.approx(100 * (0.625 + 1 + (0.25 + 2 / 12) / 2) / 3)
    assert_close(out, official_map(scores, g12, gts))
    # gt order within the list does not matter
    assert out == circo_metrics(scores, g12, None, [g[::-1] for g in gts])


def test_map_ties_follow_gallery_order() -> None:
    # All scores equal: ranking = gallery order. gts {c, a}: ranks 1 and 3 -> (1 + 2/3) / 2.
    out = circo_metrics(np.ones((1, 8)), ABC, ["h"], [["c", "a"]])
    assert out["mAP@5"] == pytest.approx(100 * (1 + 2 / 3) / 2)
    # Reference c tied with the gts and listed before e: removing it moves e up.
    scores = np.array([[0.1, 0.1, 0.5, 0.1, 0.5, 0.1, 0.1, 0.1]])
    kept = circo_metrics(scores, ABC, ["c"], [["e"]])
    dropped = circo_metrics(scores, ABC, ["c"], [["e"]], drop_reference=True)
    assert (kept["mAP@5"], dropped["mAP@5"]) == (50.0, 100.0)


def test_map_from_rankings() -> None:
    rankings = [list("abcdefgh"), list("hgfedcba")]
    out = circo_metrics_from_rankings(rankings, [["b", "d"], ["z"]])
    assert out["mAP@5"] == 25.0  # (0.5 + 0) / 2; "z" never retrieved
    with pytest.raises(MetricInputError, match="query 0: the ranking repeats"):
        circo_metrics_from_rankings([list("abca")], [["a"]])


def test_map_errors_name_the_query() -> None:
    with pytest.raises(MetricInputError, match=r"query 1: 'zz'"):
        circo_metrics(np.ones((2, 8)), ABC, None, [["a"], ["b", "zz"]])
    with pytest.raises(MetricInputError, match=r"repeated ground truths; first: query 0"):
        circo_metrics(np.ones((1, 8)), ABC, None, [["a", "a"]])
    with pytest.raises(MetricInputError, match="empty ground truth list; first: query 1"):
        circo_metrics(np.ones((2, 8)), ABC, None, [["a"], []])
    with pytest.raises(MetricInputError, match="not str"):
        circo_metrics(np.ones((1, 8)), ABC, None, ["a"])
    with pytest.raises(MetricInputError, match="needs reference_names"):
        circo_metrics(np.ones((1, 8)), ABC, None, [["a"]], drop_reference=True)
    with pytest.raises(MetricInputError, match="gt_names has 1 entries"):
        circo_metrics(np.ones((2, 8)), ABC, None, [["a"]])


def _random_case(seed: int, q: int = 40, g: int = 300) -> tuple:
    rng = np.random.default_rng(seed)
    gallery = [f"im{i}" for i in range(g)]
    scores = rng.integers(0, 40, size=(q, g)).astype(np.float64)  # many ties
    refs = [gallery[i] for i in rng.integers(0, g, size=q)]
    gts = []
    for r in refs:
        n = int(rng.integers(1, 24))
        pool = [x for x in rng.choice(g, size=n + 1, replace=False) if gallery[x] != r][:n]
        gts.append([gallery[x] for x in pool])
    # make some gts rank high
    for row, names in enumerate(gts):
        for name in names[:3]:
            scores[row, gallery.index(name)] += 30
    return scores, gallery, refs, gts


@pytest.mark.parametrize("seed", [0, 1])
def test_map_equals_official_loop_on_random_data(seed: int) -> None:
    scores, gallery, refs, gts = _random_case(seed)
    assert_close(circo_metrics(scores, gallery, refs, gts), official_map(scores, gallery, gts))
    assert_close(
        circo_metrics(scores, gallery, refs, gts, drop_reference=True),
        official_map(scores, gallery, gts, refs),
    )
    rankings = [[gallery[i] for i in np.argsort(-row, kind="stable")[:50]] for row in scores]
    assert_close(circo_metrics_from_rankings(rankings, gts), official_map(scores, gallery, gts))


@pytest.mark.parametrize("drop", [False, True])
def test_faiss_equals_scores(drop: bool) -> None:
    rng = np.random.default_rng(3)
    q, g, d = 60, 500, 32
    gf = rng.normal(size=(g, d)).astype(np.float32)
    gf[250:260] = gf[0:10]  # exact duplicates: ties
    gf /= np.linalg.norm(gf, axis=1, keepdims=True)
    gallery = [str(1000 + i) for i in range(g)]
    gt_idx = [rng.choice(g, size=int(rng.integers(1, 15)), replace=False) for _ in range(q)]
    qf = np.stack([gf[idx].mean(axis=0) for idx in gt_idx]) + 0.05 * rng.normal(size=(q, d))
    qf = qf.astype(np.float32)
    qf[:5] = gf[0:5]  # queries equal to duplicated gallery rows: ties at the top
    refs = [gallery[int(i)] for i in rng.integers(0, g, size=q)]
    gts = [
        [gallery[i] for i in idx if gallery[i] != refs[n]] or [gallery[0]]
        for n, idx in enumerate(gt_idx)
    ]
    qn = qf / np.linalg.norm(qf, axis=1, keepdims=True)
    scores = qn @ gf.T
    from_scores = circo_metrics(scores, gallery, refs, gts, drop_reference=drop)
    from_features = circo_metrics_from_features(qf, gf, gallery, refs, gts, drop_reference=drop)
    assert_close(from_scores, from_features)
    assert from_scores["mAP@50"] > 20.0  # the case is not trivially all-miss


# --------------------------------------------------------------------------- submissions


def test_real_submission_examples_validate(circo_root: Path) -> None:
    for split in ("val", "test"):
        ids = [q.query_id for q in load_circo_split(circo_root, split, images=False).queries]
        path = circo_root / "submission_examples" / f"submission_{split}.json"
        assert validate_circo_submission(path, expected_query_ids=ids) == []
        assert validate_circo_submission(path) == []  # keys are 0..n-1
        payload = check_circo_submission(path, expected_query_ids=ids)
        assert len(payload) == len(ids) and all(len(v) == 50 for v in payload.values())
    # The val example scored with the official formula (computed by hand from its lists).
    val = load_circo_split(circo_root, "val", images=False)
    payload = check_circo_submission(circo_root / "submission_examples" / "submission_val.json")
    out = circo_metrics_from_rankings(
        [payload[q.query_id] for q in val.queries], [list(q.targets) for q in val.queries]
    )
    expected = {"mAP@5": 0.48611, "mAP@10": 0.51777, "mAP@25": 0.54004, "mAP@50": 0.60204}
    for key, value in expected.items():
        assert out[key] == pytest.approx(value, abs=1e-5)


def test_submission_writer_round_trip(tmp_path: Path) -> None:
    gallery = [str(10 * i + 1) for i in range(80)]
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(3, 80))
    top = circo_submission_from_scores(scores, gallery)
    assert top == [[gallery[i] for i in np.argsort(-row, kind="stable")[:50]] for row in scores]
    features = circo_submission_from_features(
        rng.normal(size=(3, 8)), rng.normal(size=(80, 8)), gallery
    )
    assert all(len(t) == 50 for t in features)
    path = write_circo_submission(tmp_path / "sub" / "circo_test.json", [0, 1, 2], top)
    data = read(path)
    assert list(data) == ["0", "1", "2"] and data["0"] == [int(n) for n in top[0]]
    assert path.read_text().startswith('{"0": [')
    assert (
        validate_circo_submission(path, expected_query_ids=[0, 1, 2], gallery_names=gallery) == []
    )
    assert check_circo_submission(path)["1"] == top[1]
    assert circo_submission([0], [[int(n) for n in top[0]]]) == {"0": data["0"]}


@pytest.mark.parametrize(
    ("ids", "lists", "pattern"),
    [
        ([0], [[str(i) for i in range(49)]], "record 0: field 'prediction'.*exactly 50"),
        ([0], [["5"] * 50], "repeated image ids \\[5\\]"),
        ([0], [["a"] + [str(i) for i in range(49)]], "non-negative integers, got \\['a'\\]"),
        ([0, 0], [[str(i) for i in range(50)]] * 2, "occur more than once"),
        ([0, 1], [[str(i) for i in range(50)]], "2 query ids but 1 prediction lists"),
    ],
)
def test_submission_writer_rejects_bad_payloads(
    tmp_path: Path, ids: list, lists: list, pattern: str
) -> None:
    with pytest.raises(DataFormatError, match=pattern):
        write_circo_submission(tmp_path / "x.json", ids, lists)
    assert not (tmp_path / "x.json").exists()


def test_submission_validator_reports_problems(tmp_path: Path) -> None:
    good = list(range(50))
    cases = {
        "gap.json": ({"0": good, "2": good}, "1 of 2 expected query ids are missing"),
        "bool.json": ({"0": [True, *good[1:]]}, "non-negative integers, got [True]"),
        "key.json": ({"x": good, "0": good}, "record x: key is not a query id"),
        "list.json": ({"0": "abc"}, "must be a list, got str"),
    }
    for name, (payload, message) in cases.items():
        (tmp_path / name).write_text(json.dumps(payload))
        problems = validate_circo_submission(tmp_path / name)
        assert any(message in p for p in problems), (name, problems)
    (tmp_path / "dup.json").write_text(f'{{"0": {good}, "0": {good}}}')
    assert "duplicate key" in validate_circo_submission(tmp_path / "dup.json")[0]
    (tmp_path / "ok.json").write_text(json.dumps({"0": [str(i) for i in good]}))
    assert validate_circo_submission(tmp_path / "ok.json") == []  # SEARLE's string ids
    problems = validate_circo_submission(
        tmp_path / "ok.json", expected_query_ids=[0, 1], gallery_names=["1", "2"]
    )
    assert any("48 image id(s) not in the gallery" in p for p in problems)
    assert any("expected query ids are missing" in p for p in problems)
    with pytest.raises(DataFormatError, match="expected query ids are missing"):
        check_circo_submission(tmp_path / "ok.json", expected_query_ids=[0, 1])


# --------------------------------------------------------------------------- synthetic CIRCO


def digest(root: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        h.update(str(path.relative_to(root)).encode())
        h.update(hashlib.sha256(path.read_bytes()).digest())
    return h.hexdigest()


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("circo-synth")
    summary = generate_circo(root, seed=0, size="tiny", progress=False)
    assert summary == read(root / "circo" / "metadata" / "synthetic_circo.json")
    return root


def test_synthetic_has_the_official_format(synth: Path, circo_root: Path) -> None:
    base = synth / "circo"
    spec = CIRCO_SIZES["tiny"]
    real_val = read(circo_root / "annotations" / "val.json")
    assert set(real_val[0]) == VAL_KEYS
    assert set(read(circo_root / "annotations" / "test.json")[0]) == TEST_KEYS
    info = read(base / "COCO2017_unlabeled" / "annotations" / "image_info_unlabeled2017.json")
    ids = [im["id"] for im in info["images"]]
    assert len(ids) == len(set(ids)) == spec.images
    for split, keys in (("val", VAL_KEYS), ("test", TEST_KEYS)):
        records = read(base / "annotations" / f"{split}.json")
        assert len(records) == spec.queries[split]
        assert [r["id"] for r in records] == list(range(len(records)))
        for r in records:
            assert set(r) == keys
            assert isinstance(r["reference_img_id"], int) and r["reference_img_id"] in ids
            assert r["relative_caption"].strip() and r["shared_concept"].strip()
            if split == "val":
                assert r["gt_img_ids"][0] == r["target_img_id"]
                assert MAX_GTS >= len(r["gt_img_ids"]) >= 2  # multiple ground truths
                assert r["reference_img_id"] not in r["gt_img_ids"]
        split_data = load_circo_split(base, split, images=True, strict=True)
        assert split_data.findings == [] and len(split_data.queries) == len(records)
        assert len(split_data.gallery) == spec.images
    files = sorted((base / "COCO2017_unlabeled" / "unlabeled2017").iterdir())
    assert [f.name for f in files] == sorted(image_file_name(i) for i in ids)
    with Image.open(files[0]) as im:
        im.load()
        assert (im.format, im.mode) == ("JPEG", "RGB") and "exif" not in im.info
        assert im.size in {(64, 64), (80, 64), (64, 80)}
    stats = dataset_stats("circo", base)
    assert stats["errors"] == 0 and stats["splits"]["val"]["mean_gt"] >= 2


def test_synthetic_gts_are_exactly_the_matching_images(synth: Path) -> None:
    base = synth / "circo"
    meta = read(base / "metadata" / "images.json")
    gallery = load_circo_split(base, "val", images=False).gallery
    table = AttributeIndex([meta[n]["attributes"] for n in gallery])
    for split in ("val", "test"):
        for side in read(base / "metadata" / f"queries.{split}.json"):
            ref = meta[side["reference"]]["attributes"]
            assert set(side["changes"]) and not set(side["changes"]) & set(side["free"])
            assert "shape" in side["kept"]
            wanted = {**ref, **side["changes"]}
            constrained = [a for a in table.attributes if a not in side["free"]]
            ok = np.ones(len(gallery), dtype=bool)
            for a in constrained:
                ok &= table.matrix[:, table.attributes.index(a)] == table.codes[a][wanted[a]]
            assert sorted(gallery[i] for i in np.flatnonzero(ok)) == sorted(side["gts"])
            assert side["target"] == side["gts"][0]
    val = read(base / "annotations" / "val.json")
    sides = read(base / "metadata" / "queries.val.json")
    assert [[str(g) for g in r["gt_img_ids"]] for r in val] == [s["gts"] for s in sides]


def test_synthetic_is_deterministic_and_guards_folders(synth: Path, tmp_path: Path) -> None:
    generate_circo(tmp_path / "again", seed=0, size="tiny", progress=False)
    assert digest(tmp_path / "again" / "circo") == digest(synth / "circo")
    generate_circo(tmp_path / "again", seed=0, size="tiny", progress=False)  # replaces itself
    assert digest(tmp_path / "again" / "circo") == digest(synth / "circo")
    generate_circo(tmp_path / "other", seed=1, size="tiny", progress=False)
    assert digest(tmp_path / "other" / "circo") != digest(synth / "circo")
    (tmp_path / "foreign" / "circo").mkdir(parents=True)
    (tmp_path / "foreign" / "circo" / "keep.txt").write_text("not ours")
    with pytest.raises(FileExistsError, match="not a synthetic CIRCO folder"):
        generate_circo(tmp_path / "foreign", size="tiny", progress=False)
    with pytest.raises(ValueError, match="unknown size"):
        generate_circo(tmp_path / "x", size="huge", progress=False)


def test_synthetic_attribute_baselines(synth: Path) -> None:
    for split in ("val", "test"):
        out = circo_attribute_baselines(synth, split)
        assert out["oracle"] == {f"mAP@{k}": 100.0 for k in KS}
        for ranker in ("image_only", "text_only"):
            assert out[ranker]["mAP@10"] < 25.0, (split, ranker, out[ranker])
            assert out[ranker]["mAP@50"] < 35.0, (split, ranker, out[ranker])


@pytest.mark.parametrize("size", ["small", "default"])
def test_larger_sizes_can_be_planned(size: str) -> None:
    spec = CIRCO_SIZES[size]
    values = circo_values(size)
    images = plan_circo_images(0, spec, values)
    queries = plan_circo_queries(0, spec, images, values)
    assert {s: len(q) for s, q in queries.items()} == spec.queries
    gts = [len(q["gts"]) for s in queries.values() for q in s]
    assert min(gts) >= 2 and max(gts) <= MAX_GTS and 3.0 <= float(np.mean(gts)) <= 9.0
    refs = [q["reference"] for s in queries.values() for q in s]
    assert len(refs) == len(set(refs))


# --------------------------------------------------------------------------- zero-shot training
# CIRCO has no training split: a CIRCO run trains on generated triplets from an out-of-
# domain pool (written as CIRR caption records next to the CIRCO annotations), then
# optionally the bank stage, and is scored on CIRCO val with mAP@K.

ZS_NAME = "zs-circo"
ZS_POSITIVES = {
    "name": ZS_NAME,
    "captioner": "oracle",
    "pool": "pool",
    "backbone": {"pretrained": "random"},
    "rank_lo": 1,
    "rank_hi": 30,
    "K": 96,
    "templates": ["instead", "unlike"],
}


def circo_spec(**spn: Any) -> ExperimentSpec:
    return parse_spec(
        {
            "name": "circo-zs-tiny",
            "experiment": "cirbench-circo-tests",
            "dataset": {"format": "circo", "synthetic_size": "tiny"},
            "backbone": {"pretrained": "random"},
            "train": {"epochs": 1, "batch_size": 16, "phases": {"combiner": {"epochs": 1}}},
            "eval": {"batch_size": 128},
            "spn": {"zero_shot": True, "positives": ZS_POSITIVES, **spn},
        }
    )


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    yield from cirbench_home(tmp_path_factory)


def test_circo_without_zero_shot_is_a_clear_error(synth: Path, tmp_path: Path) -> None:
    data = circo_spec().model_dump(mode="json")
    with pytest.raises(SpecError, match=r"CIRCO has no training split.*spn\.zero_shot: true"):
        parse_spec({**data, "spn": {}})
    with pytest.raises(SpecError, match="CIRCO has no training split"):  # P without zero-shot
        parse_spec({**data, "spn": {"positives": ZS_POSITIVES}})
    train_pool = {**ZS_POSITIVES, "pool": "train"}
    with pytest.raises(SpecError, match=r"pool 'train'.*does not exist for CIRCO"):
        parse_spec({**data, "spn": {"zero_shot": True, "positives": train_pool}})
    with pytest.raises(ValueError, match="CIRCO has no training split"):  # the pipeline too
        build_positives(
            synth / "circo", "circo", train_pool, cache=ArrayCache(tmp_path), progress=False
        )


def test_circo_zero_shot_end_to_end(home: Path) -> None:
    spec = circo_spec()
    assert spec.spn.composition.name == "ZS-ood"
    session = build_session(spec, progress=False, pretrained=False)
    root = session.data.root
    assert session.data.train == [] and session.data.train_split == []
    epoch = session.epoch_triplets(0)
    assert len(epoch) == 96 and all(t.source == f"generated/{ZS_NAME}" for t in epoch)
    # the layout: CIRR caption records + image split next to the annotations, provenance
    ann = root / "annotations"
    records = read(ann / f"cap.rc2.train.extend_{ZS_NAME}.json")
    assert len(records) == 96 and {"pairid", "reference", "target_hard", "caption"} <= set(
        records[0]
    )
    mapping = read(ann / f"split.rc2.train.extend_{ZS_NAME}.json")
    assert all(p.startswith(f"./extend_{ZS_NAME}/") for p in mapping.values())
    provenance = read_provenance(root, "circo", ZS_NAME)
    assert provenance is not None and provenance["format"] == "circo"
    assert provenance["pool"]["kind"] == "pool" and "CIRCO" in provenance["layout"]
    triplets, paths = read_generated(root, "circo", ZS_NAME)
    assert [(t.reference, t.target) for t in triplets] == [(t.reference, t.target) for t in epoch]
    # training images: the generated set's pool images only, one-object pool images,
    # none of them a CIRCO image; the CIRCO split reads as before
    assert set(session.pool_names) == set(paths)
    assert all(n.startswith("pool-fiq-") for n in session.pool_names)
    val = load_circo_split(root, "val")
    assert val.findings == [] and len(val.gallery) == CIRCO_SIZES["tiny"].images
    assert set(val.gallery).isdisjoint(session.pool_names)

    result = train(spec, progress=False)
    assert [h["phase"] for h in result.history] == ["finetune", "combiner"]
    assert set(result.metrics) == {f"mAP@{k}" for k in KS}
    assert all(0.0 <= v <= 100.0 for v in result.metrics.values())
    run = mlflow.MlflowClient().get_run(result.mlflow_run_id)
    assert {"val.mAP_at_5", "val.mAP_at_50", "final.mAP_at_10"} <= set(run.data.metrics)
    assert run.data.metrics["final.mAP_at_10"] == pytest.approx(result.metrics["mAP@10"])
    assert run.data.tags["cirbench.composition"] == "ZS-ood"
    assert run.data.tags["cirbench.dataset"] == "circo"

    with_bank = circo_spec(negatives={"epochs": 1, "batch_size": 32, "half_bank": True})
    assert with_bank.spn.composition.name == "ZS-ood+N"
    assert run_dir_for(with_bank.stage1_spec()) == result.run_dir  # ZS is its stage 1
    bank_result = train(with_bank, progress=False)
    assert [h["phase"] for h in bank_result.history] == ["spn_negatives"]
    assert set(bank_result.metrics) == {f"mAP@{k}" for k in KS}
    run = mlflow.MlflowClient().get_run(bank_result.mlflow_run_id)
    assert run.data.tags["cirbench.composition"] == "ZS-ood+N"
    assert run.data.tags["cirbench.stage1_checkpoint"] == str(result.best_checkpoint)
