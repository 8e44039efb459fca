"""fp16 conversion with fp32 islands, and the structural comparison, on hand-built ONNX graphs."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from adaptsr.core.images import synthetic_image
from adaptsr.export import parity
from adaptsr.export.fp16 import convert_to_fp16, residual_stream, run_in_fp16
from adaptsr.export.structure import compare_structure

D = 8


def transformer_block(scale: float = 1.0) -> onnx.ModelProto:
    """x -> x + MLP(LN(x)) -> x + Softmax-attention-ish(LN(x)) -> Conv head; a residual stream
    that carries `scale`-sized values (fp16 overflows at 65504)."""
    rng = np.random.default_rng(0)

    def init(name, shape, s=0.2):
        return numpy_helper.from_array((rng.standard_normal(shape) * s).astype(np.float32), name)

    inits = [
        init("ln_w", [D], 1.0), init("ln_b", [D], 0.1), init("w1", [D, D]), init("b1", [D]),
        init("w2", [D, D]), init("big", [1, D], 1.0), init("conv_w", [3, D, 1, 1]),
        numpy_helper.from_array(np.array([scale], np.float32), "scale"),
        numpy_helper.from_array(np.array([1, 4, 4, D], np.int64), "to_nhwc"),
    ]  # fmt: skip
    nodes = [
        helper.make_node("Mul", ["x", "scale"], ["s0"]),
        helper.make_node("LayerNormalization", ["s0", "ln_w", "ln_b"], ["n1"], axis=-1),
        helper.make_node("MatMul", ["n1", "w1"], ["h1"]),
        helper.make_node("Add", ["h1", "b1"], ["h1b"]),
        helper.make_node("Relu", ["h1b"], ["h1r"]),
        helper.make_node("Add", ["s0", "h1r"], ["s1"]),
        helper.make_node("LayerNormalization", ["s1", "ln_w", "ln_b"], ["n2"], axis=-1),
        helper.make_node("MatMul", ["n2", "w2"], ["a"]),
        helper.make_node("Softmax", ["a"], ["p"], axis=-1),
        helper.make_node("Mul", ["p", "big"], ["pb"]),
        helper.make_node("Add", ["s1", "pb"], ["s2"]),
        helper.make_node("Add", ["s2", "s0"], ["s3"]),  # a long skip, as around a Swin stage
        helper.make_node("LayerNormalization", ["s3", "ln_w", "ln_b"], ["n3"], axis=-1),
        helper.make_node("Reshape", ["n3", "to_nhwc"], ["nhwc"]),
        helper.make_node("Transpose", ["nhwc"], ["nchw"], perm=[0, 3, 1, 2]),
        helper.make_node("Conv", ["nchw", "conv_w"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "block",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16, D])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 4, 4])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.checker.check_model(model, full_check=True)
    return model


def run_model(model, x):
    import onnxruntime as ort

    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x})[0]


def test_islands_and_types():
    model = transformer_block()
    half, report = convert_to_fp16(model)
    g = half.graph
    assert g.input[0].type.tensor_type.elem_type == TensorProto.FLOAT
    assert g.output[0].type.tensor_type.elem_type == TensorProto.FLOAT
    inits = {t.name: t.data_type for t in g.initializer}
    assert inits["w1"] == inits["w2"] == inits["conv_w"] == TensorProto.FLOAT16
    assert inits["ln_w"] == TensorProto.FLOAT  # LayerNorm stays fp32
    assert inits["to_nhwc"] == TensorProto.INT64  # shapes untouched
    islands = report.fp32_nodes
    assert islands["LayerNormalization"] == 3 and islands["Softmax"] == 1
    assert islands["Add"] == 3  # the residual adds, not the bias add
    assert residual_stream(model.graph) >= {"s0", "s1", "s2", "s3"}
    assert "h1b" not in residual_stream(model.graph)


def test_fp16_output_close_to_fp32():
    model = transformer_block()
    x = np.random.default_rng(1).standard_normal((1, 16, D)).astype(np.float32)
    half, _ = convert_to_fp16(model)
    assert parity.psnr(run_model(half, x), run_model(model, x)) > 50


def test_residual_stream_beyond_fp16_range_survives():
    """Stream values up to ~8e4 (fp16 max 65504): finite with the islands, not without."""
    model = transformer_block(scale=4e4)
    x = np.random.default_rng(2).uniform(0.5, 1.0, (1, 16, D)).astype(np.float32)
    want = run_model(model, x)
    half, _ = convert_to_fp16(model)
    got = run_model(half, x)
    assert np.all(np.isfinite(got)) and parity.psnr(got, want) > 30
    naive, _ = convert_to_fp16(model, fp32_ops=(), keep_residual_stream=False)
    assert not np.all(np.isfinite(run_model(naive, x)))


def channels_first_layernorm(channels: int = 16) -> onnx.ModelProto:
    """SAFMN's LayerNorm written out: (x - mean) / sqrt(mean((x - mean)^2) + eps) * w + b."""
    rng = np.random.default_rng(3)
    per_channel = (1, channels, 1, 1)
    inits = [
        numpy_helper.from_array(np.array([2.0], np.float32), "two"),
        numpy_helper.from_array(np.array([1e-6], np.float32), "eps"),
        numpy_helper.from_array(np.array([1], np.int64), "axis"),
        numpy_helper.from_array(rng.uniform(0.5, 1.5, per_channel).astype(np.float32), "w"),
        numpy_helper.from_array(rng.uniform(-0.1, 0.1, per_channel).astype(np.float32), "b"),
    ]
    nodes = [
        helper.make_node("ReduceMean", ["x", "axis"], ["mean"], keepdims=1, name="mean"),
        helper.make_node("Sub", ["x", "mean"], ["d"], name="centre"),
        helper.make_node("Pow", ["d", "two"], ["sq"], name="square"),
        helper.make_node("ReduceMean", ["sq", "axis"], ["var"], keepdims=1, name="var"),
        helper.make_node("Add", ["var", "eps"], ["ve"], name="plus_eps"),
        helper.make_node("Sqrt", ["ve"], ["std"], name="std"),
        helper.make_node("Div", ["d", "std"], ["n"], name="normalise"),
        helper.make_node("Mul", ["n", "w"], ["nw"], name="gamma"),
        helper.make_node("Add", ["nw", "b"], ["y"], name="beta"),
    ]
    shape = [1, channels, 4, 4]
    graph = helper.make_graph(
        nodes,
        "ln",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    return model


def test_written_out_layernorm_is_kept_whole_in_fp32():
    model = channels_first_layernorm()
    half, report = convert_to_fp16(model)
    islands = report.fp32_nodes
    # the centring, the eps add and the division stay fp32 with the reductions, Pow and Sqrt
    assert islands == {"Add": 1, "Div": 1, "Pow": 1, "ReduceMean": 2, "Sqrt": 1, "Sub": 1}
    assert report.fp16_nodes == 2  # gamma and beta
    # activations of a few hundred, as a residual stream carries: the centred square reaches
    # 9e4, past fp16's 65504; kept whole in fp32 it never does
    x = np.random.default_rng(4).uniform(0, 600, (1, 16, 4, 4)).astype(np.float32)
    want = run_model(model, x)
    got, overflow = run_in_fp16(half, x)
    assert overflow is None and parity.psnr(got, want) > 45
    naive, _ = convert_to_fp16(model, fp32_ops=(), keep_residual_stream=False)
    got, overflow = run_in_fp16(naive, x)
    # the variance is inf, so every value is divided to 0: a finite but wrong output
    assert overflow == "Pow 'square'" and parity.psnr(got, want) < 20


def test_fp16_arithmetic_names_the_first_overflowing_node():
    """x * 300 * 300 / 300 / 300: x in fp32; inf after the second Mul in fp16 once x > 0.73."""
    inits = [numpy_helper.from_array(np.array([300.0], np.float32), "k")]
    nodes = [
        helper.make_node("Mul", ["x", "k"], ["a"], name="first"),
        helper.make_node("Mul", ["a", "k"], ["b"], name="second"),
        helper.make_node("Div", ["b", "k"], ["c"], name="down"),
        helper.make_node("Div", ["c", "k"], ["y"], name="down_again"),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    half, _ = convert_to_fp16(model)
    x = np.linspace(0.8, 1.0, 8, dtype=np.float32)[None]  # 0.8 * 9e4 = 72000 > 65504
    got, overflow = run_in_fp16(half, x)
    assert overflow == "Mul 'second'" and np.all(np.isinf(got))
    got, overflow = run_in_fp16(half, x / 4)  # at most 22500: in range
    assert overflow is None and np.allclose(got, x / 4, rtol=2e-3)


def test_structure_comparison_sees_differences():
    a = transformer_block()
    b = transformer_block()
    assert compare_structure(a, b)["identical"]
    b.graph.node.append(helper.make_node("Identity", ["y"], ["y2"]))
    result = compare_structure(a, b)
    assert not result["identical"] and any("Identity" in d for d in result["differences"])
    c = transformer_block()
    c.graph.initializer[0].CopyFrom(
        numpy_helper.from_array(np.ones([D + 1], np.float32), c.graph.initializer[0].name)
    )
    result = compare_structure(a, c)
    assert not result["identical"] and any("parameters" in d for d in result["differences"])


@pytest.mark.parametrize("h,w", [(8, 8), (17, 33)])
def test_synthetic_image_is_photo_like(h, w):
    img = synthetic_image(h, w, seed=3)[None]
    assert img.shape == (1, 3, h, w) and img.dtype == np.float32
    assert img.min() >= 0 and img.max() <= 1 and img.std() > 0.05
    assert np.array_equal(img, synthetic_image(h, w, seed=3)[None])
