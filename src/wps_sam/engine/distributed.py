"""Multi-GPU training with ``torchrun``: process group, rank helpers, and DDP over the prompter only.

SAM is frozen, so only the prompter is wrapped in ``DistributedDataParallel`` (as timm's
distillation wraps only the student); the image encoder, teacher and mask decoder stay plain modules
on every rank. Without torchrun's environment every helper degrades to a single process.

Launch: ``torchrun --nproc_per_node=NGPU -m wps_sam.cli train ...``. torchrun sets ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``; the backend is NCCL on CUDA and
gloo on the CPU.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any, TypeVar

import torch
import torch.distributed as dist
from torch import Tensor, nn

if TYPE_CHECKING:
    from torch.nn.parallel import DistributedDataParallel

    from ..modeling.wps_sam import WPSSAM

logger = logging.getLogger(__name__)
T = TypeVar("T")


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def get_world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    """True on rank 0 (and in a single process): the rank that logs and writes run files."""
    return get_rank() == 0


def init_distributed(backend: str | None = None, timeout_s: float = 1800.0) -> tuple[int, int, int]:
    """Join the process group that torchrun's environment describes; returns (rank, world_size, local_rank).

    Without ``WORLD_SIZE`` > 1 in the environment nothing is initialised and (0, 1, 0) is returned.
    ``backend`` defaults to ``nccl`` when CUDA is available (each rank then uses ``cuda:LOCAL_RANK``)
    and ``gloo`` otherwise. Idempotent.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if world_size <= 1:
        return 0, 1, 0
    if not is_distributed():
        if backend is None:
            backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(local_rank)
        dist.init_process_group(
            backend, rank=rank, world_size=world_size, timeout=timedelta(seconds=timeout_s)
        )
        logger.info(
            "rank %d of %d (local %d) joined the %s process group", rank, world_size, local_rank, backend
        )
    return rank, world_size, local_rank


def cleanup() -> None:
    """Leave the process group (if any)."""
    if is_distributed():
        dist.destroy_process_group()


def barrier() -> None:
    """Wait for every rank (a no-op in a single process)."""
    if is_distributed():
        dist.barrier()


def shard(items: Sequence[T], rank: int | None = None, world_size: int | None = None) -> list[T]:
    """The items of ``rank`` (default: this process): every ``world_size``-th item from ``rank``."""
    rank = get_rank() if rank is None else rank
    world_size = get_world_size() if world_size is None else world_size
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is outside 0..{world_size - 1}")
    return list(items[rank::world_size])


def all_reduce_mean(stats: dict[str, float]) -> dict[str, float]:
    """The mean over ranks of each logged statistic (the input itself in a single process)."""
    if not is_distributed() or not stats:
        return dict(stats)
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else None
    names = sorted(stats)
    values = torch.tensor([float(stats[k]) for k in names], dtype=torch.float64, device=device)
    dist.all_reduce(values, op=dist.ReduceOp.SUM)
    values /= get_world_size()
    return dict(zip(names, values.tolist()))


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """``obj`` of rank ``src`` on every rank (picklable objects only)."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def wrap_prompter(model: WPSSAM, device: torch.device | None = None) -> DistributedDataParallel:
    """``DistributedDataParallel`` over ``model.prompter``, the only trainable part of WPS-SAM.

    ``model`` is left as it is (its ``state_dict`` keys do not change): the returned module shares the
    prompter's parameters, and the training loop calls it where it would call ``model(embeddings)``
    so that the gradients are averaged over ranks in ``backward()``. Broadcasts rank 0's prompter
    weights at construction, so every rank starts equal.
    """
    from torch.nn.parallel import DistributedDataParallel

    if not is_distributed():
        raise RuntimeError(
            "wrap_prompter needs an initialised process group (init_distributed under torchrun)"
        )
    device_ids = None
    if device is not None and device.type == "cuda":
        device_ids = [device.index if device.index is not None else torch.cuda.current_device()]
    return DistributedDataParallel(model.prompter, device_ids=device_ids)


def unwrap(module: nn.Module) -> nn.Module:
    """The module inside a DDP (or ``torch.compile``) wrapper; the module itself otherwise."""
    from torch.nn.parallel import DistributedDataParallel

    while True:
        if isinstance(module, DistributedDataParallel):
            module = module.module
        elif hasattr(module, "_orig_mod"):
            module = module._orig_mod
        else:
            return module


def mean_over_ranks(tensor: Tensor) -> Tensor:
    """In-place mean of ``tensor`` over ranks (e.g. DETR's ``num_boxes`` normaliser); returns it."""
    if is_distributed():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        tensor /= get_world_size()
    return tensor
