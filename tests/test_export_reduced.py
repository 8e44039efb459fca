"""`adapt export onnx --fp16-io`, `--bf16` and `--check-images` end to end on small models."""

import numpy as np
import onnx
import pytest
from fakes.images import photo
from test_export import small, with_random_adapter

from adaptsr.adapt.models import load_model
from adaptsr.cli.commands.export import export_lines
from adaptsr.core.errors import UserError
from adaptsr.core.images import Image, write_image
from adaptsr.export.fp16 import BFLOAT16, HALF
from adaptsr.export.onnx import export_onnx, load_merged, report_path
from adaptsr.serve.backends import OnnxBackend


def _elem(v) -> int:
    return v.type.tensor_type.elem_type


def test_fp16_io_export_on_the_users_images(tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    write_image(Image(photo(150, 90).transpose(1, 2, 0).copy(), None, 8, False), folder / "a.png")
    out = tmp_path / "m.onnx"
    report = export_onnx(small("Compact"), out, dynamic=True, fp16_io=True, check_images=folder)
    model = onnx.load(out)
    assert _elem(model.graph.input[0]) == _elem(model.graph.output[0]) == HALF
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["precision"] == "fp16" and meta["io_precision"] == "fp16"
    f16 = report.fp16
    assert f16.precision == "fp16" and f16.io_precision == "fp16" and f16.check_images == ["a.png"]
    assert [c.image for c in f16.checks][-1] == "a.png" and f16.checks[-1].size == [128, 90]
    assert f16.passed and f16.arithmetic.passed
    assert '"io_precision": "fp16"' in report_path(out).read_text()
    lines = export_lines(report)
    assert "fp16 vs fp32 on 3 photo-like image(s) and 1 of --check-images" in lines[2]
    assert lines[3] == "inputs and outputs: fp16"
    assert OnnxBackend(out).in_dtype == np.float16


def test_bf16_export_says_how_it_was_checked(tmp_path):
    out = tmp_path / "m.onnx"
    with pytest.raises(UserError, match="needs --opset 22"):
        export_onnx(small("Compact"), out, tile=(16, 16), bf16=True)
    report = export_onnx(small("Compact"), out, tile=(16, 16), bf16=True, opset=22)
    graph = onnx.load(out).graph
    assert BFLOAT16 in {t.data_type for t in graph.initializer}
    assert _elem(graph.input[0]) == _elem(graph.output[0]) == 1  # fp32 inputs and outputs
    b16 = report.fp16
    assert b16.precision == "bf16" and report.metadata["precision"] == "bf16"
    assert "bf16 emulated in fp32" in b16.runtime and b16.arithmetic.first_overflow is None
    assert b16.threshold_db == 35.0 and b16.min_psnr_db >= 35.0
    line = export_lines(report)[2]
    assert "bf16 vs fp32" in line and "ONNX Runtime (bf16 emulated in fp32)" in line
    assert "in bf16 arithmetic (onnx.reference)" in line


@pytest.mark.parametrize("options", [dict(fp16_io=True), dict(bf16=True, opset=22)])
def test_merged_reduced_export_is_the_base_graph(tmp_path, options):
    """The base export is converted the same way, so the graphs match node for node (and the
    latency check feeds the fp16 input an fp16 image)."""
    base_path, adapter_path, _ = with_random_adapter("Compact", tmp_path)
    merged, adapter = load_merged(str(base_path), adapter_path)
    report = export_onnx(merged, tmp_path / "m.onnx", tile=(16, 16), adapter=adapter,
                         base=load_model(base_path), latency_rounds=6, latency_max_rounds=6,
                         **options)  # fmt: skip
    assert report.zero_overhead.structure.identical
    latency = report.zero_overhead.latency
    assert latency.input_shape == [1, 3, 16, 16]
    assert ("bf16 emulated" in latency.runtime) == ("bf16" in options)
