"""Processes and devices: torchrun's environment, the training device, and the collectives the
loop needs besides DistributedDataParallel's own.

Every helper here is a no-op for a single process, so the loop calls them unconditionally.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from adaptsr.adapt.devices import pick_device


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def dist_from_env() -> Dist:
    """torchrun's RANK, WORLD_SIZE and LOCAL_RANK (a single process when absent)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return Dist(int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0")))


def resolve_device(name: str, d: Dist) -> torch.device:
    device = torch.device(pick_device(name))
    if device.type == "cuda":
        if device.index is None:
            device = torch.device("cuda", d.local_rank % torch.cuda.device_count())
        torch.cuda.set_device(device)
    return device


def _gather(obj, d: Dist) -> list:
    """`obj` of every process, in rank order, on every process."""
    if d.world == 1:
        return [obj]

    out = [None] * d.world
    dist.all_gather_object(out, obj)
    return out


def _any(flag: bool, d: Dist, device: torch.device) -> bool:
    """True on every process when any process saw Ctrl-C, so all stop at the same iteration."""
    if d.world == 1:
        return flag

    t = torch.tensor([int(flag)], device=device)  # on the device: nccl reduces no CPU tensors
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def _mean(values: dict[str, float], d: Dist, device: torch.device) -> dict[str, float]:
    """{name: value} averaged over all processes (every process holds the same names)."""
    if d.world == 1:
        return dict(values)

    names = sorted(values)
    t = torch.tensor([values[n] for n in names], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return dict(zip(names, (t / d.world).tolist(), strict=True))
