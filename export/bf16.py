"""A bf16 graph emulated in fp32, so that ONNX Runtime on the CPU can run it (onnx + numpy only).

ONNX Runtime's CPU provider has bf16 kernels for almost nothing (not Add, Mul, MatMul or Conv;
Cast to and from bf16 it has), so the bf16 graph itself cannot run there. `emulate_in_fp32`
rewrites it into an fp32 graph that rounds exactly where a bf16 kernel would: the weights are
the bf16 weights (exact in fp32), and every tensor the bf16 graph holds in bf16 is computed in
fp32 and rounded to bf16 (Cast to bf16 and back, round to nearest even, as TensorRT's bf16
kernels store their outputs). Arithmetic inside one op stays fp32, as in bf16 kernels that
accumulate in fp32.
"""

from __future__ import annotations

import numpy as np

from adaptsr.core.lazy import lazy_import
from adaptsr.export.fp16 import BFLOAT16, FLOAT

onnx = lazy_import("onnx")


def _bf16_tensor_types(model) -> dict[str, int]:
    inferred = onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    g = inferred.graph
    return {
        vi.name: vi.type.tensor_type.elem_type
        for vi in list(g.input) + list(g.output) + list(g.value_info)
        if vi.type.HasField("tensor_type")
    }


def _to_fp32(tensor) -> None:
    """A bf16 tensor proto, in place, as the fp32 tensor of the same values."""
    values = onnx.numpy_helper.to_array(tensor).astype(np.float32)
    tensor.CopyFrom(onnx.numpy_helper.from_array(values, tensor.name))


def emulate_in_fp32(model):
    """The fp32 graph that computes what the bf16 graph `model` computes, rounding every bf16
    tensor to bf16 (the input model is not modified)."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    g = model.graph
    types = _bf16_tensor_types(model)
    for t in g.initializer:
        if t.data_type == BFLOAT16:
            _to_fp32(t)
    nodes = []
    for n in g.node:
        for a in n.attribute:
            if n.op_type == "Cast" and a.name == "to" and a.i == BFLOAT16:
                a.i = FLOAT  # the rounding follows below, as for every bf16 output
            if a.name == "value" and a.t.data_type == BFLOAT16:  # Constant, ConstantOfShape
                _to_fp32(a.t)
        rounded = []
        for k, o in enumerate(n.output):
            if o and types.get(o) == BFLOAT16:
                n.output[k] = f"{o}__exact"
                rounded.append((n.output[k], o))
        nodes.append(n)
        for exact, name in rounded:
            nodes.append(onnx.helper.make_node("Cast", [exact], [f"{name}__bf16"], to=BFLOAT16))
            nodes.append(onnx.helper.make_node("Cast", [f"{name}__bf16"], [name], to=FLOAT))
    del g.node[:]
    g.node.extend(nodes)
    for v in list(g.input) + list(g.output):
        if v.type.tensor_type.elem_type == BFLOAT16:
            v.type.tensor_type.elem_type = FLOAT
    del g.value_info[:]
    onnx.checker.check_model(model)
    return model
