"""Inference backends (serve.backends): ONNX Runtime against PyTorch, TensorRT against ONNX
Runtime (needs TensorRT and a GPU), and their failures as one line."""

import sys

import numpy as np
import pytest
import torch
from fakes.cli import one_line
from fakes.images import photo

from adaptsr.adapt.backend import TorchBackend
from adaptsr.core.errors import UserError
from adaptsr.core.tiling import tiled_upscale
from adaptsr.serve.backends import OnnxBackend

pytestmark = pytest.mark.usefixtures("one_thread")


def test_onnx_backend_reads_metadata_and_matches_pytorch(edsr_artifacts):
    onnx_backend = OnnxBackend(edsr_artifacts["onnx"], provider="cpu")
    assert onnx_backend.scale == 2 and onnx_backend.rule.min_size == 8
    assert onnx_backend.rule.static is None and onnx_backend.device == "cpu"
    img = photo(60, 70)
    ref = tiled_upscale(
        TorchBackend(edsr_artifacts["model"], "cpu").run, img, 2, onnx_backend.rule, 0
    )
    out = tiled_upscale(onnx_backend.run, img, 2, onnx_backend.rule, tile=48, overlap=20, batch=3)
    assert np.abs(out - ref).max() <= 1 / 255


def test_onnx_backend_infers_scale_and_static_shapes(edsr_artifacts):
    bare = OnnxBackend(edsr_artifacts["bare"], provider="cpu")
    assert bare.scale == 2 and bare.rule.min_size == 1  # from running a small input
    static = OnnxBackend(edsr_artifacts["static"], provider="cpu")
    assert static.rule.static == (32, 32) and static.fixed_batch == 1 and static.scale == 2
    img = photo(50, 70)
    out = tiled_upscale(static.run, img, 2, static.rule, tile=None, overlap=12, batch=4)
    ref = tiled_upscale(bare.run, img, 2, bare.rule, tile=0)
    assert out.shape == ref.shape == (3, 100, 140)
    assert np.abs(out - ref).mean() < 1 / 255


@pytest.mark.tensorrt
def test_tensorrt_engine_matches_onnx_runtime(edsr_artifacts, tmp_path):
    trt = pytest.importorskip("tensorrt")
    pytest.importorskip("cuda.bindings", reason="TensorRT engines run through cuda-python")
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    from adaptsr.serve.backends import TensorRTBackend

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    with open(edsr_artifacts["onnx"], "rb") as f:
        assert parser.parse(f.read())
    config = builder.create_builder_config()
    profile = builder.create_optimization_profile()
    profile.set_shape("input", (1, 3, 16, 16), (2, 3, 32, 32), (4, 3, 64, 64))
    config.add_optimization_profile(profile)
    engine_path = tmp_path / "tiny.engine"
    engine_path.write_bytes(bytes(builder.build_serialized_network(network, config)))

    engine = TensorRTBackend(engine_path)
    assert engine.scale == 2 and engine.max_batch == 4 and engine.rule.max_size == (64, 64)
    onnx_backend = OnnxBackend(edsr_artifacts["onnx"], provider="cpu")
    img = photo(100, 90)
    ref = tiled_upscale(onnx_backend.run, img, 2, onnx_backend.rule, tile=0)
    out = tiled_upscale(engine.run, img, 2, engine.rule, tile=None, overlap=24, batch=6)
    assert np.abs(out - ref).max() <= 1 / 255
    assert engine.peak_memory_bytes() > 0


def test_tensorrt_type_stubs_alone_are_not_tensorrt(monkeypatch):
    """tensorrt-stubs leaves an importable `tensorrt` with no library behind it."""
    import types

    from adaptsr.serve.backends import import_tensorrt

    monkeypatch.setitem(sys.modules, "tensorrt", types.ModuleType("tensorrt"))
    with pytest.raises(UserError, match="only its type stubs"):
        import_tensorrt()


def test_onnx_runtime_failures_are_one_line(tmp_path):
    """A graph that loads but fails at run time: ONNX Runtime's own log (written by C++ to the
    process's stderr, hence a subprocess) stays silent."""
    import subprocess

    import onnx
    from onnx import TensorProto, helper

    shape = helper.make_tensor("shape", TensorProto.INT64, [1], [7])
    graph = helper.make_graph(
        [helper.make_node("Reshape", ["x", "shape"], ["y"])],
        "bad",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, "h", "w"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, "H", "W"])],
        [shape],
    )
    path = tmp_path / "bad.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), path)
    cmd = [sys.executable, "-m", "adaptsr.cli.app", "bench", str(path), "--size", "16", "16",
           "--runs", "1", "--provider", "cpu"]  # fmt: skip
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    code, err = r.returncode, r.stderr
    line = one_line(code, err, "ONNX Runtime failed")
    assert [x for x in err.splitlines() if x.strip()] == [line], err
