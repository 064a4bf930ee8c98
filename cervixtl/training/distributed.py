"""torchrun / DistributedDataParallel helpers: rank 0 decides, the other ranks follow."""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch

__all__ = ["is_lead_process", "dist_setup", "broadcast_ints"]


def is_lead_process() -> bool:
    """True unless this is a rank other than 0 of a ``torchrun`` job (only rank 0 reports and writes)."""
    return int(os.environ.get("RANK", "0")) == 0


def dist_setup() -> tuple[int, int, int]:
    """(rank, world size, local rank); initialises the process group under torchrun (gloo on CPU)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, 0
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
    return dist.get_rank(), world, int(os.environ.get("LOCAL_RANK", "0"))


def broadcast_ints(values: Sequence[int], world: int, device: torch.device) -> list[int]:
    """Rank 0's ``values`` on every rank (a no-op without torchrun): stop flags, schedule length."""
    if world <= 1:
        return [int(v) for v in values]
    import torch.distributed as dist

    t = torch.tensor([int(v) for v in values], dtype=torch.long, device=device)
    dist.broadcast(t, src=0)
    return [int(v) for v in t.tolist()]
