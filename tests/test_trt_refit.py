"""Refitting an engine with the weights of another export (refit_engine, export/trt_builder.py),
against the recording stand-in of TensorRT, whose engines run the ONNX they hold, so that the
verification a refittable or refitted engine always gets runs here too."""

import hashlib
import json

import onnx
import pytest
from fakes.exports import write_onnx
from fakes.tensorrt import engine_runner

from adaptsr.core.artifacts import engine_info_path
from adaptsr.core.contracts import EngineSidecar
from adaptsr.core.errors import UserError
from adaptsr.export import tensorrt as trt_export
from adaptsr.export import trt_verify
from adaptsr.export.tensorrt import build_engine, refit_engine


@pytest.fixture(autouse=True)
def runs_fake_engines(monkeypatch):
    """Verification runs a fake engine (the ONNX it holds) instead of a GPU."""

    def verify(engine_file, reference, profile, min_psnr):
        return trt_verify.verify(engine_runner(engine_file), reference, profile, min_psnr)

    monkeypatch.setattr(trt_export, "_verify", verify)


def _refittable(tmp_path, fake_trt, **kwargs):
    fake = fake_trt(**kwargs)
    base = write_onnx(tmp_path / "base.onnx", h=32, w=32)
    build_engine(base, tmp_path / "base.engine", refittable=True)
    return fake, base


def test_refit_swaps_the_weights_and_records_it(tmp_path, fake_trt):
    fake, _ = _refittable(tmp_path, fake_trt)
    # REFIT even where TensorRT has REFIT_IDENTICAL: a refit brings other weights
    assert ("flag", "REFIT") in fake.calls and ("flag", "REFIT_IDENTICAL") not in fake.calls
    other = write_onnx(tmp_path / "other.onnx", h=32, w=32, weight=3.0, adapter="beef")
    out = tmp_path / "other.engine"
    info = refit_engine(tmp_path / "base.engine", other, out)
    assert json.loads(out.read_bytes()) == {"onnx": "other.onnx", "refittable": True}
    assert info.verify.passed and info.verify.reference == str(other)
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
        refit_engine(tmp_path / "fixed.engine", base, out)
    (tmp_path / "bare.engine").write_bytes(b"{}")
    with pytest.raises(UserError, match="has no sidecar"):
        refit_engine(tmp_path / "bare.engine", base, out)
    build_engine(base, tmp_path / "r.engine", refittable=True)
    bigger = write_onnx(tmp_path / "bigger.onnx", h=64, w=64)
    with pytest.raises(UserError, match="not exported like the ONNX the engine was built from"):
        refit_engine(tmp_path / "r.engine", bigger, out)
    with pytest.raises(UserError, match="a refitted engine is always verified against ONNX"):
        refit_engine(tmp_path / "r.engine", base, out, verify=False)
    with pytest.raises(UserError, match="a --refittable engine is always verified against"):
        build_engine(base, tmp_path / "nv.engine", refittable=True, verify=False)
    assert not (tmp_path / "nv.engine").exists()
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
        refit_engine(tmp_path / "base.engine", other, tmp_path / "new.engine")
    assert not (tmp_path / "new.engine").exists()


def test_a_refit_that_leaves_weights_behind_is_caught_by_verification(tmp_path, fake_trt):
    """TensorRT reports success, the engine computes with the old weights: not written."""
    _refittable(tmp_path, fake_trt)
    fake_trt(refit_applies=False)
    other = write_onnx(tmp_path / "other.onnx", h=32, w=32, weight=3.0)
    out = tmp_path / "new.engine"
    with pytest.raises(UserError, match=r"engine vs ONNX Runtime fp32: PSNR .* below 45 dB"):
        refit_engine(tmp_path / "base.engine", other, out)
    assert not out.exists() and not engine_info_path(out).exists()


def test_cli_refit_keeps_the_build_settings(run_cli, tmp_path, fake_trt):
    _refittable(tmp_path, fake_trt)
    code, _, err = run_cli("export", "trt", "--refit-from", tmp_path / "base.engine", "--onnx",
                           tmp_path / "base.onnx", "--out", tmp_path / "n.engine",
                           "--max-shape", "64x64")  # fmt: skip
    assert code == 1
    assert err == "error: --refit-from keeps the engine's build settings: drop --max-shape\n"
    code, _, err = run_cli("export", "trt", "--refit-from", tmp_path / "base.engine",
                           "--onnx", tmp_path / "base.onnx", "--out", tmp_path / "n.engine",
                           "--no-verify")  # fmt: skip
    assert code == 1 and err.startswith("error: a refitted engine is always verified")
    code, out, err = run_cli("export", "trt", "--refit-from", tmp_path / "base.engine",
                             "--onnx", tmp_path / "base.onnx", "--out",
                             tmp_path / "n.engine")  # fmt: skip
    assert code == 0, err
    assert "refitted with the weights of" in out and "verify vs ONNX Runtime fp32" in out


def _with_fp16_io(path):
    model = onnx.load(path)
    model.metadata_props.add(key="io_precision", value="fp16")
    onnx.save(model, path)
    return path


def test_inputs_and_outputs_of_another_type_are_refused(tmp_path, fake_trt):
    _refittable(tmp_path, fake_trt)
    other = _with_fp16_io(write_onnx(tmp_path / "io.onnx", h=32, w=32))
    with pytest.raises(UserError, match=r"\(fp32, fp16 input .*\(fp32, fp32 input"):
        refit_engine(tmp_path / "base.engine", other, tmp_path / "n.engine")
    with pytest.raises(UserError, match="is not an export of the same shape and precision"):
        build_engine(other, tmp_path / "m.engine", base_onnx=tmp_path / "base.onnx")
    assert not (tmp_path / "n.engine").exists() and not (tmp_path / "m.engine").exists()
