"""Refitting an engine with the weights of another export (refit_engine, export/trt_builder.py),
against the recording stand-in of TensorRT."""

import hashlib
import json

import pytest
from fakes.exports import write_onnx

from adaptsr.core.artifacts import engine_info_path
from adaptsr.core.contracts import EngineSidecar
from adaptsr.core.errors import UserError
from adaptsr.export.tensorrt import build_engine, refit_engine


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
