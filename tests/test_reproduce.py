"""Reproducing the paper from released files (issue 13), on tiny configs of the real code:
a stage 2 that starts from an imported stage-1 checkpoint trains no stage 1, SPN's
released generated triplets are a P source, and ``cirbench reproduce`` on a folder in the
reference layout writes the paper tables with published and measured columns."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import mlflow
import pytest
import torch

from bench.backbones import load_backbone
from bench.checkpoints import export_checkpoint
from bench.config import parse_spec
from bench.config.bases import method_base
from bench.train.data import load_experiment_data
from bench.train.engine import train
from methods import create_method
from tests.conftest import cirbench_home

TINY = {"format": "fashioniq", "synthetic_size": "tiny", "categories": ["dress"]}


@pytest.fixture(scope="module", autouse=True)
def isolated_home(tmp_path_factory):
    yield from cirbench_home(tmp_path_factory)


def released_clip4cir(folder, seed: int = 5):
    """CLIP4Cir's two released files (CLIP + Combiner) of a tiny CLIP4CIR model."""
    method = create_method("clip4cir", load_backbone("cirbench-tiny", "random", seed=seed), {})
    paths = [folder / "tuned_clip_best.pt", folder / "combiner.pt"]
    export_checkpoint(method, "clip4cir", paths)
    return method, paths


def write_released_triplets(root, count: int = 12) -> int:
    """SPN's own generated-triplet file (zscir/get_cir_data.py get_fiq: no category, the
    captions a list of template renderings) from the dataset's train images."""
    names = json.loads((root / "image_splits" / "split.dress.train.json").read_text())
    records = [
        {
            "target": names[(i + 1) % len(names)],
            "candidate": names[i],
            "captions": [f"a blue one instead of item {i}"],
            "caption1": f"item {i}",
            "caption2": "a blue one",
        }
        for i in range(count)
    ]
    (root / "captions" / "cap.extend_clip.train.json").write_text(json.dumps(records))
    return count


def test_stage2_from_an_imported_stage1_trains_no_stage1(tmp_path):
    source, files = released_clip4cir(tmp_path)
    base = method_base("clip4cir", "synthetic", "fashioniq")
    data = {
        "name": "from-release",
        "dataset": {**TINY, "max_train_queries": 32},
        "backbone": {**base["backbone"], "pretrained": "random"},
        "method": base["method"],
        "train": {"epochs": 1, "batch_size": 16},
        "stage1": {"checkpoint": [str(f) for f in files], "format": "clip4cir"},
        "spn": {
            "positives": {"source": "released", "name": "clip"},
            "negatives": {"epochs": 1, "batch_size": 16},
        },
    }
    spec = parse_spec(data)
    assert spec.spn.composition.name == "P+N"
    root = load_experiment_data(spec.dataset, progress=False).root
    written = write_released_triplets(root)
    result = train(spec, progress=False)
    assert [h["phase"] for h in result.history] == ["spn_negatives"]
    stage1_dir = next(p for p in result.run_dir.parent.iterdir() if (p / "stage1.json").is_file())
    stage1 = json.loads((stage1_dir / "result.json").read_text())
    assert [h["phase"] for h in stage1["history"]] == ["import"]  # evaluated, not trained
    assert not (stage1_dir / "last.pt").exists()
    best = torch.load(stage1_dir / "best.pt", weights_only=False)
    for key, value in source.state_dict().items():
        assert torch.equal(best["model"][key], value), key
    record = json.loads((stage1_dir / "stage1.json").read_text())
    assert record["format"] == "clip4cir" and len(record["sha256"].split("+")) == 2
    runs = mlflow.search_runs(search_all_experiments=True)
    kinds = sorted(runs["tags.cirbench.kind"])
    assert kinds == ["import", "train"]  # no stage-1 training run
    assert set(runs["tags.cirbench.stage1.sha256"]) == {record["sha256"]}
    # the released triplets were the P source: every one in the bank stage's pool
    session_names = json.loads((result.run_dir / "bank.json").read_text())["rows"]
    assert session_names >= written
    # a changed file is refused, not silently reused
    torch.save({**torch.load(files[1], weights_only=True), "epoch": 1}, files[1])
    with pytest.raises(Exception, match="digest"):
        train(spec.stage1_spec(), resume=True, progress=False)


# ----------------------------------------------------------------------------- reproduce


def reference_layout_from(synthetic: Path, root: Path) -> Path:
    """The synthetic tiny world's FashionIQ and CIRR in the reference layout (links):
    fashionIQ_dataset/, cirr_dataset/{train,dev,test1}/ with the annotations in cirr/."""
    root.mkdir()
    (root / "fashionIQ_dataset").symlink_to(synthetic / "fashioniq", target_is_directory=True)
    cirr = root / "cirr_dataset"
    (cirr / "cirr").mkdir(parents=True)
    for name in ("captions", "image_splits"):
        (cirr / "cirr" / name).mkdir()
        for file in (synthetic / "cirr" / name).iterdir():
            (cirr / "cirr" / name / file.name).symlink_to(file)
    for name in ("train", "dev", "test1"):
        (cirr / name).symlink_to(synthetic / "cirr" / name, target_is_directory=True)
    return root


def write_released_cirr_triplets(captions: Path, count: int = 12) -> None:
    """SPN's CIRR file (get_cir_data.py get_cirr: pairid 0, members ["xxx"], caption list)."""
    names = list(
        json.loads((captions.parent / "image_splits" / "split.rc2.train.json").read_text())
    )
    records = [
        {
            "target_hard": names[(i + 1) % len(names)],
            "reference": names[i],
            "caption": [f"make it like item {i + 1}"],
            "pairid": 0,
            "img_set": {"members": ["xxx"]},
            "caption1": f"item {i}",
            "caption2": f"item {i + 1}",
        }
        for i in range(count)
    ]
    (captions / "cap.rc2.train.extend_clip.json").write_text(json.dumps(records))


def test_reproduce_writes_published_against_measured_tables(tmp_path, capsys):
    from bench.cli import main

    spec = parse_spec({"name": "x", "dataset": TINY})
    synthetic = load_experiment_data(spec.dataset, progress=False).root.parent
    layout = reference_layout_from(synthetic, tmp_path / "data")
    fiq = layout / "fashionIQ_dataset"
    if not (fiq / "captions" / "cap.extend_clip.train.json").is_file():
        write_released_triplets(fiq)
    # the CIRR caption folder holds links: the released file goes next to them
    write_released_cirr_triplets(layout / "cirr_dataset" / "cirr" / "captions")
    released = tmp_path / "released"
    (released / "data" / "clip4cir").mkdir(parents=True)
    (released / "checkpoints" / "fiq_clip").mkdir(parents=True)
    stage1 = create_method("clip4cir", load_backbone("cirbench-tiny", "random", seed=3), {})
    export_checkpoint(
        stage1,
        "clip4cir",
        [released / "data/clip4cir/fiq_stage1.pt", released / "data/clip4cir/fiq_combiner.pt"],
    )
    clip_only = stage1.state_dict()
    torch.save(
        {"epoch": 0, "CLIP": {k[5:]: v for k, v in clip_only.items() if k.startswith("clip.")}},
        released / "data/clip4cir/cirr_stage1.pt",
    )  # no CIRR Combiner file
    stage2 = create_method(
        "clip4cir", load_backbone("cirbench-tiny", "random", seed=4), {"use_combiner": False}
    )
    export_checkpoint(stage2, "spn_clip4cir", [released / "checkpoints/fiq_clip/best.pt"])
    overrides = [
        "backbone.arch=cirbench-tiny",
        "backbone.pretrained=random",
        "dataset.categories=[dress]",
        "dataset.max_train_queries=32",
        "spn.negatives.epochs=1",
        "spn.negatives.batch_size=16",
    ]
    argv = ["reproduce", "--data-root", str(layout), "--checkpoints", str(released)]
    argv += ["--methods", "clip4cir", "--out", str(tmp_path / "reports"), "--quiet"]
    argv += [x for o in overrides for x in ("--set", o)]
    assert main(argv) == 0
    folder = tmp_path / "reports" / "reproduce"
    fiq_rows = list(csv.DictReader((folder / "table2_fashioniq.csv").open()))
    cirr_rows = list(csv.DictReader((folder / "table3_cirr.csv").open()))
    assert {r["weights"] for r in fiq_rows} == {
        "released stage 1",
        "SPN's released stage 2",
        "stage 2 trained here",
    }
    rmean = {r["weights"]: r for r in fiq_rows if r["metric"] == "Rmean"}
    for row in rmean.values():  # every FashionIQ row measured, beside the published number
        assert row["published"] and row["measured"] and row["difference"], row
        diff = float(row["measured"]) - float(row["published"])
        assert float(row["difference"]) == pytest.approx(diff)
    assert rmean["released stage 1"]["protocol"] == "full_gallery"  # CLIP4CIR's published
    assert float(rmean["released stage 1"]["published"]) == 54.06  # spn_tables.csv
    assert rmean["stage 2 trained here"]["protocol"] == "drop_reference"
    crmean = {r["weights"]: r for r in cirr_rows if r["metric"] == "Rmean"}
    assert crmean["released stage 1"]["missing"].endswith("cirr_combiner.pt")
    assert crmean["SPN's released stage 2"]["missing"].endswith("cirr_clip/best.pt")
    here = crmean["stage 2 trained here"]
    assert here["split"] == "test1" and here["measured"] == "" and here["measured_on_val"]
    files = here["files"].split(";")
    assert files and all(Path(f).is_file() for f in files)  # the CIRR server files
    table = (folder / "table3_cirr.md").read_text()
    assert "missing data/clip4cir/cirr_combiner.pt" in table
    assert "test1 on the server" in table
    runs = mlflow.search_runs(search_all_experiments=True)
    mine = runs[runs["tags.cirbench.suite"] == "reproduce"]
    assert set(mine["tags.cirbench.kind"]) == {"import", "train"}
    assert len(mine[mine["tags.cirbench.kind"] == "train"]) == 2  # one stage 2 per dataset
