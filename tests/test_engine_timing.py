"""Engine timing (adaptsr.serve.engine_timing) and the A/B of two engines' GPU compute times
(adaptsr.serve.backend_bench): the logic, on stand-in clocks."""

import numpy as np
import pytest

from adaptsr.serve import backend_bench, cudart, engine_timing
from adaptsr.serve.backends import Backend


def test_engine_timing_splits_copies_and_compute(monkeypatch):
    clock = {"t": 0.0}
    durations = {"upload": 1.0, "compute": 5.0, "download": 16.0}  # ms; x4: output is 16x

    class Event:
        def record(self, stream):
            self.t = clock["t"]

        def elapsed_ms(self, start):
            return self.t - start.t

    class Engine:
        stream = None

        def prepare(self, shape):
            n, c, h, w = shape
            return np.zeros(shape, np.float32), np.zeros((n, c, 4 * h, 4 * w), np.float32)

        def upload(self, h_in):
            clock["t"] += durations["upload"]

        def enqueue(self):
            clock["t"] += durations["compute"]

        def download(self, h_out):
            clock["t"] += durations["download"]

        def sync(self):
            pass

    monkeypatch.setattr(cudart, "Event", Event)
    t = engine_timing.time_engine(Engine(), (1, 3, 8, 8), runs=5, warmup=1)
    assert t.h2d.median_ms == pytest.approx(1.0) and t.compute.median_ms == pytest.approx(5.0)
    assert t.d2h.median_ms == pytest.approx(16.0) and t.compute.runs == 5
    clock_s = engine_timing.compute_clock(Engine(), (1, 3, 8, 8))
    assert clock_s() == pytest.approx(5e-3)  # compute only, no copies


def test_ab_of_two_engines_compares_gpu_compute_time(monkeypatch):
    class Engine(Backend):
        kind, device, scale = "tensorrt", "cuda", 2

        def __init__(self, ms):
            self.ms = ms

        def _forward(self, batch):  # wall clock: instant for both
            return batch

    rng = np.random.default_rng(0)

    def clock(backend, shape, cuda_graph=False):  # the GPU compute time the events measure
        assert shape == (1, 3, 32, 32)
        return lambda: backend.ms * 1e-3 * (1 + 0.001 * rng.standard_normal())

    monkeypatch.setattr(engine_timing, "compute_clock", clock)
    result = backend_bench.compare_backends(Engine(1.0), Engine(1.5), (32, 32), rounds=12, warmup=1)
    assert result.ratio == pytest.approx(1.5, rel=0.01) and result.verdict == "FAIL"
    assert result.base.median_ms == pytest.approx(1.0, rel=0.01)
    same = backend_bench.compare_backends(Engine(1.0), Engine(1.0), (32, 32), rounds=12, warmup=1)
    assert same.verdict == "PASS"
