"""Readers of the official FashionIQ / CIRR layouts: real files, bad input, images, TargetPad."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bench.core.errors import DataFormatError
from bench.formats.cirr import load_cirr_split
from bench.formats.fashioniq import fashioniq_query_text, load_fashioniq_split
from bench.images.transforms import TargetPadTransform, target_pad

# ---------------------------------------------------------------- real annotation files


@pytest.mark.parametrize(
    ("category", "split", "queries", "images"),
    [
        ("dress", "val", 2017, 3817),
        ("shirt", "val", 2038, 6346),
        ("toptee", "val", 1961, 5373),
        ("dress", "train", 5985, 11452),
        ("toptee", "test", 2056, 5374),
    ],
)
def test_real_fashioniq_counts(shared_data, category, split, queries, images):
    data = load_fashioniq_split(shared_data / "fashioniq", category, split, images=False)
    assert (len(data.queries), len(data.gallery)) == (queries, images)
    assert data.has_targets == (split != "test")
    q = data.queries[0]
    assert len(q.captions) == 2 and q.reference in data.gallery


def test_real_fashioniq_empty_captions_are_a_warning(shared_data):
    data = load_fashioniq_split(shared_data / "fashioniq", "toptee", "val", images=False)
    [finding] = data.findings
    assert finding.severity == "warning" and finding.count == 2 and finding.field == "captions"


def test_real_cirr_val_and_test1(shared_data):
    val = load_cirr_split(shared_data / "cirr", "val", images=False)
    assert (len(val.queries), len(val.gallery)) == (4181, 2297)
    first = val.queries[0]
    assert first.query_id == "12060" and first.target == "dev-1028-1-img1"
    assert len(first.group) == 6 and first.reference in first.group
    assert [f.count for f in val.findings] == [42]  # hard/soft target disagreement quirk
    test = load_cirr_split(shared_data / "cirr", "test1", images=False)
    assert (len(test.queries), len(test.gallery)) == (4148, 2315)
    assert all(q.target is None for q in test.queries)


def test_real_cirr_paths_resolve_against_root(shared_data):
    val = load_cirr_split(shared_data / "cirr", "val", images=False)
    assert val.image_paths["dev-244-0-img0"] == shared_data / "cirr" / "dev" / "dev-244-0-img0.png"


def test_fashioniq_query_text_joins_as_clip4cir():
    assert fashioniq_query_text(("is shiny and silver.", "fit and flare")) == (
        "Is shiny and silver and fit and flare"
    )
    assert fashioniq_query_text(("", " is red ")) == "Is red"


# ---------------------------------------------------------------- small hand-made folders


def write_json(path: Path, data: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


def make_fashioniq(root: Path, *, with_images: bool = True) -> Path:
    names = ["a", "b", "c", "d"]
    write_json(root / "image_splits" / "split.dress.val.json", names)
    write_json(
        root / "captions" / "cap.dress.val.json",
        [
            {"candidate": "a", "target": "b", "captions": ["is red", "has dots"]},
            {"candidate": "c", "target": "d", "captions": ["is blue", "is long"]},
        ],
    )
    if with_images:
        (root / "images").mkdir(parents=True, exist_ok=True)
        for name in names:
            Image.new("RGB", (8, 10), "red").save(root / "images" / f"{name}.png")
    return root


def make_cirr(root: Path, *, with_images: bool = True) -> Path:
    names = [f"dev-{i}-img0" for i in range(6)]
    write_json(root / "image_splits" / "split.rc2.val.json", {n: f"./dev/{n}.png" for n in names})
    write_json(
        root / "captions" / "cap.rc2.val.json",
        [
            {
                "pairid": 7,
                "reference": names[0],
                "target_hard": names[1],
                "target_soft": {names[1]: 1.0},
                "caption": "add a dog",
                "img_set": {"id": 1, "members": names, "reference_rank": 0, "target_rank": 1},
            }
        ],
    )
    if with_images:
        (root / "dev").mkdir(parents=True, exist_ok=True)
        for name in names:
            Image.new("RGB", (10, 8), "blue").save(root / "dev" / f"{name}.png")
    return root


def test_hand_made_folders_read_clean(tmp_path):
    fiq = load_fashioniq_split(make_fashioniq(tmp_path / "fiq"), "dress", "val")
    assert [q.target for q in fiq.queries] == ["b", "d"] and fiq.findings == []
    assert fiq.open_image("a").size == (8, 10)
    cirr = load_cirr_split(make_cirr(tmp_path / "cirr"), "val")
    assert cirr.queries[0].group[1] == "dev-1-img0" and cirr.findings == []
    assert cirr.open_image("dev-0-img0").mode == "RGB"


def test_official_cirr_dataset_layout(tmp_path):
    """cirr_dataset/ with annotations under cirr/ and images beside them."""
    root = tmp_path / "cirr_dataset"
    make_cirr(tmp_path / "tmp")
    (root / "cirr").mkdir(parents=True)
    (tmp_path / "tmp" / "captions").rename(root / "cirr" / "captions")
    (tmp_path / "tmp" / "image_splits").rename(root / "cirr" / "image_splits")
    (tmp_path / "tmp" / "dev").rename(root / "dev")
    data = load_cirr_split(root, "val")
    assert len(data.queries) == 1 and data.findings == []


def corrupt(path: Path, edit) -> None:
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


FIQ_CAP = Path("captions/cap.dress.val.json")
CIRR_CAP = Path("captions/cap.rc2.val.json")


@pytest.mark.parametrize(
    ("edit", "record", "field", "message"),
    [
        (lambda d: d[1].pop("target"), 1, "target", "missing field"),
        (lambda d: d[0].__setitem__("captions", "is red"), 0, "captions", "expected list"),
        (lambda d: d[1].__setitem__("captions", ["x"]), 1, "captions", "list of 2 strings"),
        (lambda d: d[0].__setitem__("candidate", 3), 0, "candidate", "expected str, got int"),
        (lambda d: d[1].__setitem__("target", "zzz"), 1, "target", "'zzz' is not in split"),
        (lambda d: d.__setitem__(0, "oops"), 0, None, "expected an object"),
    ],
)
def test_fashioniq_bad_records(tmp_path, edit, record, field, message):
    root = make_fashioniq(tmp_path)
    corrupt(root / FIQ_CAP, edit)
    with pytest.raises(DataFormatError) as err:
        load_fashioniq_split(root, "dress", "val")
    assert (err.value.record, err.value.field) == (record, field)
    assert message in str(err.value) and "cap.dress.val.json" in str(err.value)
    lenient = load_fashioniq_split(root, "dress", "val", strict=False)
    assert len(lenient.queries) == 1  # the bad record is skipped, the good one kept
    assert [f.record for f in lenient.findings if f.severity == "error"] == [record]


@pytest.mark.parametrize(
    ("edit", "field", "message"),
    [
        (lambda d: d[0].pop("pairid"), "pairid", "missing field"),
        (lambda d: d[0].__setitem__("pairid", "7"), "pairid", "expected int, got str"),
        (lambda d: d[0]["img_set"].pop("members"), "img_set.members", "missing field"),
        (lambda d: d[0]["img_set"].__setitem__("target_rank", 1.5), "img_set.target_rank", "int"),
        (lambda d: d[0].__setitem__("target_hard", "dev-9-img0"), "target_hard", "not in split"),
        (lambda d: d[0].__setitem__("reference", "x"), "reference", "not in split.rc2.val.json"),
        (lambda d: d[0]["img_set"]["members"].remove("dev-0-img0"), "img_set.members", "among"),
        (lambda d: d[0].__setitem__("target_soft", {"dev-1-img0": "1"}), "target_soft", "number"),
    ],
)
def test_cirr_bad_records(tmp_path, edit, field, message):
    root = make_cirr(tmp_path)
    corrupt(root / CIRR_CAP, edit)
    with pytest.raises(DataFormatError) as err:
        load_cirr_split(root, "val")
    assert (err.value.record, err.value.field) == (0, field)
    assert message in str(err.value)
    assert load_cirr_split(root, "val", strict=False).queries == []


def test_missing_and_malformed_files(tmp_path):
    root = make_fashioniq(tmp_path / "fiq")
    (root / FIQ_CAP).unlink()
    with pytest.raises(DataFormatError, match=r"cap\.dress\.val\.json: file not found"):
        load_fashioniq_split(root, "dress", "val")
    root = make_cirr(tmp_path / "cirr")
    (root / CIRR_CAP).write_text('[{"pairid": 1,,}]')
    with pytest.raises(DataFormatError, match=r"malformed JSON at line 1, column 15"):
        load_cirr_split(root, "val")
    lenient = load_cirr_split(root, "val", strict=False)
    assert lenient.queries == [] and "malformed JSON" in lenient.findings[0].message


def test_missing_images_are_counted(tmp_path):
    root = make_fashioniq(tmp_path)
    (root / "images" / "b.png").unlink()
    (root / "images" / "c.png").unlink()
    with pytest.raises(DataFormatError, match="2 of 4 images listed here are missing on disk"):
        load_fashioniq_split(root, "dress", "val")
    lenient = load_fashioniq_split(root, "dress", "val", strict=False)
    assert lenient.gallery == ["a", "d"] and lenient.queries == []
    assert [f.count for f in lenient.findings] == [2, 2]
    # annotations only: no image is expected, nothing is reported
    assert load_fashioniq_split(root, "dress", "val", images=False).findings == []


def test_undecodable_image_names_the_file(tmp_path):
    root = make_fashioniq(tmp_path)
    (root / "images" / "a.png").write_bytes(b"not a png")
    data = load_fashioniq_split(root, "dress", "val")
    with pytest.raises(DataFormatError, match=r"a\.png: cannot decode image"):
        data.open_image("a")


def test_fashioniq_jpg_images_are_found(tmp_path):
    root = make_fashioniq(tmp_path)
    (root / "images" / "a.png").rename(root / "images" / "a.jpg")
    data = load_fashioniq_split(root, "dress", "val")
    assert data.image_paths["a"].suffix == ".jpg"


# ---------------------------------------------------------------- TargetPad


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        ((100, 100), (100, 100)),  # square: untouched
        ((120, 100), (120, 100)),  # ratio 1.2 < 1.25: untouched
        ((200, 100), (200, 160)),  # ratio 2: pad the short side to 200 / 1.25 = 160
        ((100, 250), (200, 250)),  # portrait: pad the width to 250 / 1.25 = 200
    ],
)
def test_target_pad_ratio(size, expected):
    assert target_pad(Image.new("RGB", size, "white")).size == expected


def test_target_pad_transform_output():
    image = Image.new("RGB", (200, 100), (255, 255, 255))
    array = TargetPadTransform(size=32)(image)
    assert array.shape == (3, 32, 32) and array.dtype == np.float32
    # padded rows (black) at the top and bottom, white in the middle
    assert array[0, 0, 16] < array[0, 16, 16]
    plain = TargetPadTransform(size=32, ratio=None)(image)
    assert np.allclose(plain[0, 0, 16], plain[0, 16, 16])
