"""SPRC's BLIP-2 pre-trained in the synthetic world (the Q-Former's ITC + ITM on the synthetic
image-description pairs): the loss falls, an interrupted pre-training resumes, a rerun is a
cache hit, the result loads as SPRC's backbone; and the quick profile pre-trains nothing."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from bench.backbones import load_backbone
from bench.backbones.blip2 import Blip2PairObjective
from bench.backbones.pretrain import PretrainConfig, ensure_synthetic_backbone
from bench.core.paths import cache_dir
from bench.runner.suites import SuiteRun
from tests.conftest import REPO, cirbench_home

ARCH = "hf-blip2:tiny"
CONFIG = PretrainConfig(epochs=2, batch_size=128)


@pytest.fixture(scope="module", autouse=True)
def isolated_home(tmp_path_factory):
    yield from cirbench_home(tmp_path_factory)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One torch thread, as the suites' workers: on the shared 2-core machine a BLIP-2 step
    takes ~1 s with one thread and ~12 s with two under load."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_itc_itm_loss_falls_on_a_tiny_set():
    """A few steps on 16 pairs of 4 descriptions: ITC + ITM goes down, both terms train."""
    backbone = load_backbone(ARCH, "random", seed=0)
    objective = Blip2PairObjective(backbone.model, int(backbone.tokenizer.pad_id))
    torch.manual_seed(0)
    colours = ["red", "green", "blue", "yellow"]
    texts = [f"a small {colours[i % 4]} circle" for i in range(16)]
    images = torch.stack(
        [
            torch.full((3, 64, 64), (i % 4) / 3.0 - 0.5) + 0.05 * torch.randn(3, 64, 64)
            for i in range(16)
        ]
    )
    tokens = backbone.tokenize(texts)
    same = torch.tensor([[a == b for b in texts] for a in texts])
    optimizer = torch.optim.AdamW(objective.parameters(), lr=3e-4)
    losses = []
    for _ in range(12):
        loss = objective.loss(images, tokens, same)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        objective.after_step()
        losses.append(loss.item())
    assert max(losses[-3:]) < 0.85 * losses[0], losses
    assert objective.model.itm_head.weight.grad.abs().sum() > 0  # ITM is part of the loss
    assert set(objective.weights()) == set(backbone.model.state_dict()) | {"temp"}


def _partials() -> list[Path]:
    return sorted((cache_dir() / "backbones").glob(f"{ARCH}-*/partial.pt"))


def test_pretraining_resumes_after_a_kill_then_hits_the_cache(isolated_home, capsys):
    """Kill the pre-training once its first epoch is saved; the rerun continues at epoch 2
    (the first epoch's loss is kept, not recomputed), then a third call trains nothing."""
    code = (
        "import torch; torch.set_num_threads(1);"
        "from bench.backbones.pretrain import PretrainConfig, ensure_synthetic_backbone;"
        f"ensure_synthetic_backbone({ARCH!r}, size='tiny', config=PretrainConfig(epochs=2, "
        "batch_size=128), progress=False, tracking=False)"
    )
    env = {**dict(__import__("os").environ), "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 600
        while not _partials():
            assert proc.poll() is None, "the pre-training ended before its first epoch was saved"
            assert time.monotonic() < deadline
            time.sleep(0.2)
        proc.kill()
        announced, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert "one-off step: pre-training hf-blip2:tiny" in announced  # never silently
    first = torch.load(_partials()[0], weights_only=False)["state"]["history"]
    assert [h["epoch"] for h in first] == [0]

    path = ensure_synthetic_backbone(
        ARCH, size="tiny", config=CONFIG, progress=False, tracking=False
    )
    assert "one-off step" in capsys.readouterr().out
    info = json.loads((path.parent / "info.json").read_text())
    history = info["history"]
    assert [h["epoch"] for h in history] == [0, 1]
    assert history[0]["loss"] == first[0]["loss"]  # resumed, not restarted
    assert history[1]["loss"] < history[0]["loss"]
    assert not _partials()

    mtime = path.stat().st_mtime_ns
    again = ensure_synthetic_backbone(
        ARCH, size="tiny", config=CONFIG, progress=False, tracking=False
    )
    assert again == path and path.stat().st_mtime_ns == mtime  # cache hit
    assert "one-off step" not in capsys.readouterr().out

    loaded = load_backbone(ARCH, str(path))
    assert loaded.weights.startswith("hf-blip2:tiny:file:")
    assert "temp" in loaded.model.cirbench_extras  # SPRC starts from the learned temp


def test_quick_profile_pretrains_nothing():
    """`--quick` says random weights: no point's backbone nor matching backbone is the
    synthetic pre-trained one (nothing would pre-train)."""
    for suite in ("ablation_spn", "positives_count", "zero_shot", "bank_size"):
        run = SuiteRun.open(suite, "quick")
        for point in run.points():
            spec = run.spec(point)
            assert spec.backbone.pretrained == "random", (suite, point.label())
            positives = spec.spn.positives
            if positives is not None:
                assert positives.backbone.pretrained == "random", (suite, point.label())
    default = SuiteRun.open("ablation_spn", "default", methods=("sprc",))
    point = next(p for p in default.points() if p.composition == "P+N")
    assert default.spec(point).backbone.pretrained == "synthetic"  # SPRC is pre-trained
