"""Contrastive pre-training of a small CLIP on the synthetic benchmark: the synthetic
world's "pretrained CLIP" (``cirbench backbone pretrain``).

Training pairs are the synthetic images of the *training* splits and of the unlabeled
pool with their ground-truth descriptions ("a small red striped circle"); validation and
test images are never seen. The result is cached under ``cache/backbones/`` keyed by
the content hash of the data (annotation and metadata files, image list) and of the
pre-training config, so it runs once; an interrupted pre-training resumes from its last
finished epoch.
"""

from __future__ import annotations

import functools
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from bench.backbones.base import load_backbone
from bench.core.arrays import ArrayCache
from bench.core.atomic import save_torch_atomic, write_json_atomic
from bench.core.checkpoints import (
    load_checkpoint_file,
    restore_resume_record,
    restore_rng,
    save_resume_record,
)
from bench.core.console import announce
from bench.core.hashing import digest
from bench.core.locks import exclusive
from bench.core.optim import build_optimizer, build_schedule
from bench.core.paths import cache_dir
from bench.core.runtime import autocast
from bench.images.pixels import load_pixels
from bench.images.transforms import to_model_input
from bench.synthetic import ensure_synthetic
from bench.synthetic.pretraining import data_fingerprint, pretraining_pairs
from bench.tracking import TrackedRun


@dataclass(frozen=True)
class PretrainConfig:
    epochs: int = 6
    batch_size: int = 128
    lr: float = 5e-4
    weight_decay: float = 0.1
    warmup_ratio: float = 0.1
    seed: int = 0


@functools.cache
def architecture_fingerprint(arch: str) -> str:
    """Digest of the model an arch name builds (its module tree with layer sizes, and its
    parameter shapes), so that an edited model config is a new pre-training cache entry."""
    model = load_backbone(arch, None, seed=0).model
    shapes = [(name, tuple(t.shape)) for name, t in model.state_dict().items()]
    return digest(repr(model), shapes)


def ensure_synthetic_backbone(
    arch: str = "cirbench-tiny",
    *,
    size: str = "default",
    seed: int = 0,
    config: PretrainConfig | None = None,
    progress: bool = True,
    tracking: bool = True,
) -> Path:
    """Path of the pre-trained synthetic backbone, pre-training it first when not cached."""
    config = config or PretrainConfig()
    root = ensure_synthetic(size, seed, progress=progress)
    names, paths, texts = pretraining_pairs(root)
    key = digest(
        arch, architecture_fingerprint(arch), asdict(config), data_fingerprint(root, names, paths)
    )
    out_dir = cache_dir() / "backbones" / f"{arch}-{key}"
    final = out_dir / "backbone.pt"
    if final.is_file():
        return final
    out_dir.mkdir(parents=True, exist_ok=True)
    with exclusive(out_dir.with_name(f".{out_dir.name}.lock")):  # one process pre-trains
        if not final.is_file():
            if progress:
                announce(
                    f"pre-training the synthetic {arch} backbone ({config.epochs} epochs on "
                    f"the {size} benchmark's image-text pairs)",
                    f"its weights are absent; once, cached in {out_dir}",
                )
            _pretrain(arch, names, paths, texts, config, out_dir, progress, tracking, key)
    return final


def _pretrain(
    arch: str,
    names: list[str],
    paths: dict[str, Path],
    texts: list[str],
    config: PretrainConfig,
    out_dir: Path,
    progress: bool,
    tracking: bool,
    key: str,
) -> None:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    backbone = load_backbone(arch, None, seed=config.seed)
    model = backbone.model.to(device)
    pixels = load_pixels(
        ArrayCache(cache_dir()), names, paths, backbone.transform, progress=progress
    )
    tokens = backbone.tokenize(texts)
    params = [p for p in model.parameters() if p.requires_grad]
    steps = math.ceil(len(names) / config.batch_size)
    optimizer = build_optimizer(params, config.lr, config.weight_decay)
    schedule = build_schedule(optimizer, steps * config.epochs, config.warmup_ratio)
    partial = out_dir / "partial.pt"
    state: dict[str, Any] = {"epoch": 0, "history": []}
    if partial.is_file():  # an interrupted pre-training: continue after its last epoch
        record = load_checkpoint_file(partial)
        model.load_state_dict(record["model"])
        restore_resume_record(record, optimizer, schedule)
        restore_rng(record)
        state = record["state"]
    params_log = {f"pretrain.{k}": v for k, v in asdict(config).items()} | {
        "arch": arch,
        "images": len(names),
    }
    with TrackedRun(
        "cirbench-backbones",
        f"pretrain-{arch}",
        params=params_log,
        tags={"cirbench.kind": "pretrain", "cirbench.cache_key": key},
        enabled=tracking,
    ) as run:
        begin = time.perf_counter()
        batch = PretrainBatchData(pixels, tokens, texts, backbone.transform, device)
        for epoch in range(state["epoch"], config.epochs):
            loss = _pretrain_epoch(
                model, batch, params, optimizer, schedule, config, epoch, progress
            )
            state["history"].append({"epoch": epoch, "loss": loss})
            state["epoch"] = epoch + 1
            run.log_metrics({"pretrain.loss": loss}, step=epoch + 1)
            if progress:
                tqdm.write(f"[pretrain {epoch + 1}/{config.epochs}] loss {loss:.4f}")
            save_resume_record(partial, model, optimizer, schedule, state)
        seconds = time.perf_counter() - begin
        run.log_metrics({"pretrain.seconds": seconds})
    model.cpu()
    history = state["history"]
    save_torch_atomic(
        {"model": model.state_dict(), "arch": arch, "history": history}, out_dir / "backbone.pt"
    )
    info = {
        "arch": arch,
        "config": asdict(config),
        "images": len(names),
        "history": history,
        "seconds": seconds,
    }
    write_json_atomic(out_dir / "info.json", info)
    partial.unlink(missing_ok=True)


@dataclass
class PretrainBatchData:
    """What every pre-training step reads: cached pixels, tokenised descriptions."""

    pixels: np.ndarray
    tokens: torch.Tensor
    texts: list[str]
    transform: Any
    device: torch.device


def contrastive_pair_loss(model: Any, data: PretrainBatchData, idx: np.ndarray) -> torch.Tensor:
    """CLIP's symmetric image-text InfoNCE over one batch; identical descriptions in the
    batch are positives of each other (soft targets)."""
    device = data.device
    images = to_model_input(data.pixels[idx], data.transform, device)
    with autocast(device):
        image_f = F.normalize(model.encode_image(images), dim=-1)
        text_f = F.normalize(model.encode_text(data.tokens[idx].to(device)), dim=-1)
        logits = model.logit_scale.exp() * image_f @ text_f.t()
    texts = data.texts
    same = torch.as_tensor([[texts[i] == texts[j] for j in idx] for i in idx], device=device)
    target = same.float() / same.float().sum(1, keepdim=True)
    return (
        F.cross_entropy(logits.float(), target) + F.cross_entropy(logits.float().t(), target)
    ) / 2


def _pretrain_epoch(
    model: Any,
    data: PretrainBatchData,
    params: list[torch.nn.Parameter],
    optimizer: torch.optim.Optimizer,
    schedule: torch.optim.lr_scheduler.LRScheduler,
    config: PretrainConfig,
    epoch: int,
    progress: bool,
) -> float:
    """One epoch in a seeded order; returns the mean loss."""
    model.train()
    n = len(data.texts)
    order = torch.randperm(
        n, generator=torch.Generator().manual_seed(config.seed * 7919 + epoch)
    ).numpy()
    total, count = 0.0, 0
    bar = tqdm(
        range(0, n, config.batch_size),
        desc=f"pretrain epoch {epoch + 1}/{config.epochs}",
        disable=not progress,
        leave=False,
    )
    for offset in bar:
        idx = np.sort(order[offset : offset + config.batch_size])
        loss = contrastive_pair_loss(model, data, idx)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        schedule.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        total += loss.item() * len(idx)
        count += len(idx)
        bar.set_postfix(loss=f"{loss.item():.3f}")
    return total / count
