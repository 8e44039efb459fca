"""Small ONNX files made the way `adapt export onnx` makes them."""

import json

import numpy as np
import onnx
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
