"""Small ONNX files made the way `adapt export onnx` makes them."""

import json
import warnings

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper


def write_onnx(path, h="height", w="width", precision="fp32", req=(16, 8), n=1, weight=1.0,
               adapter=""):  # fmt: skip
    """A tiny conv graph with the metadata `adapt export onnx` writes."""
    weight = numpy_helper.from_array(np.full((3, 3, 1, 1), weight, np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["input", "w"], ["output"])],
        "g",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [n, 3, h, w])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [n, 3, h, w])],
        [weight],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    meta = {
        "precision": precision,
        "scale": "1",
        "size_requirements": json.dumps({"min_size": req[0], "multiple_of": req[1]}),
        "adapter_fingerprint": adapter,
    }
    for k, v in meta.items():
        p = model.metadata_props.add()
        p.key, p.value = k, v
    onnx.save(model, path)
    return path


def export_torch(model, path, static=None, metadata=None):
    """`model` exported by torch.onnx (dynamic batch, height and width unless `static` is an
    (H, W)), with `metadata` as the graph's metadata properties; returns `path`."""
    shape = static or (20, 24)
    x = torch.rand(1, 3, *shape)
    dynamic = None if static else {"input": {0: "n", 2: "h", 3: "w"}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (x,),
            str(path),
            input_names=["input"],
            output_names=["output"],
            dynamic_axes=dynamic,
            dynamo=False,
        )
    if metadata:
        proto = onnx.load(str(path))
        for key, value in metadata.items():
            proto.metadata_props.add(key=key, value=str(value))
        onnx.save(proto, str(path))
    return path


def nearest_x2_onnx(path):
    """A 1x1 conv that copies each colour to four channels, then DepthToSpace: nearest x2 (an
    upscaler whose output is known exactly). Returns `path`."""
    weight = np.zeros((12, 3, 1, 1), np.float32)
    for o in range(12):
        weight[o, o % 3] = 1.0  # DCR order: output channel (i*2 + j)*3 + c reads colour c
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["input", "w"], ["t"]),
            helper.make_node("DepthToSpace", ["t"], ["output"], blocksize=2, mode="DCR"),
        ],
        "nearest",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, "h", "w"])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 3, "H", "W"])],
        [numpy_helper.from_array(weight, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    model.metadata_props.add(key="scale", value="2")
    onnx.save(model, str(path))
    return path
