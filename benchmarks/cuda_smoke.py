"""CUDA smoke run of a registered method at a real backbone size (random weights, nothing
downloaded): training throughput of its first phase (encoders trained) in float32 and in
mixed precision, and of the SPN bank stage against a large float16 bank on the GPU, with
peak GPU memory. Prepared for a session that is lent a GPU; on the CPU it checks itself
with a tiny backbone.

    python benchmarks/cuda_smoke.py                       # RN50x4 CLIP4CIR on cuda
    python benchmarks/cuda_smoke.py --arch ViT-L-14 --batch 64
    python benchmarks/cuda_smoke.py --device cpu --arch cirbench-tiny --steps 2 --bank-rows 5000

Prints one JSON record (also written with ``--json OUT``).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch

from bench.backbones import load_backbone
from bench.spn.negatives import BankObjective
from bench.train.loop import set_trainable
from methods import create_method
from methods.base import TrainBatch

WORDS = ("a", "red", "striped", "dress", "with", "long", "sleeves", "instead", "of")


def _texts(n: int, step: int) -> list[str]:
    return [" ".join(WORDS[(i + step) % 5 :][:8]) for i in range(n)]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _autocast(device: torch.device, amp: str) -> torch.autocast:
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp)
    return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)


def time_steps(step, steps: int, warmup: int, device: torch.device) -> float:
    """Seconds per step of ``step(i)`` after ``warmup`` untimed steps."""
    for i in range(warmup):
        step(i)
    _sync(device)
    start = time.perf_counter()
    for i in range(steps):
        step(warmup + i)
    _sync(device)
    return (time.perf_counter() - start) / steps


def run(args: argparse.Namespace) -> dict[str, Any]:
    device = torch.device(args.device)
    backbone = load_backbone(args.arch, "random", seed=0)
    method = create_method(args.method, backbone).to(device)
    size = backbone.transform.size
    images = torch.randn(2 * args.batch, 3, size, size, device=device)
    out: dict[str, Any] = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "arch": args.arch,
        "method": args.method,
        "parameters_M": sum(p.numel() for p in method.parameters()) / 1e6,
        "batch": args.batch,
        "image_size": size,
    }

    phase = method.phases[0]
    method.set_phase(phase.name)
    method.train()
    params = set_trainable(method, phase)
    optimizer = torch.optim.AdamW(params, lr=1e-5)
    for amp in ("off", args.amp):
        scaler = torch.amp.GradScaler(device.type, enabled=amp == "fp16")
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)

        def stage1_step(i: int, amp: str = amp, scaler: torch.amp.GradScaler = scaler) -> None:
            tokens = method.tokenize(_texts(args.batch, i)).to(device)
            with _autocast(device, amp):
                reps, vecs = method.encode_images(images)
                n = args.batch
                batch = TrainBatch(reps[:n], vecs[n:], reps[n:], vecs[:n], tokens, [])
                loss = method.training_loss(batch)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            if not torch.isfinite(loss):
                raise RuntimeError(f"non-finite loss at step {i} ({amp})")

        seconds = time_steps(stage1_step, args.steps, args.warmup, device)
        out[f"{phase.name}_{amp}_samples_s"] = args.batch / seconds
        if device.type == "cuda":
            out[f"{phase.name}_{amp}_peak_GiB"] = torch.cuda.max_memory_allocated(device) / 2**30
    out[f"{phase.name}_amp_speedup"] = (
        out[f"{phase.name}_{args.amp}_samples_s"] / out[f"{phase.name}_off_samples_s"]
    )

    # SPN bank stage: image side frozen, the query side against a float16 bank on the GPU
    with torch.no_grad(), _autocast(device, args.amp):
        reps, vecs = method.encode_images(images[: args.batch])
    reps = reps.float()
    bank = torch.nn.functional.normalize(
        torch.randn(args.bank_rows, vecs.shape[-1], device=device), dim=-1
    ).half()
    objective = BankObjective(tau=0.02, learnable=False, neg_num=None)
    stage2 = method.phases[-1]
    method.set_phase(stage2.name)
    query_params = [p for p in method.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(query_params or params, lr=1e-5)
    positives = torch.randint(0, args.bank_rows, (args.batch,), device=device)
    generator = torch.Generator().manual_seed(0)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    def bank_step(i: int) -> None:
        tokens = method.tokenize(_texts(args.batch, i)).to(device)
        with _autocast(device, args.amp):
            query = method.encode_query(reps, tokens)
        loss = objective(query.float(), bank, positives, generator)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    seconds = time_steps(bank_step, args.steps, args.warmup, device)
    out["bank_rows"] = args.bank_rows
    out[f"bank_{args.amp}_samples_s"] = args.batch / seconds
    if device.type == "cuda":
        out[f"bank_{args.amp}_peak_GiB"] = torch.cuda.max_memory_allocated(device) / 2**30
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="RN50x4", help="open_clip arch (random weights)")
    parser.add_argument("--method", default="clip4cir")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--amp", choices=["bf16", "fp16"], default="bf16")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--bank-rows", type=int, default=100_000)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error("CUDA is not available here; pass --device cpu (with a small --arch)")
    result = run(args)
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text)


if __name__ == "__main__":
    main()
