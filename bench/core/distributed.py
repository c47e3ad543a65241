"""Data-parallel training under ``torchrun``: one process per device, the global batch
split across them, gradients summed.

The engine calls these helpers everywhere; without ``torchrun`` (``$WORLD_SIZE`` unset
or 1) every one of them is a no-op, so single-process training is unchanged.

What the engine does with them (:func:`bench.train.engine.train`):

* every rank builds the same model from the same seed and draws the same epoch order;
  each optimiser step takes the spec's ``train.batch_size`` (the *global* batch), split
  into contiguous shards, one per rank (:func:`shard`, :func:`shard_sizes`);
* in-batch objectives (stage 1, P): each rank encodes its shard's images, the features
  are all-gathered (:func:`all_gather_rows`), and every rank computes the method's loss
  over the whole global batch, so each query keeps all ``batch_size - 1`` in-batch
  negatives; the gradient reaches the parameters the loss uses directly on every rank
  (weighted ``1 / world``) and the image encoders through each rank's own rows only
  (:func:`bench.train.loop._in_batch_step`);
* the SPN bank stage (N): one loss term per query, so each rank computes its shard's
  queries only, weighted by its share of the batch;
* the gradients are then summed across ranks in one all-reduce
  (:func:`all_reduce_gradients`): every rank takes the single-process step (up to the
  order of float sums; with dropout on, the random masks differ from one process's;
  BatchNorm layers in a trained image encoder, as in the RN50 family, normalise over
  each rank's shard, as in plain DDP: there is no SyncBatchNorm);
* rank 0 evaluates, writes checkpoints and results and logs to MLflow; the other ranks
  receive its metrics (:func:`broadcast`) and wait for its files (:func:`barrier`).

Launch: ``torchrun --nproc_per_node N -m bench.cli train SPEC.yaml`` (one machine) or
with ``--nnodes`` / ``--rdzv-endpoint`` across machines (the run folder, ``CIRBENCH_HOME``,
must be shared). Backend: NCCL on CUDA, gloo on the CPU.
"""

from __future__ import annotations

import atexit
import contextlib
import os
from collections.abc import Iterator
from typing import Any

import torch
import torch.distributed as dist

from bench.core.errors import CirbenchError


class DistributedError(CirbenchError):
    """torchrun's environment is inconsistent, or the process group cannot start."""


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    try:
        return int(value)
    except ValueError:
        raise DistributedError(f"environment variable {name}={value!r} is not an integer") from None


def world_size() -> int:
    """Number of ranks (``$WORLD_SIZE`` set by torchrun; 1 without it)."""
    return _env_int("WORLD_SIZE", 1)


def rank() -> int:
    return _env_int("RANK", 0)


def local_rank() -> int:
    return _env_int("LOCAL_RANK", 0)


def is_distributed() -> bool:
    return world_size() > 1


def is_main() -> bool:
    return rank() == 0


def init(device_type: str) -> None:
    """Start the process group once per process (NCCL on CUDA, gloo otherwise)."""
    if not is_distributed() or dist.is_initialized():
        return
    if not 0 <= rank() < world_size():
        raise DistributedError(f"RANK={rank()} is outside WORLD_SIZE={world_size()}")
    backend = "nccl" if device_type == "cuda" else "gloo"
    try:
        dist.init_process_group(backend=backend)
    except Exception as exc:  # rendezvous errors come in many types
        raise DistributedError(
            f"cannot start the {backend} process group as rank {rank()} of {world_size()} "
            f"({type(exc).__name__}: {exc}); launch with torchrun"
        ) from exc
    atexit.register(_shutdown)


def _shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def device(name: str) -> torch.device:
    """This rank's device: ``cuda:<LOCAL_RANK>`` for CUDA under torchrun, else ``name``."""
    dev = torch.device(name)
    if dev.type == "cuda" and is_distributed() and dev.index is None:
        dev = torch.device("cuda", local_rank())
        torch.cuda.set_device(dev)
    return dev


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


@contextlib.contextmanager
def main_first() -> Iterator[None]:
    """Rank 0 runs the block first (fills caches, writes files), then the other ranks."""
    if not dist.is_initialized():
        yield
        return
    if not is_main():
        dist.barrier()
    yield
    if is_main():
        dist.barrier()


def broadcast(obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank (any picklable object)."""
    if not dist.is_initialized():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def shard_sizes(n: int) -> list[int]:
    """Rows of a global batch of ``n`` per rank: contiguous shards, the first ``n % world``
    ranks one row more (``numpy.array_split``); every rank knows every rank's size."""
    base, extra = divmod(n, world_size())
    return [base + (1 if r < extra else 0) for r in range(world_size())]


def shard(batch: Any) -> Any:
    """This rank's contiguous rows of a global batch (an index array); the shards in rank
    order are the batch in its order."""
    if not is_distributed():
        return batch
    sizes = shard_sizes(len(batch))
    lo = sum(sizes[: rank()])
    return batch[lo : lo + sizes[rank()]]


def all_gather_rows(local: torch.Tensor, sizes: list[int]) -> torch.Tensor:
    """Every rank's rows of a tensor (``sizes[r]`` rows on rank ``r``), in rank order,
    detached; shards of unequal size are padded for the collective and trimmed after."""
    if not dist.is_initialized():
        return local.detach()
    rows = max(sizes)
    padded = local.new_zeros((rows, *local.shape[1:]))
    padded[: local.shape[0]] = local.detach()
    out = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(out, padded)
    return torch.cat([part[:size] for part, size in zip(out, sizes, strict=True)])


def all_reduce_gradients(params: list[torch.nn.Parameter]) -> None:
    """Sum the (already share-weighted) gradients of ``params`` across ranks, in one
    flattened all-reduce. A parameter without a gradient on this rank (an empty shard)
    contributes zeros, so every rank joins the same collective; one that no rank gave a
    gradient keeps none (the optimiser skips it, as in a single process)."""
    if not dist.is_initialized() or not params:
        return
    present = [p.grad is not None for p in params]
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flags = torch.tensor(present, dtype=grads[0].dtype, device=grads[0].device)
    flat = torch.cat([g.reshape(-1) for g in grads] + [flags])
    dist.all_reduce(flat)
    offset = 0
    for param, grad in zip(params, grads, strict=True):
        n = grad.numel()
        param.grad = flat[offset : offset + n].view_as(param).to(param.dtype, copy=True)
        offset += n
    for param, anywhere in zip(params, flat[offset:].tolist(), strict=True):
        if anywhere == 0:
            param.grad = None


def sum_across(*values: float) -> tuple[float, ...]:
    """Element-wise sum of a few numbers over ranks (epoch loss totals, sample counts)."""
    if not dist.is_initialized():
        return values
    on = torch.device("cuda", local_rank()) if dist.get_backend() == "nccl" else None
    tensor = torch.tensor(values, dtype=torch.float64, device=on)
    dist.all_reduce(tensor)
    return tuple(tensor.tolist())
