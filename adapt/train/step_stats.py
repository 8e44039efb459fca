"""Loss and data-path timings of the training loop over one logging interval."""

from __future__ import annotations

import contextlib
import time

import torch
import torch.distributed as dist

from adaptsr.adapt.train.distributed import Dist


class StepStats:
    """Loss and data-path timings over one logging interval.

    The losses stay on the device as they come (and the degradation is timed with CUDA
    events), so a step never waits for the GPU: they are copied to the host in one transfer
    when read, at a log interval or before a checkpoint.
    """

    def __init__(self, device: torch.device, d: Dist, start: int):
        self.device, self.dist = device, d
        self.events = device.type == "cuda"
        self.iteration = start  # of the last loss added
        self.reset()

    def reset(self):
        self.pending, self.losses, self.wait, self.degrade, self.degraded = [], [], 0.0, 0.0, 0
        self.marks = []
        self.t0 = time.perf_counter()

    def add(self, loss: torch.Tensor, wait: float):
        self.pending.append(loss)
        self.wait += wait
        self.iteration += 1

    @contextlib.contextmanager
    def degrading(self):
        """Time one degradation: CUDA events on the GPU, the wall clock elsewhere (the caller
        adds the number of images degraded to `degraded`)."""
        if self.events:
            start, end = (torch.cuda.Event(enable_timing=True) for _ in range(2))
            start.record()
            yield
            end.record()
            self.marks.append((start, end))
        else:
            t = time.perf_counter()
            yield
            self.degrade += time.perf_counter() - t

    def read(self, check) -> None:
        """Bring the pending losses to the host (the mean over processes under DDP) and give
        them to `check(losses, first_iteration)`."""
        if not self.pending:
            return
        values = torch.stack(self.pending)
        if self.dist.world > 1:
            dist.all_reduce(values)
            values /= self.dist.world
        first = self.iteration - len(self.pending) + 1
        self.pending = []
        host = values.tolist()  # the one host sync of the interval
        self.losses += host
        check(host, first)

    def flush(self, check) -> dict:
        self.read(check)
        n = len(self.losses)
        elapsed = time.perf_counter() - self.t0
        degrade = self.degrade + sum(s.elapsed_time(e) for s, e in self.marks) / 1000
        record = {
            "loss": sum(self.losses) / n,
            "it_s": n / elapsed if elapsed > 0 else None,
            "data_wait_s": self.wait / n,
        }
        if self.degraded and degrade > 0:
            record["degrade_per_s"] = self.degraded / degrade
        self.reset()
        return record
