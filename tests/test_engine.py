"""The training engine end to end on tiny configs of the real code (no mocks)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch

from bench.backbones import BackboneError, load_backbone
from bench.config import SpecError, load_spec, parse_spec
from bench.core.arrays import ArrayCache
from bench.evaluation.encode import encode_cached
from bench.images.pixels import load_pixels
from bench.tracking import find_runs
from bench.train.checkpoints import RunStateError
from bench.train.engine import train
from bench.train.evaluate import evaluate
from bench.train.session import build_session, run_dir_for
from methods import create_method, list_methods
from tests.conftest import cirbench_home

TINY = {
    "name": "tiny",
    "experiment": "cirbench-tests",
    "dataset": {
        "format": "fashioniq",
        "synthetic_size": "tiny",
        "categories": ["dress"],
        "max_train_queries": 64,
    },
    "backbone": {"pretrained": "random"},
    "train": {"epochs": 2, "batch_size": 16, "lr": 1e-4, "phases": {"combiner": {"epochs": 1}}},
}


def tiny_spec(**overrides):
    return parse_spec(TINY, overrides=[f"{k}={v}" for k, v in overrides.items()])


@pytest.fixture(scope="module", autouse=True)
def isolated_home(tmp_path_factory):
    yield from cirbench_home(tmp_path_factory)


@pytest.fixture(scope="module")
def reference_run():
    """One uninterrupted tiny run (CLIP4CIR: 2 fine-tune epochs + 1 combiner epoch)."""
    return train(tiny_spec(), progress=False)


# ------------------------------------------------------------------ registry and specs


def test_registry_lists_and_builds_clip4cir():
    assert "clip4cir" in list_methods() and list_methods("clip*") == ["clip4cir"]
    method = create_method("clip4cir", load_backbone("cirbench-tiny"), {"use_combiner": False})
    assert [p.name for p in method.phases] == ["finetune"]
    assert set(method.parameter_groups()) == {"image_encoder", "text_encoder"}
    query_ids = {id(p) for p in method.query_parameters()}
    assert query_ids.isdisjoint(id(p) for p in method.target_parameters())


def test_registry_errors_name_the_problem():
    backbone = load_backbone("cirbench-tiny")
    with pytest.raises(Exception, match=r"unknown method 'nope'; registered: .*clip4cir"):
        create_method("nope", backbone)
    with pytest.raises(Exception, match=r"method\.params\.dropout: Input should be less than 1"):
        create_method("clip4cir", backbone, {"dropout": 1.5})


def test_spec_errors_name_the_key(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: x\ndataset: {format: cirr, colour: red}\ntrain: {lr: -1}\n")
    with pytest.raises(SpecError) as err:
        load_spec(path)
    message = str(err.value)
    assert str(path) in message
    assert "dataset.colour: unknown key" in message
    assert "train.lr: Input should be greater than 0" in message
    expected = (
        r"dataset\.format: .*unknown dataset format 'coco'; expected one of fashioniq, cirr, circo"
    )
    with pytest.raises(SpecError, match=expected):
        parse_spec(TINY, overrides=["dataset.format=coco"])
    with pytest.raises(SpecError, match=r"not of the form key\.sub=value"):
        parse_spec(TINY, overrides=["train.lr"])
    assert parse_spec(TINY, overrides=["train.lr=3e-5"]).train.lr == 3e-5
    assert parse_spec(TINY).train.phase("combiner").epochs == 1


# ------------------------------------------------------------------ backbones


def test_open_clip_architecture_with_random_weights():
    backbone = load_backbone("RN50", None)
    assert backbone.embed_dim == 1024 and backbone.transform.size == 224
    features = backbone.model.encode_image(torch.zeros(1, 3, 224, 224))
    assert features.shape == (1, 1024)


def test_local_checkpoint_round_trip_and_mismatch(tmp_path):
    source = load_backbone("cirbench-tiny", None, seed=1)
    path = tmp_path / "tiny.pt"
    ddp_style = {f"module.{k}": v for k, v in source.model.state_dict().items()}
    torch.save({"state_dict": ddp_style}, path)
    loaded = load_backbone("cirbench-tiny", str(path), seed=2)
    for key, value in source.model.state_dict().items():
        assert torch.equal(value, loaded.model.state_dict()[key])
    assert loaded.weights.startswith("cirbench-tiny:file:")
    with pytest.raises(BackboneError, match="does not match the architecture"):
        load_backbone("RN50", str(path))
    with pytest.raises(BackboneError, match="checkpoint file not found"):
        load_backbone("cirbench-tiny", str(tmp_path / "missing.pt"))
    with pytest.raises(BackboneError, match="no pretrained tag 'nope'"):
        load_backbone("RN50", "nope")


# ------------------------------------------------------------------ training runs


def test_training_learns_and_is_tracked(reference_run):
    history = reference_run.history
    assert [h["phase"] for h in history] == ["finetune", "finetune", "combiner"]
    assert (reference_run.run_dir / "best.pt").is_file()
    assert (reference_run.run_dir / "result.json").is_file()
    # the resume state is deleted once the run finished (it only serves resuming)
    assert not (reference_run.run_dir / "last.pt").exists()
    run = mlflow.MlflowClient().get_run(reference_run.mlflow_run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["train.lr"] == "0.0001"
    assert run.data.params["method.name"] == "clip4cir"
    assert run.data.tags["cirbench.method"] == "clip4cir"
    for tag in ("cirbench.git_commit", "cirbench.dataset_fingerprint", "cirbench.version"):
        assert run.data.tags[tag]
    assert "final.Rmean" in run.data.metrics and "train.seconds" in run.data.metrics
    steps = mlflow.MlflowClient().get_metric_history(run.info.run_id, "val.Rmean")
    assert [m.step for m in steps] == [1, 2, 3]
    assert reference_run.metrics["Rmean"] == max(
        h["Rmean"] for h in history if h["phase"] == "combiner"
    )


def test_same_seed_same_metrics(reference_run):
    again = train(tiny_spec(), restart=True, progress=False)
    assert again.metrics == reference_run.metrics
    assert [h["loss"] for h in again.history] == [h["loss"] for h in reference_run.history]


def test_existing_run_needs_resume_or_restart(reference_run):
    with pytest.raises(RunStateError, match="pass --resume"):
        train(tiny_spec(), progress=False)


def test_resume_after_interruption_matches_uninterrupted(reference_run):
    spec = tiny_spec(name="interrupted")

    def stop_in_epoch_two(phase: str, epoch: int, step: int) -> None:
        if phase == "finetune" and epoch == 1 and step == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(spec, progress=False, on_step=stop_in_epoch_two)
    first_id = (run_dir_for(spec) / "mlflow_run_id").read_text()
    assert mlflow.MlflowClient().get_run(first_id).info.status == "KILLED"
    resumed = train(spec, resume=True, progress=False)
    assert resumed.metrics == reference_run.metrics
    assert resumed.mlflow_run_id == first_id  # the same MLflow run continues, no duplicate
    assert len(find_runs("cirbench-tests", "attributes.run_name = 'interrupted'")) == 1


def test_failed_run_is_marked_failed():
    def explode(phase: str, epoch: int, step: int) -> None:
        raise RuntimeError("injected failure")

    with pytest.raises(RuntimeError, match="injected failure"):
        train(tiny_spec(name="failing"), progress=False, on_step=explode)
    [run] = find_runs("cirbench-tests", "attributes.run_name = 'failing'")
    assert run.info.status == "FAILED"
    assert "injected failure" in run.data.tags["cirbench.error"]


def test_evaluate_checkpoint_reproduces_best_metrics(reference_run):
    metrics = evaluate(tiny_spec(), reference_run.best_checkpoint, progress=False)
    assert metrics == pytest.approx(reference_run.metrics)


# ------------------------------------------------------------------ feature cache


def test_feature_cache_hit_and_invalidation(tmp_path):
    session = build_session(tiny_spec(), progress=False)
    cache = ArrayCache(tmp_path / "cache")
    images = session.eval_images[0]
    method, device = session.method, session.device
    first = encode_cached(method, images.pixels, images.pixels_key, device, 64, cache)
    assert (cache.stats.hits, cache.stats.misses) == (0, 2)  # reference reps + targets
    second = encode_cached(method, images.pixels, images.pixels_key, device, 64, cache)
    assert (cache.stats.hits, cache.stats.misses) == (2, 2)
    assert torch.equal(first.target, second.target)
    assert cache.stats.seconds_saved > 0
    with torch.no_grad():  # new image-encoder weights -> new key
        next(method.target_parameters()).add_(0.01)
    third = encode_cached(method, images.pixels, images.pixels_key, device, 64, cache)
    assert cache.stats.misses == 4 and not torch.equal(first.target, third.target)
    # preprocessing is part of the pixel key
    split = images.split
    a = load_pixels(cache, split.gallery, split.image_paths, method.transform, progress=False)
    from bench.images.transforms import TargetPadTransform

    other = TargetPadTransform(size=method.transform.size, ratio=None)
    b = load_pixels(cache, split.gallery, split.image_paths, other, progress=False)
    assert cache.stats.misses == 6 and not np.array_equal(np.asarray(a), np.asarray(b))


def test_cuda_smoke_script_runs_on_the_cpu(tmp_path):
    """benchmarks/cuda_smoke.py is prepared for a GPU session; here it checks itself."""
    out = tmp_path / "smoke.json"
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "cuda_smoke.py"
    cmd = [sys.executable, str(script), "--device", "cpu", "--arch", "cirbench-tiny"]
    cmd += ["--steps", "1", "--warmup", "0", "--batch", "8", "--bank-rows", "500"]
    cmd += ["--json", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    record = json.loads(out.read_text())
    assert record["device"] == "cpu" and record["bank_rows"] == 500
    for key in ("finetune_off_samples_s", "finetune_bf16_samples_s", "bank_bf16_samples_s"):
        assert record[key] > 0, key


def test_run_folders_of_an_older_spec_schema_are_named_once(tmp_path, capsys):
    from bench.train import engine

    (tmp_path / "old-1234").mkdir()
    (tmp_path / "old-1234" / "spec.yaml").write_text("name: old\ndataset: {format: cirr}\n")
    (tmp_path / "new-5678").mkdir()
    new = "name: new\ndataset: {format: cirr, also_protocols: []}\n"
    (tmp_path / "new-5678" / "spec.yaml").write_text(new)
    engine.note_old_runs(tmp_path)
    engine.note_old_runs(tmp_path)
    err = capsys.readouterr().err
    assert err.count("holds 1 run folders of an older spec schema") == 1
