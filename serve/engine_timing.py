"""TensorRT engine timing as trtexec reports it (no torch).

CUDA events on the engine's stream split each inference into host-to-device copy, GPU compute
(`execute_async_v3`, or one CUDA-graph launch of it) and device-to-host copy, from pinned host
buffers. For an x4 model the output copy moves 16x the input's bytes, so wall-clock time around
a whole call says little about the engine; the GPU compute time is what two engines of one
model are compared on (`adapt bench --base --candidate`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from adaptsr.core.images import synthetic_image
from adaptsr.serve import cudart
from adaptsr.serve.timing import Latency, latency


@dataclass
class EngineTiming:
    shape: tuple[int, ...]
    cuda_graph: bool
    h2d: Latency  # milliseconds per copy, like every Latency
    compute: Latency
    d2h: Latency

    def to_dict(self) -> dict:
        return {
            "shape": list(self.shape),
            "cuda_graph": self.cuda_graph,
            "h2d": self.h2d.to_dict(),
            "compute": self.compute.to_dict(),
            "d2h": self.d2h.to_dict(),
            "clock": "CUDA events on the engine's stream; pinned host buffers",
        }


def _input(shape: tuple[int, ...]) -> np.ndarray:
    n, _, h, w = shape
    return np.repeat(synthetic_image(h, w)[None], n, axis=0)


class _Steps:
    """One engine bound to one input shape: events around each step, optional CUDA graph."""

    def __init__(self, backend, shape: tuple[int, ...], cuda_graph: bool):
        self.backend = backend
        self.h_in, self.h_out = backend.prepare(shape)
        self.h_in[...] = _input(shape)
        self.events = [cudart.Event() for _ in range(4)]
        backend.enqueue()  # TensorRT finishes shape-dependent setup on the first enqueue
        backend.sync()
        self.graph = cudart.Graph(backend.enqueue, backend.stream) if cuda_graph else None

    def compute(self) -> None:
        if self.graph is not None:
            self.graph.launch(self.backend.stream)
        else:
            self.backend.enqueue()

    def once(self) -> tuple[float, float, float]:
        """(h2d, compute, d2h) milliseconds of one inference."""
        b, (e0, e1, e2, e3), stream = self.backend, self.events, self.backend.stream
        e0.record(stream)
        b.upload(self.h_in)
        e1.record(stream)
        self.compute()
        e2.record(stream)
        b.download(self.h_out)
        e3.record(stream)
        return e1.elapsed_ms(e0), e2.elapsed_ms(e1), e3.elapsed_ms(e2)

    def compute_once_s(self) -> float:
        """Seconds of GPU compute of one inference (no copies)."""
        e1, e2 = self.events[1], self.events[2]
        e1.record(self.backend.stream)
        self.compute()
        e2.record(self.backend.stream)
        return e2.elapsed_ms(e1) / 1e3


def time_engine(
    backend, shape: tuple[int, ...], runs: int = 50, warmup: int = 5, cuda_graph: bool = False
) -> EngineTiming:
    """Median/p90/mean of H2D, compute and D2H over `runs` inferences at `shape`."""
    steps = _Steps(backend, shape, cuda_graph)
    for _ in range(warmup):
        steps.once()
    times = np.array([steps.once() for _ in range(runs)]) / 1e3  # seconds, as latency() takes
    return EngineTiming(
        shape=tuple(shape),
        cuda_graph=cuda_graph,
        h2d=latency(times[:, 0]),
        compute=latency(times[:, 1]),
        d2h=latency(times[:, 2]),
    )


def compute_clock(backend, shape: tuple[int, ...], cuda_graph: bool = False) -> Callable[[], float]:
    """A call that runs the engine once at `shape` and returns its GPU compute seconds."""
    return _Steps(backend, shape, cuda_graph).compute_once_s
