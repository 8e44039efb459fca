"""fp16 inputs and outputs (`--fp16-io`), bf16 graphs (`--bf16`) and the check on the user's own
images (`--check-images`), on hand-built graphs; the serve side reads the input's type."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from fakes.exports import export_torch
from fakes.images import photo
from onnx import TensorProto, helper, numpy_helper
from test_export_fp16 import D, run_model, transformer_block

from adaptsr.core.errors import UserError
from adaptsr.core.images import Image, write_image
from adaptsr.export import parity
from adaptsr.export.bf16 import emulate_in_fp32
from adaptsr.export.fp16 import BFLOAT16, FLOAT, HALF, convert_to_fp16, run_in_fp16
from adaptsr.export.fp16_proof import (
    CHECK_SIDE,
    MAX_CHECK_IMAGES,
    Reduced,
    check_inputs,
    fp16_step,
    image_crop,
)
from adaptsr.export.plan import plan_export
from adaptsr.serve.backends import OnnxBackend
from adaptsr.serve.upscale import upscale_image


def io_types(model) -> tuple[int, int]:
    g = model.graph
    return g.input[0].type.tensor_type.elem_type, g.output[0].type.tensor_type.elem_type


def test_fp16_io_graph_takes_and_gives_fp16_and_computes_the_same():
    model = transformer_block()
    fp16, plain = convert_to_fp16(model)
    io16, report = convert_to_fp16(model, io=HALF)
    assert io_types(fp16) == (FLOAT, FLOAT) and io_types(io16) == (HALF, HALF)
    # the same islands; the casts of the input to fp16 and of the output back are gone
    assert report.fp32_nodes == plain.fp32_nodes and report.fp16_nodes == plain.fp16_nodes
    assert [n.output[0] for n in fp16.graph.node if n.input[0] == "x"] == ["x__to_fp16"]
    assert [n.op_type for n in io16.graph.node if n.input[0] == "x"] == ["Mul"]
    assert report.casts == plain.casts - 2
    assert io16.graph.node[-1].output[0] == "y"  # the last node is fp16: no cast at the end
    x = np.random.default_rng(1).standard_normal((1, 16, D)).astype(np.float32)
    sess = ort.InferenceSession(io16.SerializeToString(), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"x": x.astype(np.float16)})[0]
    assert got.dtype == np.float16
    assert parity.psnr(got, run_model(fp16, x)) > 60  # the fp16 graph's output, in fp16
    arith, bad = run_in_fp16(io16, x)  # the reference evaluator is given the input's type
    assert bad is None and arith.dtype == np.float32 and parity.psnr(arith, got) > 60


def test_fp16_io_casts_an_fp32_last_node_to_fp16():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, D])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, D])
    ones = [numpy_helper.from_array(np.ones(D, np.float32), n) for n in ("w", "b")]
    ln = helper.make_node("LayerNormalization", ["x", "w", "b"], ["y"], axis=-1)
    model = helper.make_model(
        helper.make_graph([ln], "g", [x], [y], ones), opset_imports=[helper.make_opsetid("", 18)]
    )
    io16, _ = convert_to_fp16(model, io=HALF)
    assert io_types(io16) == (HALF, HALF)
    last = io16.graph.node[-1]
    assert last.op_type == "Cast" and last.output[0] == "y" and last.attribute[0].i == HALF


def _bf16_values(a: np.ndarray) -> np.ndarray:
    return a.astype(helper.tensor_dtype_to_np_dtype(BFLOAT16)).astype(np.float32)


def test_bf16_keeps_the_islands_and_rounds_like_bf16():
    model = onnx.version_converter.convert_version(transformer_block(), 22)
    bf16, report = convert_to_bf16_checked(model)
    fp16, plain = convert_to_fp16(model)
    assert report.fp32_nodes == plain.fp32_nodes  # the same island rules
    inits = {t.name: t.data_type for t in bf16.graph.initializer}
    assert inits["w1"] == inits["conv_w"] == BFLOAT16 and inits["ln_w"] == FLOAT
    assert io_types(bf16) == (FLOAT, FLOAT)
    x = np.random.default_rng(1).standard_normal((1, 16, D)).astype(np.float32)
    want = run_model(model, x)
    got, bad = run_in_fp16(bf16, x)  # bf16 arithmetic
    emulated = run_model(emulate_in_fp32(bf16), x)  # in ONNX Runtime
    half = parity.psnr(run_model(fp16, x), want)
    for out in (got, emulated):  # 3 significant bits fewer than fp16: clearly worse, still close
        assert 35 < parity.psnr(out, want) < half - 8
    assert bad is None and parity.psnr(emulated, got) > 45


def convert_to_bf16_checked(model):
    out, report = convert_to_fp16(model, low=BFLOAT16)
    onnx.checker.check_model(out, full_check=True)
    return out, report


def test_bf16_emulation_rounds_every_bf16_tensor_exactly():
    """x -> bf16 -> * w -> + w -> fp32: each op in fp32, each result rounded to bf16."""
    rng = np.random.default_rng(3)
    w = rng.standard_normal(16).astype(np.float32)
    bf = helper.tensor_dtype_to_np_dtype(BFLOAT16)
    nodes = [
        helper.make_node("Cast", ["x"], ["xb"], to=BFLOAT16),
        helper.make_node("Mul", ["xb", "w"], ["m"]),
        helper.make_node("Add", ["m", "w"], ["a"]),
        helper.make_node("Cast", ["a"], ["y"], to=FLOAT),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [16])],
        [numpy_helper.from_array(w.astype(bf), "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 22)])
    emulated = emulate_in_fp32(model)
    kinds = {t.data_type for t in emulated.graph.initializer}
    assert kinds == {FLOAT}
    x = rng.standard_normal(16).astype(np.float32) * 3
    xb, wb = _bf16_values(x), _bf16_values(w)
    want = _bf16_values(_bf16_values(xb * wb) + wb)
    got = run_model_named(emulated, x)
    np.testing.assert_array_equal(got, want)
    assert not np.array_equal(got, x * w + w)  # it does round


def run_model_named(model, x):
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


def test_image_crop_fits_the_model():
    rgb = np.random.default_rng(0).random((300, 70, 3), dtype=np.float32)
    static = image_crop(rgb, (32, 96), 8, 8)  # a static tile: exactly its size
    assert static.shape == (1, 3, 32, 96) and static.dtype == np.float32
    np.testing.assert_array_equal(static[0, :, :, :70], rgb[134:166].transpose(2, 0, 1))
    assert np.all(static[0, :, :, 70:] == static[0, :, :, 69:70])  # edges repeated
    dynamic = image_crop(rgb, None, 1, 8)
    assert dynamic.shape == (1, 3, CHECK_SIDE, 64)  # bounded, a multiple of 8
    np.testing.assert_array_equal(dynamic[0], rgb[86:214, 3:67].transpose(2, 0, 1))
    assert image_crop(rgb[:5, :5], None, 16, 8).shape == (1, 3, 16, 16)  # at least the minimum


def _folder(tmp_path, count=2):
    folder = tmp_path / "mine"
    folder.mkdir()
    for i in range(count):
        write_image(
            Image(photo(40 + i, 56).transpose(1, 2, 0), None, 8, False), folder / f"p{i}.png"
        )
    return folder


def test_check_inputs_read_the_folder(tmp_path):
    folder = _folder(tmp_path, MAX_CHECK_IMAGES + 2)
    (folder / "notes.txt").write_text("not an image")
    inputs = check_inputs([(16, 24)], folder, None, 8, 8)
    assert [label for label, _ in inputs] == ["synthetic"] + [
        f"p{i}.png" for i in range(MAX_CHECK_IMAGES)
    ]
    assert inputs[0][1].shape == (1, 3, 16, 24) and inputs[1][1].shape == (1, 3, 40, 56)
    (folder / "p0.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    with pytest.raises(UserError) as e:
        check_inputs([(16, 24)], folder, None, 8, 8)
    assert "p0.png" in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(fp16=True, bf16=True, opset=22), "either --fp16 or --bf16"),
        (dict(fp16_io=True, bf16=True, opset=22), "--fp16-io makes the fp16 graph's"),
        (dict(bf16=True), "--bf16 needs --opset 22 or newer"),
        (dict(check_images="HERE"), "--check-images checks the fp16 or bf16 graph"),
        (dict(fp16=True, check_images="EMPTY"), "no images in this folder"),
        (dict(fp16=True, check_images="MISSING"), "no such folder"),
        (dict(bf16=True, opset=22, check_images="FILE"), "is not a folder"),
    ],
)
def test_plan_refuses_in_one_line(tmp_path, kwargs, message):
    (tmp_path / "empty").mkdir()
    (tmp_path / "file").write_text("x")
    where = {"HERE": tmp_path, "EMPTY": tmp_path / "empty", "MISSING": tmp_path / "nope"}
    where["FILE"] = tmp_path / "file"
    if "check_images" in kwargs:
        kwargs["check_images"] = where[kwargs["check_images"]]
    with pytest.raises(UserError, match=message) as e:
        plan_export(tmp_path / "m.onnx", tile=(16, 16), **kwargs)
    assert "\n" not in str(e.value)


def test_plan_records_the_reduced_options(tmp_path):
    folder = _folder(tmp_path)
    p = plan_export(tmp_path / "m.onnx", tile=(16, 16), fp16_io=True, check_images=folder)
    assert p.fp16 and p.fp16_io and not p.bf16 and p.check_images == folder
    p = plan_export(tmp_path / "m.onnx", tile=(16, 16), bf16=True, opset=22)
    assert p.bf16 and not p.fp16 and p.opset == 22


def test_proof_names_the_user_image_that_fails(tmp_path):
    model = transformer_block()
    fp32 = tmp_path / "fp32.onnx"
    onnx.save(model, fp32)
    x = np.random.default_rng(1).standard_normal((1, 16, D)).astype(np.float32)
    final, proof = fp16_step(model, fp32, tmp_path, [("synthetic", x), ("mine.png", x)])
    assert [c.image for c in proof.checks] == ["synthetic", "mine.png"]
    assert proof.check_images == ["mine.png"] and proof.io_precision == "fp32"
    # (x + 256) - 256 keeps x to 0.25 in fp16: fine for values in the hundreds, not in [0, 1]
    c = numpy_helper.from_array(np.array([256.0], np.float32), "c")
    nodes = [helper.make_node("Add", ["x", "c"], ["a"]), helper.make_node("Sub", ["a", "c"], ["y"])]
    vi = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 16, D]) for n in ("x", "y")]
    lossy = helper.make_model(
        helper.make_graph(nodes, "g", vi[:1], vi[1:], [c]),
        opset_imports=[helper.make_opsetid("", 18)],
    )
    onnx.save(lossy, fp32)
    small = np.random.default_rng(2).random((1, 16, D), dtype=np.float32)
    fp16_step(lossy, fp32, tmp_path, [("synthetic", x * 100)])  # passes on large values
    with pytest.raises(UserError, match=r"below (45|50) dB \(on mine.png\): not written"):
        fp16_step(lossy, fp32, tmp_path, [("synthetic", x * 100), ("mine.png", small)])
    onnx.save(model, fp32)
    io16, io_proof = fp16_step(model, fp32, tmp_path, [("synthetic", x)], Reduced("fp16", "fp16"))
    assert io_proof.io_precision == "fp16" and io_types(io16) == (HALF, HALF)
    assert io_proof.min_psnr_db > 60  # ONNX Runtime was fed fp16


class TinySR(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.body = torch.nn.Sequential(
            torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.LeakyReLU(0.1),
            torch.nn.Conv2d(16, 12, 3, padding=1),
        )  # fmt: skip

    def forward(self, x):
        return torch.nn.functional.pixel_shuffle(self.body(x), 2) + x.repeat_interleave(
            2, 2
        ).repeat_interleave(2, 3)


def test_upscale_from_an_fp16_io_onnx_matches_the_fp16_one(tmp_path):
    meta = {"scale": 2, "size_requirements": '{"min_size": 1, "multiple_of": 1}'}
    fp32 = onnx.load(export_torch(TinySR().eval(), tmp_path / "fp32.onnx", metadata=meta))
    backends = []
    for io in (FLOAT, HALF):
        path = tmp_path / f"io{io}.onnx"
        onnx.save(convert_to_fp16(fp32, io=io)[0], path)
        backends.append(OnnxBackend(path))
    fp16, io16 = backends
    assert fp16.in_dtype == np.float32 and io16.in_dtype == np.float16  # read from the input
    image = Image(photo(45, 61).transpose(1, 2, 0).copy(), None, 8, False)
    a = upscale_image(fp16, image, tile=32, overlap=4)
    b = upscale_image(io16, image, tile=32, overlap=4)
    assert b.rgb.dtype == np.float32 and b.rgb.shape == a.rgb.shape == (90, 122, 3)
    # fp16 input rounding (half an fp16 step below 1: 2.4e-4) and the fp16 output's own step
    assert np.abs(b.rgb - a.rgb).max() < 2e-3 and parity.psnr(b.rgb, a.rgb) > 60


def test_bf16_holds_what_overflows_fp16(tmp_path):
    """x * 1e6 * 1e6 / 1e12: beyond fp16's 65504, inside bf16's (fp32's) range."""
    k = [
        numpy_helper.from_array(np.array([v], np.float32), n) for n, v in (("k", 1e6), ("d", 1e12))
    ]
    nodes = [
        helper.make_node("Mul", ["x", "k"], ["a"]),
        helper.make_node("Mul", ["a", "k"], ["b"]),
        helper.make_node("Div", ["b", "d"], ["y"]),
    ]
    vi = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 16, D]) for n in ("x", "y")]
    model = helper.make_model(
        helper.make_graph(nodes, "g", vi[:1], vi[1:], k),
        opset_imports=[helper.make_opsetid("", 22)],
    )
    fp32 = tmp_path / "fp32.onnx"
    onnx.save(model, fp32)
    x = [("synthetic", np.random.default_rng(0).random((1, 16, D), dtype=np.float32))]
    with pytest.raises(UserError, match="overflows in fp16 arithmetic, first at Mul"):
        fp16_step(model, fp32, tmp_path, x)
    final, proof = fp16_step(model, fp32, tmp_path, x, Reduced("bf16"))
    assert proof.precision == "bf16" and proof.arithmetic.first_overflow is None
    assert {t.data_type for t in final.graph.initializer} == {BFLOAT16}
    assert proof.min_psnr_db >= 35 and "bf16 emulated" in proof.runtime


def test_bf16_arithmetic_accumulates_matrix_products_in_fp32():
    """As bf16 kernels do (docs/export.md): 4096 ones sum to 4096, where a bf16 sum stops at 256."""
    ones = numpy_helper.from_array(np.ones((4096, 1), np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4096])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1])],
        [ones],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 22)])
    bf16, _ = convert_to_fp16(model, low=BFLOAT16)
    got, _ = run_in_fp16(bf16, np.ones((1, 4096), np.float32))
    assert got.item() == 4096.0
    assert np.ones(4096, helper.tensor_dtype_to_np_dtype(BFLOAT16)).sum() == 256  # the contrast


def test_onnx_runtime_refusing_a_bf16_graph_says_so(tmp_path):
    meta = {"scale": 2, "precision": "bf16"}
    fp32 = onnx.load(export_torch(TinySR().eval(), tmp_path / "fp32.onnx", metadata=meta))
    fp32 = onnx.version_converter.convert_version(fp32, 22)
    path = tmp_path / "m.bf16.onnx"
    onnx.save(convert_to_fp16(fp32, low=BFLOAT16)[0], path)
    with pytest.raises(UserError) as e:
        OnnxBackend(path)
    assert "a bf16 graph, and CPUExecutionProvider has no bf16 kernels" in str(e.value)
    assert "\n" not in str(e.value)
