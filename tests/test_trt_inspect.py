"""Zero overhead at the engine level (adaptsr.export.trt_inspect): the layers of the base and the
merged engine compared, and a merged build refused when they differ."""

import json

import pytest
from fakes.exports import write_onnx

from adaptsr.core.artifacts import engine_info_path
from adaptsr.core.errors import UserError
from adaptsr.export.tensorrt import build_engine
from adaptsr.export.trt_inspect import compare_layers

CONV = {
    "LayerType": "CaskConvolution",
    "Inputs": [{"Name": "input", "Format/Datatype": "Half"}],
    "Outputs": [{"Name": "output", "Format/Datatype": "Half"}],
    "TacticName": "sm80_xmma_a",
}


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
