"""`adapt export trt` before TensorRT runs (adaptsr.export.tensorrt): optimisation profile shapes,
the ONNX input they come from, and argument checks, which all work without TensorRT or torch."""

import json
import subprocess
import sys

import pytest
from fakes.exports import write_onnx

from adaptsr.core.errors import UserError
from adaptsr.export.tensorrt import (
    OnnxInput,
    build_engine,
    parse_batch,
    parse_hw,
    profile_shapes,
    read_onnx_input,
)


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
