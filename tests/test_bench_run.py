"""`adapt bench` as library calls: serve.bench_run times artifacts opened by a loader,
export.ab_check compares two; the engine branches run here with stand-ins for TensorRT."""

import json
from types import SimpleNamespace

import numpy as np
import pytest

from adaptsr.core.errors import UserError
from adaptsr.export import ab_check
from adaptsr.export.trt_inspect import compare_layers
from adaptsr.serve import bench_run
from adaptsr.serve.backends import Backend
from adaptsr.serve.engine_timing import EngineTiming
from adaptsr.serve.timing import Comparison, Latency


class Nearest(Backend):
    """x2 nearest-neighbour upscaling, in numpy."""

    scale = 2

    def __init__(self, name: str, kind: str = "onnx", engine=None):
        self.name, self.kind, self.engine = name, kind, engine

    def _forward(self, batch):
        return batch.repeat(2, axis=2).repeat(2, axis=3)


def _latency(ms):
    return Latency(median_ms=ms, p90_ms=ms, mean_ms=ms, runs=3)


def test_engines_also_get_their_copy_and_compute_split(monkeypatch):
    timed = []

    def fake_time_engine(backend, shape, runs, warmup, cuda_graph=False):
        timed.append((backend.name, shape, runs, warmup, cuda_graph))
        return EngineTiming(shape, cuda_graph, _latency(0.1), _latency(0.5), _latency(0.2))

    monkeypatch.setattr(bench_run, "time_engine", fake_time_engine)
    opened = []

    def open_backend(spec):
        opened.append(spec)
        return Nearest(spec, "tensorrt" if spec.endswith(".plan") else "onnx")

    settings = bench_run.BenchSettings(size=(16, 24), runs=3, warmup=1, batch=2, cuda_graph=True)
    rows = bench_run.bench_artifacts(["a.onnx", "b.plan"], open_backend, settings)
    assert opened == ["a.onnx", "b.plan"]
    assert timed == [("b.plan", (2, 3, 16, 24), 3, 1, True)]
    assert rows[0].engine is None and rows[1].engine.compute.median_ms == 0.5
    out = [row.to_json() for row in rows]
    assert "engine_timing" not in out[0] and out[1]["engine_timing"]["shape"] == [2, 3, 16, 24]
    assert out[0]["latency"]["runs"] == 3 and tuple(out[0]["size"]) == (16, 24)
    json.dumps(out)  # plain JSON
    table = bench_run.bench_table(rows).splitlines()
    assert table[0].startswith("artifact") and len(table) == 4
    assert table[3] == (
        "  b.plan at (2, 3, 16, 24): GPU compute 0.500 ms, H2D 0.100 ms, D2H 0.200 ms "
        "(medians, CUDA events, pinned buffers, CUDA graph)"
    )


def _comparison(verdict):
    return Comparison(1.0, 0.99, 1.01, 0.95, _latency(2.0), _latency(2.0), 8, 0.02, verdict)


# export.trt_inspect without TensorRT: an engine's layers are what the stand-in holds
FAKE_INSPECT = SimpleNamespace(engine_layers=lambda engine: engine, compare_layers=compare_layers)


def test_two_engines_are_compared_layer_by_layer(monkeypatch):
    monkeypatch.setattr(ab_check, "trt_inspect", FAKE_INSPECT)
    monkeypatch.setattr(ab_check, "compare_backends", lambda *a, **k: _comparison("PASS"))
    layer = {"name": "conv", "type": "Convolution", "precision": "FLOAT"}
    engines = {"a.plan": [layer], "same.plan": [layer], "other.plan": [layer, layer]}

    def open_backend(spec):
        return Nearest(spec, "tensorrt", engine=engines[spec])

    same = ab_check.check_overhead("a.plan", "same.plan", open_backend, (16, 16), rounds=8)
    assert same.passed and same.structure is None and same.layers["structure_identical"]
    text = same.text().splitlines()
    assert text[0] == "timed: GPU compute time (CUDA events around execute_async_v3)"
    assert text[4] == "graph, proven: engine layers identical (1 layers): PASS"
    assert same.to_json()["layers"]["layers"] == [1, 1]
    other = ab_check.check_overhead("a.plan", "other.plan", open_backend, (16, 16), rounds=8)
    assert not other.passed  # the timing passed, the layers did not
    assert other.graph_line() == "engine layers differ, 1 layers in the base engine, 2 merged: FAIL"


def test_artifacts_of_two_kinds_are_refused_before_loading(monkeypatch):
    opened = []
    with pytest.raises(UserError, match="--base is a onnx artifact but --candidate is tensorrt"):
        ab_check.check_overhead("a.onnx", "b.plan", opened.append, (16, 16))
    assert not opened
    monkeypatch.setattr(ab_check, "compare_backends", lambda *a, **k: _comparison("FAIL"))
    slow = ab_check.check_overhead("a.pth", "b.pth", lambda s: Nearest(s, "pytorch"), (8, 8))
    assert not slow.passed and slow.to_json()["structure"] is None
    assert slow.graph_line() == "not compared (pytorch artifacts hold no ONNX graph)"
    assert np.isclose(slow.to_json()["ratio"], 1.0)
