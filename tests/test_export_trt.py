"""`adapt export trt`: profile shapes and argument checks (no TensorRT needed), the build, refit
and sidecar logic against a recording stand-in of the TensorRT API (its calls are type-checked
against tensorrt-stubs by `make lint`), verification against ONNX Runtime, engine layer
comparison, and real builds where TensorRT and a GPU exist."""

import hashlib
import json
import math
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from adaptsr.core.artifacts import check_engine_info, engine_info_path
from adaptsr.core.contracts import EngineSidecar
from adaptsr.core.errors import UserError
from adaptsr.core.images import Image, synthetic_image, write_image
from adaptsr.export import parity
from adaptsr.export import tensorrt as trt_export
from adaptsr.export.tensorrt import (
    OnnxInput,
    Profile,
    build_engine,
    parse_batch,
    parse_hw,
    profile_shapes,
    read_onnx_input,
    refit_engine,
)
from adaptsr.export.trt_inspect import compare_layers
from adaptsr.export.trt_verify import photo_batch, verify
from adaptsr.serve.backends import Backend, engine_size_rule


def write_onnx(path, h="height", w="width", precision="fp32", req=(16, 8), n=1, weight=1.0,
               adapter=""):  # fmt: skip
    """A tiny conv graph with the metadata `adapt export onnx` writes."""
    weight = numpy_helper.from_array(np.full((3, 3, 1, 1), weight, np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["input", "w"], ["output"])],
        "g",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [n, 3, h, w])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [n, 3, h, w])],
        [weight],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    meta = {
        "precision": precision,
        "scale": "1",
        "size_requirements": json.dumps({"min_size": req[0], "multiple_of": req[1]}),
        "adapter_fingerprint": adapter,
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
    with pytest.raises(UserError, match="needs the fp16 ONNX.*or on TensorRT 10 --route fp16-flag"):
        build_engine(path, out, fp16=True)
    with pytest.raises(UserError, match="dynamic height/width"):
        build_engine(path, out)
    with pytest.raises(UserError, match="TensorRT is not installed"):
        build_engine(path, out, min_hw=(16, 16), opt_hw=(64, 64), max_hw=(128, 128))
    fp16 = write_onnx(tmp_path / "h.onnx", h=32, w=32, precision="fp16")
    with pytest.raises(UserError, match="give --reference MODEL.onnx.*or --no-verify"):
        build_engine(fp16, out, fp16=True)
    with pytest.raises(UserError, match="fp16-flag builds fp16 from the fp32 ONNX"):
        build_engine(fp16, out, fp16=True, route="fp16-flag", verify=False)
    with pytest.raises(UserError, match="--reference .* is fp16; it must be the fp32 ONNX"):
        build_engine(fp16, out, fp16=True, reference=fp16)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["h.onnx", "m.onnx"]


def test_cli_trt_without_tensorrt(run_cli, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    path = write_onnx(tmp_path / "m.onnx", h=32, w=32, precision="fp16")
    code, _, stderr = run_cli("export", "trt", "--fp16", "--onnx", path, "--out",
                              tmp_path / "m.engine", "--no-verify")  # fmt: skip
    assert code == 1 and stderr.startswith("error: TensorRT is not installed")
    assert stderr.count("\n") == 1 and not (tmp_path / "m.engine").exists()


def test_export_side_imports_without_torch():
    code = (
        "import sys, adaptsr.export.tensorrt, adaptsr.export.fp16, adaptsr.export.structure, "
        "adaptsr.export.parity, adaptsr.export.trt_inspect, adaptsr.export.trt_verify, "
        "adaptsr.export.trt_builder, adaptsr.export.trt_sidecar, adaptsr.core.contracts, "
        "adaptsr.serve.cudart, adaptsr.serve.engine_timing, adaptsr.cli.commands.export, "
        "adaptsr.cli.app; "
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


GPU = {"gpu": "NVIDIA Jetson AGX Orin", "compute_capability": "8.7"}
CONV = {
    "LayerType": "CaskConvolution",
    "Inputs": [{"Name": "input", "Format/Datatype": "Half"}],
    "Outputs": [{"Name": "output", "Format/Datatype": "Half"}],
    "TacticName": "sm80_xmma_a",
}


class FakeTensorRT:
    """Records the calls build_engine and refit_engine make, with the TensorRT Python API's
    names (the real signatures are checked by mypy against tensorrt-stubs)."""

    def __init__(self, version="10.13.0.35", parse_ok=True, build_ok=True, cache_ok=True,
                 layers=None, network=(), missing=(), refit_ok=True):  # fmt: skip
        self.__version__ = version
        self.parse_ok, self.build_ok = parse_ok, build_ok
        self.calls = []
        self.layers = layers or {}  # ONNX file name -> the inspector's layer list
        rec, fake = self.calls, self

        class Logger:
            WARNING = 2

            def __init__(self, level):
                pass

        self.NetworkDefinitionCreationFlag = types.SimpleNamespace(STRONGLY_TYPED=1)
        self.MemoryPoolType = types.SimpleNamespace(WORKSPACE=0)
        self.BuilderFlag = types.SimpleNamespace(
            FP16="FP16", OBEY_PRECISION_CONSTRAINTS="OBEY", REFIT="REFIT"
        )
        self.ProfilingVerbosity = types.SimpleNamespace(DETAILED="detailed")
        self.LayerInformationFormat = types.SimpleNamespace(JSON="json")
        self.LayerType = types.SimpleNamespace(
            NORMALIZATION="norm", SOFTMAX="softmax", REDUCE="reduce", CONVOLUTION="conv"
        )
        self.float32, self.float16, self.int32 = "f32", "f16", "i32"
        self.Dims = tuple

        class Layer:
            def __init__(self, i, kind, dtype):
                self.i, self.type, self.num_outputs, self.dtype = i, kind, 1, dtype

            def get_output(self, j):
                return types.SimpleNamespace(dtype=self.dtype)

            def set_output_type(self, j, dtype):
                rec.append(("output_type", self.i, j, dtype))

            def __setattr__(self, key, value):
                if key == "precision":
                    rec.append(("precision", self.i, value))
                object.__setattr__(self, key, value)

        class Network:
            def __init__(self, flags):
                self.flags, self.onnx = flags, None
                self.layers = [Layer(i, k, d) for i, (k, d) in enumerate(network)]

            num_layers = property(lambda self: len(self.layers))

            def get_layer(self, i):
                return self.layers[i]

        class Cache:
            def serialize(self):
                return b"new-cache"

        class Config:
            def __init__(self):
                self.profiling_verbosity = None

            def set_memory_pool_limit(self, pool, size):
                rec.append(("workspace", pool, size))

            def set_flag(self, flag):
                rec.append(("flag", flag))

            def add_optimization_profile(self, p):
                rec.append(("add_profile",))

            def create_timing_cache(self, data):
                rec.append(("timing_cache", data))
                return Cache()

            def set_timing_cache(self, cache, ignore_mismatch):
                rec.append(("set_timing_cache", id(cache), ignore_mismatch))
                return cache_ok  # False: the cache was made by another TensorRT or GPU

        class Profile:
            def set_shape(self, name, lo, opt, hi):
                rec.append(("profile", name, lo, opt, hi))

        class Builder:
            def __init__(self, logger):
                pass

            def create_network(self, flags):
                rec.append(("network", flags))
                return Network(flags)

            def create_builder_config(self):
                return Config()

            def create_optimization_profile(self):
                return Profile()

            def build_serialized_network(self, network, config):
                rec.append(("build", network.onnx, config.profiling_verbosity))
                plan = {"onnx": network.onnx, "refittable": ("flag", "REFIT") in rec}
                return json.dumps(plan).encode() if fake.build_ok else None

        class OnnxParser:
            num_errors = 1

            def __init__(self, network, logger):
                self.network = network

            def parse_from_file(self, path):
                rec.append(("parse", path))
                self.network.onnx = Path(path).name
                return fake.parse_ok

            def get_error(self, i):
                return "In node 0 (Conv): unsupported layout"

        class Engine:
            def __init__(self, plan):
                self.plan = plan

            refittable = property(lambda self: self.plan["refittable"])

            def create_engine_inspector(self):
                layers = fake.layers.get(self.plan["onnx"], [])
                info = json.dumps({"Layers": layers})
                return types.SimpleNamespace(get_engine_information=lambda fmt: info)

            def serialize(self):
                return json.dumps(self.plan).encode()

        class Runtime:
            def __init__(self, logger):
                pass

            def deserialize_cuda_engine(self, data):
                rec.append(("deserialize",))
                return Engine(json.loads(data))

        class Refitter:
            def __init__(self, engine, logger):
                self.engine = engine

            def get_missing_weights(self):
                return list(missing)

            def refit_cuda_engine(self):
                rec.append(("refit",))
                return refit_ok

        class OnnxParserRefitter:
            num_errors = 1

            def __init__(self, refitter, logger):
                self.refitter = refitter

            def refit_from_file(self, path):
                rec.append(("refit_from", path))
                self.refitter.engine.plan["onnx"] = Path(path).name
                return fake.parse_ok

            def get_error(self, i):
                return "weights 'w' have another shape"

        self.Logger, self.Builder, self.OnnxParser = Logger, Builder, OnnxParser
        self.Runtime = Runtime
        self.Refitter, self.OnnxParserRefitter = Refitter, OnnxParserRefitter


@pytest.fixture
def fake_trt(monkeypatch):
    """Install a FakeTensorRT (and a fake GPU) for the duration of a test."""

    def install(**kwargs):
        fake = FakeTensorRT(**kwargs)
        monkeypatch.setitem(sys.modules, "tensorrt", fake)
        monkeypatch.setattr(trt_export, "gpu_info", lambda: dict(GPU))
        return fake

    return install


def test_strongly_typed_build_writes_the_sidecar(tmp_path, fake_trt):
    fake = fake_trt()
    path = write_onnx(tmp_path / "m.onnx", precision="fp16", adapter="abc123")
    out = tmp_path / "m.engine"
    cache = tmp_path / "timing.cache"
    info = build_engine(path, out, fp16=True, min_hw=(16, 16), opt_hw=(64, 128),
                        max_hw=(256, 256), workspace_gib=1, timing_cache=cache,
                        verify=False)  # fmt: skip
    assert json.loads(out.read_bytes())["onnx"] == "m.onnx" and cache.read_bytes() == b"new-cache"
    assert ("network", 1 << 1) in fake.calls  # strongly typed, nothing else
    assert not [c for c in fake.calls if c[0] == "flag"]  # no FP16 flag, no REFIT
    assert ("build", "m.onnx", "detailed") in fake.calls  # layer details for the inspector
    assert ("profile", "input", (1, 3, 16, 16), (1, 3, 64, 128), (1, 3, 256, 256)) in fake.calls
    assert ("workspace", 0, 1 << 30) in fake.calls and ("timing_cache", b"") in fake.calls
    side = json.loads(engine_info_path(out).read_text())
    assert side == info.to_json() and EngineSidecar.from_json(side, "m.engine.json") == info
    assert side["version"] == 1 and side["zero_overhead"] is None and side["refit_from"] is None
    assert side["tensorrt_version"] == "10.13.0.35" and side["compute_capability"] == "8.7"
    assert side["gpu"] == GPU["gpu"] and side["route"] == "strongly-typed"
    assert side["precision"] == "fp16" and side["strongly_typed"] and not side["refittable"]
    assert side["onnx"] == "m.onnx"  # relative to the engine's folder
    assert side["onnx_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert side["engine_sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()
    assert side["adapter_fingerprint"] == "abc123" and side["profile"]["opt"] == [1, 3, 64, 128]
    assert side["verify"] == {"skipped": "--no-verify"} and side["build_seconds"] >= 0
    assert side["build_command"].startswith(f"adapt export trt --onnx {path} --out {out} --fp16")
    assert "--min-shape 16x16 --opt-shape 64x128 --max-shape 256x256" in side["build_command"]


def test_fp16_flag_route_pins_normalisation_and_softmax_to_fp32(tmp_path, fake_trt):
    network = [("conv", "f32"), ("norm", "f32"), ("softmax", "f32"), ("reduce", "i32"),
               ("reduce", "f32")]  # fmt: skip
    fake = fake_trt(network=network)
    path = write_onnx(tmp_path / "m.onnx", h=32, w=32)
    info = build_engine(path, tmp_path / "m.engine", fp16=True, route="fp16-flag", verify=False)
    assert ("network", 0) in fake.calls  # weakly typed: the builder picks precisions
    assert ("flag", "FP16") in fake.calls and ("flag", "OBEY") in fake.calls
    pinned = sorted(c[1] for c in fake.calls if c[0] == "precision")
    assert pinned == [1, 2, 4]  # not the conv, not an integer (shape) reduction
    assert sorted(c[1] for c in fake.calls if c[0] == "output_type") == [1, 2, 4]
    assert all(c[2] == "f32" for c in fake.calls if c[0] in ("precision",))
    assert info.fp32_constrained_layers == 3 and info.precision == "fp16"
    assert not info.strongly_typed and "--route fp16-flag" in info.build_command


def test_tensorrt_11_has_only_the_strongly_typed_route(tmp_path, fake_trt):
    fake = fake_trt(version="11.0.0.1")
    path = write_onnx(tmp_path / "m.onnx", h=32, w=32)
    with pytest.raises(UserError, match="TensorRT 11.0.0.1 has no FP16 builder flag"):
        build_engine(path, tmp_path / "m.engine", fp16=True, route="fp16-flag", verify=False)
    assert not [c for c in fake.calls if c[0] == "build"]
    info = build_engine(path, tmp_path / "m.engine", verify=False)  # fp32, strongly typed
    assert info.route == "strongly-typed" and info.precision == "fp32"


def test_dynamic_batch_profile():
    inp = OnnxInput("input", ["batch", 3, 64, 64], {})
    p = profile_shapes(inp, batch=(1, 4, 8))
    assert p.min == (1, 3, 64, 64) and p.opt == (4, 3, 64, 64) and p.max == (8, 3, 64, 64)
    assert profile_shapes(inp).max == (1, 3, 64, 64)  # batch 1 unless a range is given
    with pytest.raises(UserError, match="static batch of 1.*--dynamic-batch"):
        profile_shapes(OnnxInput("input", [1, 3, 64, 64], {}), batch=(1, 2, 4))
    assert parse_batch((1, 2, 4)) == (1, 2, 4) and parse_batch(None) is None
    for bad in ((0, 1, 2), (4, 2, 8), (1, 1, 65)):
        with pytest.raises(UserError, match="min <= opt <= max <= 64"):
            parse_batch(bad)


def test_engine_batches_tiles_up_to_the_profile_max():
    rule, fixed, most = engine_size_rule((-1, 3, 64, 64), (1, 3, 64, 64), (8, 3, 64, 64))
    assert fixed is None and most == 8 and rule.static == (64, 64)
    seen = []

    class Engine(Backend):
        max_batch = 8

        def _forward(self, batch):
            seen.append(batch.shape[0])
            return batch

    out = Engine().run(np.zeros((19, 3, 4, 4), np.float32))
    assert seen == [8, 8, 3] and out.shape[0] == 19


@pytest.mark.parametrize(
    "parse_ok,build_ok,message",
    [(False, True, "cannot parse.*Conv"), (True, False, "could not build")],
)
def test_build_failures_write_nothing(tmp_path, fake_trt, parse_ok, build_ok, message):
    fake_trt(parse_ok=parse_ok, build_ok=build_ok)
    path = write_onnx(tmp_path / "m.onnx", h=32, w=32)
    with pytest.raises(UserError, match=message):
        build_engine(path, tmp_path / "m.engine", verify=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]


def test_foreign_timing_cache_is_refused(tmp_path, fake_trt):
    fake_trt(cache_ok=False)
    path = write_onnx(tmp_path / "m.onnx", h=32, w=32)
    cache = tmp_path / "timing.cache"
    cache.write_bytes(b"from another GPU")
    with pytest.raises(UserError, match="does not fit this TensorRT version or GPU"):
        build_engine(path, tmp_path / "m.engine", timing_cache=cache, verify=False)
    assert cache.read_bytes() == b"from another GPU"  # left as it was
    assert not (tmp_path / "m.engine").exists()
    with pytest.raises(UserError, match="--timing-cache .*m.onnx is another input or output"):
        build_engine(path, tmp_path / "m.engine", timing_cache=path, verify=False, force=True)
    assert read_onnx_input(path).dims == [1, 3, 32, 32]  # the ONNX is untouched


def test_engine_name_and_half_static_inputs_are_refused(tmp_path, fake_trt):
    fake_trt()
    path = write_onnx(tmp_path / "m.onnx", h=32, w=32)
    with pytest.raises(UserError, match="name the engine"):
        build_engine(path, tmp_path / "m.bin")
    half = write_onnx(tmp_path / "half.onnx", h=32, w="W")
    with pytest.raises(UserError, match="one static and one dynamic side"):
        build_engine(half, tmp_path / "half.engine", min_hw=(32, 16), opt_hw=(32, 32),
                     max_hw=(32, 64), verify=False)  # fmt: skip


# ---------------------------------------------------------------------------------------------
# Engine-level zero overhead


def _layer(name, fmt="Half", tactic="sm80_xmma_a"):
    return {**CONV, "Name": name, "Outputs": [{"Name": name + ":0", "Format/Datatype": fmt}],
            "TacticName": tactic}  # fmt: skip


def test_compare_layers_ignores_names_and_finds_the_first_difference():
    base = [_layer("conv_1"), _layer("conv_2", "Float")]
    same = [_layer("node_7"), _layer("node_8", "Float")]
    r = compare_layers(base, same)
    assert r["verdict"] == "PASS" and r["tactics_identical"] and r["layers"] == [2, 2]
    assert r["precisions"] == {"Float": 1, "Half": 1} and r["detailed"]
    r = compare_layers(base, [_layer("a"), _layer("b", "Half")])
    assert r["verdict"] == "FAIL" and r["first_difference"].startswith("layer #1: Outputs")
    r = compare_layers(base, [_layer("a"), _layer("b", "Float", tactic="sm80_other")])
    assert r["verdict"] == "PASS" and not r["tactics_identical"]
    assert "sm80_other" in r["first_tactic_difference"]
    r = compare_layers(base, base[:1])
    assert r["verdict"] == "FAIL"
    assert "2 layers in the base engine, 1 merged" in r["first_difference"]
    assert not compare_layers([{"Layer": "conv"}], [{"Layer": "conv"}])["detailed"]


def test_base_and_merged_engines_share_one_timing_cache(tmp_path, fake_trt):
    base_layers = [_layer("c1"), _layer("c2", "Float")]
    merged_layers = [_layer("x"), _layer("y", "Float")]  # other names, same layers
    fake = fake_trt(layers={"base.onnx": base_layers, "merged.onnx": merged_layers})
    base = write_onnx(tmp_path / "base.onnx", h=32, w=32)
    merged = write_onnx(tmp_path / "merged.onnx", h=32, w=32, weight=2.0, adapter="f00d")
    info = build_engine(merged, tmp_path / "m.engine", base_onnx=base, verify=False)
    builds = [c[1] for c in fake.calls if c[0] == "build"]
    assert builds == ["base.onnx", "merged.onnx"]
    caches = {c[1] for c in fake.calls if c[0] == "set_timing_cache"}
    assert len(caches) == 1 and [c[0] for c in fake.calls].count("timing_cache") == 1
    z = json.loads(engine_info_path(tmp_path / "m.engine").read_text())["zero_overhead"]
    assert z == info.to_json()["zero_overhead"] and z["verdict"] == "PASS"
    assert z["verdict"] == "PASS" and z["layers"] == [2, 2] and z["base_onnx"] == "base.onnx"


def test_merged_engine_with_other_layers_is_refused(tmp_path, fake_trt):
    fake_trt(layers={"base.onnx": [_layer("c1")], "merged.onnx": [_layer("c1", "Float")]})
    base = write_onnx(tmp_path / "base.onnx", h=32, w=32)
    merged = write_onnx(tmp_path / "merged.onnx", h=32, w=32)
    with pytest.raises(UserError, match="layers differ from the base engine's: layer #0"):
        build_engine(merged, tmp_path / "m.engine", base_onnx=base, verify=False)
    assert not (tmp_path / "m.engine").exists()
    other = write_onnx(tmp_path / "other.onnx", h=64, w=64)
    with pytest.raises(UserError, match="not an export of the same shape and precision"):
        build_engine(merged, tmp_path / "m.engine", base_onnx=other, verify=False)


# ---------------------------------------------------------------------------------------------
# Refit


def _refittable(tmp_path, fake_trt, **kwargs):
    fake = fake_trt(**kwargs)
    base = write_onnx(tmp_path / "base.onnx", h=32, w=32)
    build_engine(base, tmp_path / "base.engine", refittable=True, verify=False)
    return fake, base


def test_refit_swaps_the_weights_and_records_it(tmp_path, fake_trt):
    fake, _ = _refittable(tmp_path, fake_trt)
    assert ("flag", "REFIT") in fake.calls
    other = write_onnx(tmp_path / "other.onnx", h=32, w=32, weight=3.0, adapter="beef")
    out = tmp_path / "other.engine"
    info = refit_engine(tmp_path / "base.engine", other, out, verify=False)
    assert json.loads(out.read_bytes()) == {"onnx": "other.onnx", "refittable": True}
    assert ("refit_from", str(other)) in fake.calls and ("refit",) in fake.calls
    assert not [c for c in fake.calls[fake.calls.index(("refit",)) :] if c[0] == "build"]
    side = json.loads(engine_info_path(out).read_text())
    assert side == info.to_json() and EngineSidecar.from_json(side, "m.engine.json") == info
    assert side["refit_from"] == "base.engine" and side["adapter_fingerprint"] == "beef"
    assert side["onnx_sha256"] == hashlib.sha256(other.read_bytes()).hexdigest()
    assert side["engine_sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()
    assert side["profile"]["opt"] == [1, 3, 32, 32] and side["refittable"]
    assert side["build_command"].startswith("adapt export trt --refit-from")


def test_refit_refusals_write_nothing(tmp_path, fake_trt):
    fake_trt()
    base = write_onnx(tmp_path / "base.onnx", h=32, w=32)
    build_engine(base, tmp_path / "fixed.engine", verify=False)
    out = tmp_path / "new.engine"
    with pytest.raises(UserError, match="built without --refittable"):
        refit_engine(tmp_path / "fixed.engine", base, out, verify=False)
    (tmp_path / "bare.engine").write_bytes(b"{}")
    with pytest.raises(UserError, match="has no sidecar"):
        refit_engine(tmp_path / "bare.engine", base, out, verify=False)
    build_engine(base, tmp_path / "r.engine", refittable=True, verify=False)
    bigger = write_onnx(tmp_path / "bigger.onnx", h=64, w=64)
    with pytest.raises(UserError, match="not exported like the ONNX the engine was built from"):
        refit_engine(tmp_path / "r.engine", bigger, out, verify=False)
    with pytest.raises(UserError, match="is the --refit-from engine"):
        refit_engine(tmp_path / "r.engine", base, tmp_path / "r.engine", force=True)
    assert not out.exists() and not engine_info_path(out).exists()


@pytest.mark.parametrize(
    "kwargs,message",
    [({"parse_ok": False}, "cannot refit from .*another shape"),
     ({"missing": ["w"]}, r"lacks 1 weights of the engine \(first: w\)"),
     ({"refit_ok": False}, "could not refit")],
)  # fmt: skip
def test_refit_failures_in_tensorrt_write_nothing(tmp_path, fake_trt, kwargs, message):
    _refittable(tmp_path, fake_trt)
    fake_trt(**kwargs)
    other = write_onnx(tmp_path / "other.onnx", h=32, w=32, weight=3.0)
    with pytest.raises(UserError, match=message):
        refit_engine(tmp_path / "base.engine", other, tmp_path / "new.engine", verify=False)
    assert not (tmp_path / "new.engine").exists()


def test_cli_refit_keeps_the_build_settings(run_cli, tmp_path, fake_trt):
    _refittable(tmp_path, fake_trt)
    code, _, err = run_cli("export", "trt", "--refit-from", tmp_path / "base.engine", "--onnx",
                           tmp_path / "base.onnx", "--out", tmp_path / "n.engine",
                           "--max-shape", "64x64")  # fmt: skip
    assert code == 1
    assert err == "error: --refit-from keeps the engine's build settings: drop --max-shape\n"
    code, out, err = run_cli("export", "trt", "--refit-from", tmp_path / "base.engine",
                             "--onnx", tmp_path / "base.onnx", "--out", tmp_path / "n.engine",
                             "--no-verify")  # fmt: skip
    assert code == 0, err
    assert "refitted with the weights of" in out and "verify: skipped" in out


# ---------------------------------------------------------------------------------------------
# The sidecar: engines refuse a foreign TensorRT or GPU, and stale files


def test_sidecar_refuses_foreign_and_stale_engines(tmp_path, fake_trt):
    fake_trt()
    path = write_onnx(tmp_path / "m.onnx", h=32, w=32)
    engine = tmp_path / "m.engine"
    info = build_engine(path, engine, verify=False)
    check_engine_info(info, engine, "10.13.0.35", "8.7")  # as built: accepted
    check_engine_info(info, engine, "10.13.0.99", "8.7")  # the build number does not matter
    with pytest.raises(UserError, match="built with TensorRT 10.13.0.35, this machine has 10.3.0"):
        check_engine_info(info, engine, "10.3.0.30", "8.7")
    with pytest.raises(UserError, match="compute capability 8.7 .*Orin.*this GPU is 9.0"):
        check_engine_info(info, engine, "10.13.0.35", "9.0")
    try:
        check_engine_info(info, engine, "10.13.0.35", "9.0")
    except UserError as e:  # one line that says how to rebuild
        assert "\n" not in str(e) and str(e).endswith(f"{info.build_command} --force")
    engine.write_bytes(engine.read_bytes() + b" ")
    with pytest.raises(UserError, match="not the engine its sidecar .* describes"):
        check_engine_info(info, engine, "10.13.0.35", "8.7")
    engine.write_bytes(engine.read_bytes()[:-1])
    write_onnx(path, h=32, w=32, weight=2.0)  # the ONNX changed after the build
    with pytest.raises(UserError, match="is stale: .*m.onnx changed after the engine was built"):
        check_engine_info(info, engine, "10.13.0.35", "8.7")


def test_backend_refuses_an_engine_from_another_tensorrt(run_cli, tmp_path, fake_trt, monkeypatch):
    from adaptsr.serve import cudart

    fake = fake_trt()
    path = write_onnx(tmp_path / "m.onnx", h=32, w=32)
    engine = tmp_path / "m.engine"
    build_engine(path, engine, verify=False)
    fake.__version__ = "10.3.0.30"  # the Jetson's TensorRT
    loads = fake.calls.count(("deserialize",))
    monkeypatch.setattr(cudart, "device_info", lambda device=None: dict(GPU))
    images = tmp_path / "in"
    images.mkdir()
    write_image(Image(synthetic_image(32, 32).transpose(1, 2, 0), None, 8, False), images / "a.png")
    code, _, err = run_cli("upscale", images, "--out", tmp_path / "out", "--engine", engine)
    assert code == 1 and err.count("\n") == 1
    assert err.startswith(f"error: {engine} was built with TensorRT 10.13.0.35, this machine")
    assert f"rebuild it on this machine: adapt export trt --onnx {path}" in err
    assert fake.calls.count(("deserialize",)) == loads  # refused before TensorRT read the plan


# ---------------------------------------------------------------------------------------------
# Verification against ONNX Runtime fp32 (runs here: the engine is stood in by a callable)


def test_verify_passes_and_records_psnr_per_profile_shape(tmp_path):
    path = write_onnx(tmp_path / "m.onnx", n="N")
    sess = parity.session(path)
    profile = Profile("input", (1, 3, 16, 16), (2, 3, 32, 48), (2, 3, 32, 48))
    noise = 1e-3

    def engine(x):  # the exact output plus a known error
        return parity.run(sess, x) + noise

    r = verify(engine, path, profile)
    assert [c.profile for c in r.checks] == ["min", "opt/max"]
    assert [c.shape for c in r.checks] == [[1, 3, 16, 16], [2, 3, 32, 48]]
    for c in r.checks:  # PSNR of a constant error, from its definition
        n, _, h, w = c.shape
        ref = parity.run(sess, photo_batch((n, 3, h, w)))
        peak = max(1.0, float(ref.max() - ref.min()))
        assert c.psnr_db == pytest.approx(10 * math.log10(peak**2 / noise**2), abs=1e-3)
        assert c.max_abs == pytest.approx(noise, rel=1e-3)
    assert r.passed and r.threshold_db == 45.0
    assert r.min_psnr_db == min(c.psnr_db for c in r.checks)


def test_verify_fails_below_the_threshold_naming_the_shape(tmp_path):
    path = write_onnx(tmp_path / "m.onnx", n="N")
    sess = parity.session(path)
    profile = Profile("input", (1, 3, 16, 16), (1, 3, 32, 32), (2, 3, 64, 64))

    def engine(x):  # fine at small shapes, wrong at the largest
        y = parity.run(sess, x)
        return y + (0.05 if x.shape[0] == 2 else 0.0)

    message = r"PSNR .* dB at the max shape \[2, 3, 64, 64\] is below 45"
    with pytest.raises(UserError, match=message):
        verify(engine, path, profile)
    assert verify(engine, path, profile, min_psnr=20.0).passed  # the flag lowers it
    with pytest.raises(UserError, match="does not match ONNX Runtime's"):
        verify(lambda x: x[:, :, ::2], path, profile)


def test_photo_batch_holds_different_pictures():
    b = photo_batch((3, 3, 24, 40))
    assert b.shape == (3, 3, 24, 40) and b.dtype == np.float32
    assert not np.array_equal(b[0], b[1]) and b.min() >= 0 and b.max() <= 1


# ---------------------------------------------------------------------------------------------
# CUDA runtime and engine timing (the logic; the real thing is in the tensorrt tests)


def test_cuda_errors_are_one_line_naming_the_call():
    from adaptsr.serve import cudart

    rt = cudart.runtime()
    with pytest.raises(UserError, match="CUDA cudaMalloc failed: .*no CUDA-capable device"):
        cudart.check((rt.cudaError_t.cudaErrorNoDevice, None), "cudaMalloc")
    assert cudart.check((rt.cudaError_t.cudaSuccess, 7), "x") == 7
    assert cudart.check((rt.cudaError_t.cudaSuccess,), "x") is None


def test_engine_timing_splits_copies_and_compute(monkeypatch):
    from adaptsr.serve import cudart, engine_timing

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


@pytest.mark.slow
def test_dynamic_batch_export_runs_tiles_batched(tmp_path):
    from adaptsr.export.onnx import export_onnx

    path = tmp_path / "edsr.onnx"
    report = export_onnx(_small_edsr(1), path, tile=(16, 16), dynamic_batch=True)
    assert read_onnx_input(path).dims[0] == "batch" and report.spec.dynamic_batch
    assert {c.batch for c in report.parity.checks} == {2}  # traced and checked at 2
    sess = parity.session(path)
    x = photo_batch((3, 3, 16, 16))
    batched = parity.run(sess, x)
    one_by_one = np.concatenate([parity.run(sess, x[i : i + 1]) for i in range(3)])
    assert batched.shape == (3, 3, 32, 32)
    np.testing.assert_allclose(batched, one_by_one, atol=1e-5)
    assert profile_shapes(read_onnx_input(path), batch=(1, 4, 8)).max == (8, 3, 16, 16)


def _tensorrt_and_gpu() -> bool:
    try:
        import tensorrt  # noqa: F401
        from cuda.bindings import runtime  # noqa: F401
    except ImportError:
        return False
    try:
        return subprocess.run(["nvidia-smi"], capture_output=True).returncode == 0
    except FileNotFoundError:
        return False


needs_gpu = pytest.mark.skipif(
    not _tensorrt_and_gpu(), reason="needs TensorRT, cuda-python and an NVIDIA GPU"
)


def _small_edsr(seed):
    import torch

    from adaptsr.adapt.archs import build_small
    from adaptsr.adapt.models import model_from_state_dict

    torch.manual_seed(seed)
    return model_from_state_dict(build_small("EDSR").state_dict(), name="small-edsr")


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    """Two weight sets of one architecture (what two adapters merged into one base are), each
    exported fp32 and fp16 with dynamic size and batch."""
    from adaptsr.export.onnx import export_onnx

    tmp = tmp_path_factory.mktemp("trt")
    out = {}
    for name, seed in (("a", 1), ("b", 2)):
        for precision in ("fp32", "fp16"):
            path = tmp / f"{name}.{precision}.onnx"
            export_onnx(_small_edsr(seed), path, dynamic=True, dynamic_batch=True,
                        fp16=precision == "fp16")  # fmt: skip
            out[name, precision] = path
    return tmp, out


SHAPES = {"min_hw": (16, 16), "opt_hw": (64, 64), "max_hw": (128, 128), "batch": (1, 2, 4)}


@pytest.mark.tensorrt
@needs_gpu
def test_real_engine_verifies_and_times(exports):
    from adaptsr.serve.backends import OnnxBackend, TensorRTBackend
    from adaptsr.serve.engine_timing import time_engine

    tmp, onnx = exports
    engine = tmp / "a.engine"
    info = build_engine(onnx["a", "fp16"], engine, fp16=True, reference=onnx["a", "fp32"],
                        force=True, **SHAPES)  # fmt: skip
    v = info.verify
    assert v.passed and v.min_psnr_db >= 45
    assert [c.shape for c in v.checks] == [[1, 3, 16, 16], [2, 3, 64, 64], [4, 3, 128, 128]]
    backend = TensorRTBackend(engine)
    assert backend.scale == 2 and backend.max_batch == 4
    x = photo_batch((3, 3, 40, 56))
    ref = OnnxBackend(onnx["a", "fp32"], provider="cpu").run(x)
    assert parity.psnr(backend.run(x), ref) >= 45  # batch 3: split into 3 of at most 4
    for graph in (False, True):
        t = time_engine(backend, (2, 3, 64, 64), runs=10, warmup=2, cuda_graph=graph)
        assert t.compute.median_ms > 0 and t.h2d.median_ms > 0 and t.d2h.median_ms > 0
    side = json.loads(engine_info_path(engine).read_text())
    assert side["compute_capability"] and side["gpu"] and side["route"] == "strongly-typed"


@pytest.mark.tensorrt
@needs_gpu
def test_real_refit_and_engine_level_zero_overhead(exports):
    from adaptsr.serve.backends import OnnxBackend, TensorRTBackend

    tmp, onnx = exports
    base = tmp / "base.engine"
    info = build_engine(onnx["b", "fp16"], base, fp16=True, reference=onnx["b", "fp32"],
                        base_onnx=onnx["a", "fp16"], refittable=True, force=True,
                        timing_cache=tmp / "cache.bin", **SHAPES)  # fmt: skip
    assert info.zero_overhead.verdict == "PASS" and info.zero_overhead.detailed
    refit = refit_engine(base, onnx["a", "fp16"], tmp / "refit.engine",
                         reference=onnx["a", "fp32"], force=True)  # fmt: skip
    assert refit.verify.passed and refit.refit_seconds < info.build_seconds
    x = photo_batch((1, 3, 48, 48))
    got = TensorRTBackend(tmp / "refit.engine").run(x)
    want_a = OnnxBackend(onnx["a", "fp32"], provider="cpu").run(x)
    want_b = OnnxBackend(onnx["b", "fp32"], provider="cpu").run(x)
    assert parity.psnr(got, want_a) >= 45 and parity.psnr(got, want_b) < 40  # a's weights


@pytest.mark.tensorrt
@needs_gpu
def test_real_fp16_flag_route_on_tensorrt_10(exports):
    import tensorrt

    if int(tensorrt.__version__.split(".")[0]) >= 11:
        pytest.skip("TensorRT 11 has no FP16 builder flag")
    tmp, onnx = exports
    info = build_engine(onnx["a", "fp32"], tmp / "flag.engine", fp16=True, route="fp16-flag",
                        force=True, **SHAPES)  # fmt: skip
    assert info.verify.passed and info.precision == "fp16"


def test_ab_of_two_engines_compares_gpu_compute_time(monkeypatch):
    from adaptsr.serve import backend_bench, engine_timing

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


def test_pinned_and_device_buffers_grow_and_are_reused(monkeypatch):
    import ctypes

    from adaptsr.serve import cudart

    real = cudart.runtime()
    blocks, freed = [], []

    class FakeRuntime:
        cudaError_t = real.cudaError_t
        cudaGetErrorString = staticmethod(real.cudaGetErrorString)

        def cudaMallocHost(self, nbytes):
            blocks.append(ctypes.create_string_buffer(nbytes))
            return real.cudaError_t.cudaSuccess, ctypes.addressof(blocks[-1])

        cudaMalloc = cudaMallocHost

        def cudaFreeHost(self, ptr):
            freed.append(ptr)

        cudaFree = cudaFreeHost

    monkeypatch.setattr(cudart, "runtime", lambda: FakeRuntime())
    pinned = cudart.PinnedBuffer()
    a = pinned.array((2, 3), np.float32)
    a[...] = 7
    assert a.ctypes.data == pinned.ptr == ctypes.addressof(blocks[0]) and pinned.nbytes == 24
    assert bytes(blocks[0])[:4] == np.float32(7).tobytes()  # the array is the pinned memory
    b = pinned.array((1, 3), np.float16)  # smaller: the same block
    assert b.ctypes.data == pinned.ptr and len(blocks) == 1
    pinned.array((4, 4), np.float32)  # larger: a new block, the old one freed
    assert len(blocks) == 2 and freed == [ctypes.addressof(blocks[0])]
    device = cudart.DeviceBuffer()
    assert device.reserve(100) == device.reserve(50) and device.nbytes == 100
    with pytest.raises(UserError, match="CUDA cudaMallocHost failed"):
        monkeypatch.setattr(
            FakeRuntime, "cudaMallocHost",
            lambda self, n: (real.cudaError_t.cudaErrorMemoryAllocation, None),
        )  # fmt: skip
        cudart.PinnedBuffer().array((1,), np.float32)
