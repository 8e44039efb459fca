"""`adapt export trt`: profile shapes and argument checks (no TensorRT needed), the build logic
against a recording stand-in of the TensorRT API, and a real build where TensorRT and a GPU
exist."""

import json
import subprocess
import sys
import types

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from adaptsr.artifacts import engine_info_path
from adaptsr.errors import UserError
from adaptsr.export.tensorrt import (
    OnnxInput,
    build_engine,
    parse_hw,
    profile_shapes,
    read_onnx_input,
)


def write_onnx(path, h="height", w="width", precision="fp32", req=(16, 8)):
    """A tiny conv graph with the metadata `adapt export onnx` writes."""
    weight = numpy_helper.from_array(np.ones((3, 3, 1, 1), np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["input", "w"], ["output"])],
        "g",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, h, w])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 3, h, w])],
        [weight],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    meta = {
        "precision": precision,
        "scale": "1",
        "size_requirements": json.dumps({"min_size": req[0], "multiple_of": req[1]}),
    }
    for k, v in meta.items():
        p = model.metadata_props.add()
        p.key, p.value = k, v
    onnx.save(model, path)
    return path


def dyn(min_size=16, multiple=8):
    meta = {"size_requirements": json.dumps({"min_size": min_size, "multiple_of": multiple})}
    return OnnxInput("input", [1, 3, "height", "width"], meta)


def test_parse_hw():
    assert parse_hw("256x320") == (256, 320) and parse_hw("64X64") == (64, 64)
    assert parse_hw(None) is None
    with pytest.raises(UserError, match="HEIGHTxWIDTH"):
        parse_hw("256")


def test_dynamic_profile():
    p = profile_shapes(dyn(), (16, 16), (256, 256), (1024, 512))
    assert p.min == (1, 3, 16, 16) and p.opt == (1, 3, 256, 256) and p.max == (1, 3, 1024, 512)


@pytest.mark.parametrize(
    "shapes,message",
    [
        (((16, 16), (256, 256), None), "give --min-shape, --opt-shape and --max-shape"),
        (((8, 16), (256, 256), (512, 512)), "min height 8 is not allowed.*at least 16"),
        (((16, 16), (250, 256), (512, 512)), "opt height 250.*multiple of 8"),
        (((64, 64), (32, 32), (512, 512)), "min <= opt <= max"),
        (((16, 16), (256, 256), (8192, 512)), "at most 4096"),
    ],
)
def test_dynamic_profile_errors(shapes, message):
    with pytest.raises(UserError, match=message):
        profile_shapes(dyn(), *shapes)


def test_static_profile():
    inp = OnnxInput("input", [1, 3, 64, 96], {})
    p = profile_shapes(inp)
    assert p.min == p.opt == p.max == (1, 3, 64, 96)
    assert profile_shapes(inp, (64, 96), (64, 96), (64, 96)).opt == (1, 3, 64, 96)
    with pytest.raises(UserError, match="static 64x96"):
        profile_shapes(inp, (32, 32), (64, 96), (64, 96))


def test_read_onnx_input(tmp_path):
    inp = read_onnx_input(write_onnx(tmp_path / "m.onnx"))
    assert inp.name == "input" and inp.dims == [1, 3, "height", "width"]
    assert inp.requirements == (16, 8)
    (tmp_path / "bad.onnx").write_bytes(b"not a model")
    with pytest.raises(UserError, match="not an ONNX model"):
        read_onnx_input(tmp_path / "bad.onnx")


def test_argument_errors_come_before_tensorrt(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # import fails
    path = write_onnx(tmp_path / "m.onnx")
    out = tmp_path / "m.engine"
    with pytest.raises(UserError, match="needs the fp16 ONNX"):
        build_engine(path, out, fp16=True)
    with pytest.raises(UserError, match="dynamic height/width"):
        build_engine(path, out)
    with pytest.raises(UserError, match="TensorRT is not installed"):
        build_engine(path, out, min_hw=(16, 16), opt_hw=(64, 64), max_hw=(128, 128))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]


def test_cli_trt_without_tensorrt(run_cli, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    path = write_onnx(tmp_path / "m.onnx", h=32, w=32, precision="fp16")
    code, _, stderr = run_cli("export", "trt", "--fp16", "--onnx", path, "--out",
                              tmp_path / "m.engine")  # fmt: skip
    assert code == 1 and stderr.startswith("error: TensorRT is not installed")
    assert stderr.count("\n") == 1 and not (tmp_path / "m.engine").exists()


def test_export_side_imports_without_torch():
    code = (
        "import sys, adaptsr.export.tensorrt, adaptsr.export.fp16, adaptsr.export.structure, "
        "adaptsr.export.parity, adaptsr.commands.export, adaptsr.cli; "
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


class FakeTensorRT:
    """Records the calls build_engine makes, with the TensorRT 10 Python API's names."""

    __version__ = "10.13.0"

    def __init__(self, parse_ok=True, build_ok=True, cache_ok=True):
        self.calls = []
        self.parse_ok, self.build_ok = parse_ok, build_ok
        rec = self.calls
        fake = self

        class Logger:
            WARNING = 2

            def __init__(self, level):
                rec.append(("logger", level))

        class NetworkDefinitionCreationFlag:
            STRONGLY_TYPED = 5

        class MemoryPoolType:
            WORKSPACE = 0

        class Profile:
            def set_shape(self, name, lo, opt, hi):
                rec.append(("profile", name, lo, opt, hi))

        class Config:
            def set_memory_pool_limit(self, pool, size):
                rec.append(("workspace", pool, size))

            def add_optimization_profile(self, p):
                rec.append(("add_profile",))

            def create_timing_cache(self, data):
                rec.append(("timing_cache", data))
                return "cache"

            def set_timing_cache(self, cache, ignore_mismatch):
                rec.append(("set_timing_cache", cache, ignore_mismatch))
                return cache_ok  # False: the cache was made by another TensorRT or GPU

            def get_timing_cache(self):
                return types.SimpleNamespace(serialize=lambda: b"new-cache")

        class Builder:
            def __init__(self, logger):
                pass

            def create_network(self, flags):
                rec.append(("network", flags))
                return "network"

            def create_builder_config(self):
                return Config()

            def create_optimization_profile(self):
                return Profile()

            def build_serialized_network(self, network, config):
                rec.append(("build", network))
                return b"ENGINE" if fake.build_ok else None

        class OnnxParser:
            num_errors = 1

            def __init__(self, network, logger):
                pass

            def parse_from_file(self, path):
                rec.append(("parse", path))
                return fake.parse_ok

            def get_error(self, i):
                return "In node 0 (Conv): unsupported layout"

        self.Logger, self.Builder, self.OnnxParser = Logger, Builder, OnnxParser
        self.NetworkDefinitionCreationFlag = NetworkDefinitionCreationFlag
        self.MemoryPoolType = MemoryPoolType


def test_build_logic_with_recording_tensorrt(tmp_path, monkeypatch):
    fake = FakeTensorRT()
    monkeypatch.setitem(sys.modules, "tensorrt", fake)
    path = write_onnx(tmp_path / "m.onnx", precision="fp16")
    out = tmp_path / "m.engine"
    cache = tmp_path / "timing.cache"
    info = build_engine(path, out, fp16=True, min_hw=(16, 16), opt_hw=(64, 128),
                        max_hw=(256, 256), workspace_gib=1, timing_cache=cache)  # fmt: skip
    assert out.read_bytes() == b"ENGINE" and cache.read_bytes() == b"new-cache"
    assert ("network", 1 << 5) in fake.calls  # strongly typed, nothing else
    assert ("profile", "input", (1, 3, 16, 16), (1, 3, 64, 128), (1, 3, 256, 256)) in fake.calls
    assert ("workspace", 0, 1 << 30) in fake.calls and ("timing_cache", b"") in fake.calls
    assert info["precision"] == "fp16" and info["strongly_typed"]
    assert json.loads(engine_info_path(out).read_text())["profile"]["opt"] == [1, 3, 64, 128]


@pytest.mark.parametrize(
    "parse_ok,build_ok,message",
    [(False, True, "cannot parse.*Conv"), (True, False, "could not build")],
)
def test_build_failures_write_nothing(tmp_path, monkeypatch, parse_ok, build_ok, message):
    monkeypatch.setitem(sys.modules, "tensorrt", FakeTensorRT(parse_ok, build_ok))
    path = write_onnx(tmp_path / "m.onnx", h=32, w=32)
    with pytest.raises(UserError, match=message):
        build_engine(path, tmp_path / "m.engine")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]


def test_foreign_timing_cache_is_refused(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", FakeTensorRT(cache_ok=False))
    path = write_onnx(tmp_path / "m.onnx", h=32, w=32)
    cache = tmp_path / "timing.cache"
    cache.write_bytes(b"from another GPU")
    with pytest.raises(UserError, match="does not fit this TensorRT version or GPU"):
        build_engine(path, tmp_path / "m.engine", timing_cache=cache)
    assert cache.read_bytes() == b"from another GPU"  # left as it was
    assert not (tmp_path / "m.engine").exists()


def test_engine_name_and_half_static_inputs_are_refused(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", FakeTensorRT())
    path = write_onnx(tmp_path / "m.onnx", h=32, w=32)
    with pytest.raises(UserError, match="name the engine"):
        build_engine(path, tmp_path / "m.bin")
    half = write_onnx(tmp_path / "half.onnx", h=32, w="W")
    with pytest.raises(UserError, match="one static and one dynamic side"):
        build_engine(half, tmp_path / "half.engine", min_hw=(32, 16), opt_hw=(32, 32),
                     max_hw=(32, 64))  # fmt: skip


def _tensorrt_and_gpu() -> bool:
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return False
    try:
        return subprocess.run(["nvidia-smi"], capture_output=True).returncode == 0
    except FileNotFoundError:
        return False


@pytest.mark.tensorrt
@pytest.mark.skipif(not _tensorrt_and_gpu(), reason="needs TensorRT and an NVIDIA GPU")
def test_real_fp16_engine_from_exported_onnx(tmp_path):
    from adaptsr.adapt.models import build_model
    from adaptsr.export.onnx import export_onnx

    onnx_path = tmp_path / "safmn.onnx"
    export_onnx(build_model("safmn-x2"), onnx_path, dynamic=True, fp16=True)
    info = build_engine(onnx_path, tmp_path / "safmn.engine", fp16=True, min_hw=(64, 64),
                        opt_hw=(256, 256), max_hw=(512, 512))  # fmt: skip
    assert (tmp_path / "safmn.engine").stat().st_size > 0
    assert info["precision"] == "fp16"
