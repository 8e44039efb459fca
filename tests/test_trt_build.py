"""Engine builds (adaptsr.export.tensorrt, export/trt_builder.py) against the recording stand-in of
TensorRT in tests/fakes/tensorrt.py: routes per TensorRT version, the sidecar, refusals."""

import hashlib
import json

import pytest
from fakes.exports import write_onnx
from fakes.tensorrt import GPU

from adaptsr.core.artifacts import engine_info_path
from adaptsr.core.contracts import EngineSidecar
from adaptsr.core.errors import UserError
from adaptsr.export.tensorrt import build_engine, read_onnx_input
from adaptsr.export.trt_plan import plan_build


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


def test_verification_threshold_follows_the_onnx_precision(tmp_path):
    ref = write_onnx(tmp_path / "m.onnx", h=32, w=32)
    plans = {
        p: plan_build(
            write_onnx(tmp_path / f"m.{p}.onnx", h=32, w=32, precision=p),
            tmp_path / f"{p}.engine",
            reference=ref,
        )  # fmt: skip
        for p in ("fp16", "bf16")
    }
    assert plans["fp16"].min_psnr == 45.0 and plans["bf16"].min_psnr == 35.0  # bf16: 3 bits fewer
    given = plan_build(tmp_path / "m.bf16.onnx", tmp_path / "x.engine", reference=ref, min_psnr=40)
    assert given.min_psnr == 40 and plan_build(ref, tmp_path / "y.engine").min_psnr == 45.0
