"""The exported ONNX against what chaiNNer's and vs-mlrt's loaders check before they run a model
(docs/ecosystem.md), written here from their documented behaviour:

- chaiNNer: one tensor input and one tensor output (an image-to-image model); a rank-4 input
  whose dim 1 is a channel count <= 4 is NCHW; the model is labelled fp16, fp32 or bf16 by the
  element type of its first input/output; the scale is found by fixing the input's height and
  width (16, then 64, 256, 512) and running ONNX shape inference in strict mode; fp16 data is fed
  only to a model whose input is float16.
- vs-mlrt: the input is named `input` (its default input_name, passed to trtexec's --shapes),
  channels are dim 1 of the input; the output size comes from running the model on a tile.

And the card `adapt export onnx` writes beside the model, with the zero-overhead verdict.
"""

import copy
import hashlib
import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from fakes.openmodeldb import check_openmodeldb_shape

from adaptsr.core.artifacts import model_card_path
from adaptsr.export.onnx import run_export
from adaptsr.export.plan import plan_export

LABELS = {
    onnx.TensorProto.FLOAT16: "fp16",
    onnx.TensorProto.FLOAT: "fp32",
    onnx.TensorProto.DOUBLE: "fp64",
    onnx.TensorProto.BFLOAT16: "bf16",
}


def precision_label(model: onnx.ModelProto) -> str:
    """chaiNNer's label: the element type of the first input or output it knows, else fp32."""
    for item in [*model.graph.input, *model.graph.output]:
        label = LABELS.get(item.type.tensor_type.elem_type)
        if label:
            return label
    return "fp32"


def scale_by_shape_inference(model: onnx.ModelProto) -> int | None:
    """chaiNNer's scale: fix the input's height and width, infer shapes strictly, divide."""
    for size in (16, 64, 256, 512):
        fixed = copy.deepcopy(model)
        dims = fixed.graph.input[0].type.tensor_type.shape.dim
        dims[0].dim_value = 1
        dims[2].dim_value, dims[3].dim_value = size, size
        for i, dim in enumerate(fixed.graph.output[0].type.tensor_type.shape.dim):
            dim.dim_param = f"out_{i}"  # left for inference to fill
        try:
            inferred = onnx.shape_inference.infer_shapes(fixed, strict_mode=True)
        except Exception:
            continue
        out = inferred.graph.output[0].type.tensor_type.shape.dim
        if out[2].HasField("dim_value") and out[3].HasField("dim_value"):
            assert out[2].dim_value % size == 0 and out[3].dim_value % size == 0
            return out[2].dim_value // size
    return None


def _export(edsr_files, out: Path, **options):
    plan = plan_export(
        out, model=edsr_files["ckpt"], dynamic=True, latency_rounds=6, latency_max_rounds=6,
        **options,
    )  # fmt: skip
    run_export(plan)
    return onnx.load(str(out))


@pytest.fixture(scope="module")
def exports(edsr_files, tmp_path_factory):
    """The tiny EDSR x2 with its adapter merged (fp32) and the base in fp16 (fp32 I/O)."""
    root = tmp_path_factory.mktemp("ecosystem")
    return {
        "merged": _export(edsr_files, root / "merged.onnx", adapter=edsr_files["adapter"]),
        "merged_path": root / "merged.onnx",
        "fp16": _export(edsr_files, root / "fp16.onnx", fp16=True),
        "root": root,
    }


@pytest.mark.parametrize("name", ["merged", "fp16"])
def test_the_input_is_what_chainner_and_vs_mlrt_look_for(exports, name):
    graph = exports[name].graph
    assert len(graph.input) == 1 and len(graph.output) == 1  # image to image
    (inp,), (out,) = graph.input, graph.output
    assert inp.name == "input"  # vs-mlrt's default input_name, used in trtexec's --shapes
    assert inp.type.HasField("tensor_type") and out.type.HasField("tensor_type")
    dims = inp.type.tensor_type.shape.dim
    assert len(dims) == 4
    assert dims[1].HasField("dim_value") and dims[1].dim_value == 3  # NCHW: channels at dim 1
    assert dims[2].HasField("dim_param") and dims[3].HasField("dim_param")  # symbolic H, W
    assert len(out.type.tensor_type.shape.dim) == 4


def test_the_precision_label_follows_the_input_and_output_type(exports):
    """An fp16 export keeps fp32 I/O (its islands too): chaiNNer labels it fp32 and feeds
    fp32, which is what it takes; its weights are fp16 all the same."""
    assert precision_label(exports["merged"]) == "fp32"
    assert precision_label(exports["fp16"]) == "fp32"
    halves = [
        t for t in exports["fp16"].graph.initializer if t.data_type == onnx.TensorProto.FLOAT16
    ]
    assert halves


def test_fp16_io_exports_are_labelled_fp16(edsr_files, tmp_path):
    model = _export(edsr_files, tmp_path / "io.onnx", fp16=True, fp16_io=True)
    assert precision_label(model) == "fp16"
    session = ort.InferenceSession(str(tmp_path / "io.onnx"), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].type == "tensor(float16)"  # chaiNNer then feeds fp16


def test_chainner_finds_the_scale_by_shape_inference(exports):
    assert scale_by_shape_inference(exports["merged"]) == 2
    assert scale_by_shape_inference(exports["fp16"]) == 2


@pytest.mark.parametrize("h, w", [(16, 16), (24, 20)])
def test_a_probe_run_gives_the_scale(exports, h, w):
    """What vs-mlrt's runtimes do with a tile: run it, read the output size."""
    session = ort.InferenceSession(str(exports["merged_path"]), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).random((1, 3, h, w), dtype=np.float32)
    (y,) = session.run(None, {"input": x})
    assert y.shape == (1, 3, 2 * h, 2 * w) and y.dtype == np.float32


def test_the_export_writes_its_model_card(exports, edsr_files):
    path = exports["merged_path"]
    card = json.loads(model_card_path(path).read_text())
    check_openmodeldb_shape(card)
    data = path.read_bytes()
    assert card["resources"] == [
        {
            "platform": "onnx",
            "type": "onnx",
            "size": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
            "urls": [],
        }
    ]
    assert (card["name"], card["architecture"], card["scale"]) == ("merged", "edsr", 2)
    facts = card["adaptsr"]
    assert facts["onnx"]["zero_overhead"] == "PASS"  # the graph is the base graph, node for node
    assert (facts["onnx"]["precision"], facts["onnx"]["dynamic"]) == ("fp32", True)
    assert facts["onnx"]["parity_max_abs"] <= 1e-4
    assert [a["file"] for a in facts["adapters"]] == ["adapter.safetensors"]
    base = json.loads(model_card_path(exports["root"] / "fp16.onnx").read_text())
    assert base["adaptsr"]["adapters"] == [] and base["adaptsr"]["onnx"]["zero_overhead"] is None
    assert base["adaptsr"]["onnx"]["precision"] == "fp16"
