"""Synthetic backbone pre-training (cached), `cirbench methods`, and CIRR submission files."""

from __future__ import annotations

import json
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import mlflow
import pytest
import torch

from bench.backbones.clip import MODEL_CONFIG_DIR
from bench.backbones.pretrain import (
    PretrainConfig,
    architecture_fingerprint,
    ensure_synthetic_backbone,
    pretrain_config,
)
from bench.cli import main
from bench.config import parse_spec
from bench.core.paths import synthetic_root
from bench.metrics import validate_cirr_submission
from bench.train.engine import train
from bench.train.evaluate import write_submission
from tests.conftest import cirbench_home


@pytest.fixture(scope="module", autouse=True)
def isolated_home(tmp_path_factory):
    yield from cirbench_home(tmp_path_factory)


def test_pretraining_is_cached_by_data_and_config(isolated_home):
    config = PretrainConfig(epochs=1, batch_size=64)
    path = ensure_synthetic_backbone(size="tiny", config=config, progress=False)
    state = torch.load(path, weights_only=False)
    assert state["arch"] == "cirbench-tiny" and len(state["history"]) == 1
    mtime = path.stat().st_mtime_ns
    again = ensure_synthetic_backbone(size="tiny", config=config, progress=False)
    assert again == path and again.stat().st_mtime_ns == mtime  # cache hit: not retrained
    other = ensure_synthetic_backbone(
        size="tiny", config=PretrainConfig(epochs=1, batch_size=64, lr=1e-4), progress=False
    )
    assert other != path  # another config, another entry


def test_an_edited_model_config_is_a_new_pretraining_cache_entry(tmp_path):
    """The cache key covers the architecture an arch name builds, not only its name."""
    import open_clip

    config = json.loads((MODEL_CONFIG_DIR / "cirbench-tiny.json").read_text())
    fingerprints = []
    for layers in (2, 3):
        config["text_cfg"]["layers"] = layers
        (tmp_path / "cirbench-fingerprint-test.json").write_text(json.dumps(config))
        open_clip.add_model_config(tmp_path)
        architecture_fingerprint.cache_clear()
        fingerprints.append(architecture_fingerprint("cirbench-fingerprint-test"))
    architecture_fingerprint.cache_clear()
    assert fingerprints[0] != fingerprints[1]


def test_loading_a_checkpoint_file_does_not_warn_of_random_weights(tmp_path, caplog):
    from bench.backbones import load_backbone

    with caplog.at_level("WARNING"):
        random = load_backbone("cirbench-tiny", "random", seed=1)
    # open_clip's warning is silenced where random weights were asked for (a quiet terminal)
    assert "initialized randomly" not in caplog.text
    path = tmp_path / "weights.pt"
    torch.save(random.model.state_dict(), path)
    caplog.clear()
    with caplog.at_level("WARNING"):
        loaded = load_backbone("cirbench-tiny", str(path))
    assert "initialized randomly" not in caplog.text
    for key, value in random.model.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[key], value), key


def _build_shared_inputs(seed: int) -> str:
    config = PretrainConfig(epochs=1, batch_size=64)
    return str(ensure_synthetic_backbone(size="tiny", seed=seed, config=config, progress=False))


def test_processes_needing_the_same_data_and_backbone_build_them_once(isolated_home):
    """Sweep workers start together: the synthetic data is generated and the backbone
    pre-trained by one of them while the other waits (no clobbered partial folder)."""
    with ProcessPoolExecutor(2, mp_context=get_context("spawn")) as pool:
        paths = list(pool.map(_build_shared_inputs, [7, 7]))
    assert paths[0] == paths[1]
    assert (synthetic_root("tiny", 7) / "synthetic.json").is_file()
    assert not synthetic_root("tiny", 7).with_name("synthetic-tiny-seed7.partial").exists()
    runs = mlflow.search_runs(
        experiment_names=["cirbench-backbones"],
        filter_string=f"tags.`cirbench.cache_key` = '{Path(paths[0]).parent.name.split('-')[-1]}'",
    )
    assert len(runs) == 1  # pre-trained once, not once per process


def test_methods_command_lists_the_four_methods(capsys):
    assert main(["methods"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == ["blip4cir_bi", "clip4cir", "sprc", "tgcir"]
    assert "finetune, combiner" in lines[1]


def test_cirr_submission_from_a_trained_checkpoint(isolated_home, tmp_path):
    base = {
        "name": "tiny-cirr",
        "dataset": {"format": "cirr", "synthetic_size": "tiny", "max_train_queries": 32},
        "backbone": {"pretrained": "random"},
        "method": {"params": {"use_combiner": False}},
        "train": {"epochs": 1, "batch_size": 16},
    }
    result = train(parse_spec(base), progress=False, tracking=False)
    assert set(result.metrics) >= {"R@1", "R@5", "Rsubset@1", "Rmean"}
    test_spec = parse_spec(base, overrides=["dataset.eval_split=test1"])
    recall, subset = write_submission(
        test_spec, result.best_checkpoint, tmp_path / "sub", progress=False
    )
    assert validate_cirr_submission(recall) == [] and validate_cirr_submission(subset) == []
    payload = json.loads(recall.read_text())
    assert payload["version"] == "rc2" and payload["metric"] == "recall"
    assert all(len(v) == 50 for k, v in payload.items() if k not in ("version", "metric"))


def test_pretraining_epochs_follow_the_world_size():
    """compact's backbones get about small's optimiser steps (14 epochs of 15 steps against 6
    of 35); every other size keeps the default config, so its cached backbones (keyed by
    the config) stay valid."""
    assert pretrain_config("compact").epochs == 14
    for size in ("tiny", "small", "default"):
        assert pretrain_config(size) == PretrainConfig()
