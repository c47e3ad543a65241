"""Reproducing the paper from released files (issue 13), on tiny configs of the real code:
a stage 2 that starts from an imported stage-1 checkpoint trains no stage 1, SPN's
released generated triplets are a P source, and ``cirbench reproduce`` on a folder in the
reference layout writes the paper tables with published and measured columns."""

from __future__ import annotations

import json

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
