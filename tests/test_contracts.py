"""The typed records between layers (adaptsr.core.contracts): written and read back unchanged,
and a file with an unknown version, a missing key or a wrongly typed value refused in one line
that names the file and the key."""

import json
import math

import pytest

from adaptsr.core.contracts import (
    ADAPTER_FORMAT,
    AdapterMeta,
    EngineSidecar,
    ExportReport,
    ExportShape,
    Parity,
    ParityCheck,
)
from adaptsr.core.errors import UserError


def _report(**changes) -> ExportReport:
    fields = dict(
        onnx="m.onnx",
        architecture="EDSR",
        parity=Parity(
            "ort", 1e-4, 2e-6, 1e-7, [ParityCheck([16, 16], 1, "image", 2e-6, 1e-7)], True
        ),
        rewrites=["body: traceable mask"],
        fp16=None,
        zero_overhead=None,
        metadata={"scale": "2"},
        spec=ExportShape(False, False, [16, 16], 18, [16, 16], [[16, 16]]),
    )
    return ExportReport(**{**fields, **changes})


def _one_line(excinfo, *words):
    text = str(excinfo.value)
    assert "\n" not in text
    for word in words:
        assert word in text, text


def test_export_report_round_trip_through_json_text():
    report = _report()
    data = json.loads(json.dumps(report.to_json()))
    assert data["version"] == 1 and data["parity"]["checks"][0]["input"] == "image"
    assert list(data)[:3] == ["onnx", "architecture", "parity"]  # the keys users already see
    assert ExportReport.from_json(data, "m.report.json") == report


def test_infinite_values_survive_strict_json():
    # identical outputs have an infinite PSNR: written as "inf", read back as a float
    report = _report(parity=Parity("ort", 1e-4, math.inf, 0.0, [], False))
    text = json.dumps(report.to_json(), allow_nan=False)
    assert ExportReport.from_json(json.loads(text), "r.json") == report
    data = json.loads(json.dumps(report.to_json()))
    data["unknown_extra_key"] = 1  # keys a newer adaptsr adds are ignored
    assert ExportReport.from_json(data, "r.json") == report


@pytest.mark.parametrize(
    "change, words",
    [
        (lambda d: d.update(version=2), ["r.json", "version 2"]),
        (lambda d: d.pop("version"), ["r.json", "'version'"]),
        (lambda d: d.pop("spec"), ["r.json", "'spec' is missing"]),
        (lambda d: d["parity"].update(max_abs="small"), ["'parity.max_abs'", "a number"]),
        (lambda d: d["parity"]["checks"][0].update(batch=True), ["'parity.checks[0].batch'"]),
        (lambda d: d.update(rewrites="none"), ["'rewrites'", "a list"]),
        (lambda d: d["metadata"].update(scale=2), ["'metadata.scale'", "text"]),
    ],
)
def test_export_report_refuses_damaged_files(change, words):
    data = json.loads(json.dumps(_report().to_json()))
    change(data)
    with pytest.raises(UserError) as e:
        ExportReport.from_json(data, "r.json")
    _one_line(e, *words)


def test_engine_sidecar_round_trip_and_one_spelling(engine_sidecar):
    side = engine_sidecar(refit_from="base.engine", refit_seconds=0.5)
    data = json.loads(json.dumps(side.to_json()))
    assert data["compute_capability"] == "8.7" and data["gpu"] == "NVIDIA Jetson AGX Orin"
    assert data["verify"] == {"skipped": "--no-verify"}  # as users have always seen it
    assert data["profile"]["opt"] == [1, 3, 256, 256]
    assert EngineSidecar.from_json(data, "m.engine.json") == side
    settings = side.build_settings()
    assert settings["profile"] == side.profile and "engine" not in settings


@pytest.mark.parametrize(
    "change, words",
    [
        (lambda d: d.update(version="1"), ["m.engine.json", 'version "1"', "rebuild the engine"]),
        (lambda d: d.pop("version"), ["no key 'version'", "rebuild the engine"]),
        (lambda d: d.pop("build_command"), ["'build_command' is missing"]),
        (lambda d: d.update(compute_capability=[8, 7]), ["'compute_capability'", "text"]),
        (lambda d: d["profile"].update(min=[1, 3, "16", 16]), ["'profile.min[2]'"]),
        (lambda d: d.update(refittable="yes"), ["'refittable'", "bool"]),
    ],
)
def test_engine_sidecar_refuses_damaged_files(engine_sidecar, change, words):
    data = json.loads(json.dumps(engine_sidecar().to_json()))
    change(data)
    with pytest.raises(UserError) as e:
        EngineSidecar.from_json(data, "m.engine.json")
    _one_line(e, "m.engine.json", *words)


def _meta() -> AdapterMeta:
    return AdapterMeta({"body.0.conv": 4, "tail.q": 2}, 2.0, "EDSR", 2, "ab12", "0.1.0")


def test_adapter_meta_round_trip_as_safetensors_strings():
    meta = _meta()
    data = meta.to_json()
    assert all(isinstance(v, str) for v in data.values()) and data["format"] == ADAPTER_FORMAT
    assert json.loads(data["ranks"]) == {"body.0.conv": 4, "tail.q": 2}
    assert AdapterMeta.from_json(data, "a.safetensors") == meta
    unscaled = AdapterMeta({}, 1.0, "", None, "", "0.1.0")
    assert AdapterMeta.from_json(unscaled.to_json(), "a.safetensors") == unscaled
    assert meta.rank_summary() == {
        "sites": 2, "min": 2, "max": 4, "mean": 3.0, "total": 6, "alpha": 2.0,
    }  # fmt: skip


@pytest.mark.parametrize(
    "change, words",
    [
        (lambda d: d.update(format="adaptsr-lora-2"), ["not an adaptsr adapter file"]),
        (lambda d: d.pop("base_fingerprint"), ["damaged metadata", "'base_fingerprint'"]),
        (lambda d: d.update(ranks="[1, 2]"), ["damaged metadata", "'ranks'"]),
        (lambda d: d.update(ranks='{"a": 1.5}'), ["damaged metadata", "'ranks'"]),
        (lambda d: d.update(alpha="inf"), ["damaged metadata", "'alpha'"]),
        (lambda d: d.update(scale="x4"), ["damaged metadata", "'scale'"]),
    ],
)
def test_adapter_meta_refuses_damaged_metadata(change, words):
    data = _meta().to_json()
    change(data)
    with pytest.raises(UserError) as e:
        AdapterMeta.from_json(data, "a.safetensors")
    _one_line(e, "a.safetensors", *words)
