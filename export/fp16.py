"""fp32 ONNX -> fp16 (or bf16) ONNX for strongly typed TensorRT, with fp32 islands (onnx + numpy
only).

Strongly typed TensorRT runs every layer in the type the graph gives it, so precision is decided
here, once, in the graph: weights and compute in fp16, except

- normalisation and softmax (LayerNormalization, Softmax, reductions, Pow, Sqrt): their sums of
  squares and exponentials overflow or lose everything in fp16. A normalisation written out in
  elementary ops (SAFMN's channels-first LayerNorm: mean, x - mean, its square, mean, + eps,
  sqrt, divide) is kept whole: every Sub, Add, Mul and Div that reads the result of one of these
  ops stays fp32 too (`normalisation_nodes`), so the centred values, the variance plus eps and
  the division never round to fp16;
- the residual stream of transformers: the tensors that feed a LayerNormalization and the Adds
  and reshapes that carry them from block to block. SwinIR-class models accumulate activations
  there that exceed the fp16 range.

Inputs and outputs stay fp32 unless asked otherwise (`io`: fp16 inputs and outputs for runtimes
that want them); Cast nodes are inserted where an fp16 region meets an fp32 one. bf16 follows the
same island rules (its range is fp32's, but its 8-bit mantissa loses sums of squares as badly).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from adaptsr.core.lazy import lazy_import

onnx = lazy_import("onnx")
onnx_reference = lazy_import("onnx.reference")  # its own import: onnx does not load it

FLOAT, HALF, BFLOAT16 = 1, 10, 16  # onnx.TensorProto.FLOAT, FLOAT16, BFLOAT16 (the ONNX spec)
TYPE_NAMES = {FLOAT: "fp32", HALF: "fp16", BFLOAT16: "bf16"}

# Reductions and roots: they feed the elementwise ops of written-out normalisations
NORM_SOURCES = {
    "ReduceMean",
    "ReduceSum",
    "ReduceSumSquare",
    "ReduceL2",
    "Pow",
    "Sqrt",
    "Reciprocal",
}
FP32_OPS = {
    "LayerNormalization",
    "GroupNormalization",
    "InstanceNormalization",
    "Softmax",
    "LogSoftmax",
} | NORM_SOURCES
# What a reduction or root feeds in a written-out normalisation (x - mean, var + eps, d / std)
NORM_ARITHMETIC = {"Sub", "Add", "Mul", "Div"}
# Ops that carry the residual stream unchanged in value.
PASSTHROUGH = {"Reshape", "Transpose", "Squeeze", "Unsqueeze", "Flatten", "Identity"}
STREAM_OPS = PASSTHROUGH | {"Add", "Concat"}
# Inputs that the ONNX spec requires to stay float32 whatever the data type.
FP32_INPUTS = {"Resize": {2}}
FP16_MAX = float(np.finfo(np.float16).max)


@dataclass
class Fp16Report:
    fp32_nodes: dict[str, int] = field(default_factory=dict)  # op type -> count kept in fp32
    fp16_nodes: int = 0
    casts: int = 0
    clipped_weights: int = 0  # initializer values beyond the fp16 range (clipped)

    def to_dict(self) -> dict:
        return {
            "fp32_islands": self.fp32_nodes,
            "fp16_nodes": self.fp16_nodes,
            "casts_inserted": self.casts,
            "clipped_weights": self.clipped_weights,
        }


def _elem_types(model) -> dict[str, int]:
    inferred = onnx.shape_inference.infer_shapes(model)
    g = inferred.graph
    types = {}
    for vi in list(g.input) + list(g.output) + list(g.value_info):
        if vi.type.HasField("tensor_type"):
            types[vi.name] = vi.type.tensor_type.elem_type
    for t in g.initializer:
        types[t.name] = t.data_type
    for n in g.node:
        if n.op_type == "Constant":
            for a in n.attribute:
                if a.name == "value":
                    types[n.output[0]] = a.t.data_type
    return types


def residual_stream(graph) -> set[str]:
    """Tensors of the transformer residual stream: LayerNormalization inputs, the pure reshapes
    that lead to them, and everything reached from them through Add/Concat/reshapes."""
    producer = {o: n for n in graph.node for o in n.output}
    consumers: dict[str, list] = {}
    for n in graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    seeds = [n.input[0] for n in graph.node if n.op_type == "LayerNormalization"]
    stream: set[str] = set()
    todo = list(seeds)
    while todo:  # backwards through pure reshapes to the Add that made the tensor
        t = todo.pop()
        if t in stream:
            continue
        stream.add(t)
        p = producer.get(t)
        if p is not None and p.op_type in PASSTHROUGH:
            todo.append(p.input[0])
    todo = list(stream)
    while todo:  # forwards: residual Adds and reshapes of stream tensors are stream tensors
        t = todo.pop()
        for c in consumers.get(t, []):
            if c.op_type in STREAM_OPS and (c.op_type != "Reshape" or c.input[0] == t):
                for o in c.output:
                    if o not in stream:
                        stream.add(o)
                        todo.append(o)
    return stream


def normalisation_nodes(graph) -> set[int]:
    """Indices of the elementwise nodes of written-out normalisations: a Sub, Add, Mul or Div
    with an input made by a reduction, Pow, Sqrt or Reciprocal (x - mean, var + eps, d / std,
    x * rsqrt)."""
    producer = {o: n.op_type for n in graph.node for o in n.output}
    return {
        i
        for i, n in enumerate(graph.node)
        if n.op_type in NORM_ARITHMETIC and any(producer.get(x) in NORM_SOURCES for x in n.input)
    }


def convert_to_fp16(
    model, fp32_ops=FP32_OPS, keep_residual_stream: bool = True, low: int = HALF, io: int = FLOAT
):
    """Return (fp16 model, Fp16Report). The input model (fp32) is not modified.

    `fp32_ops` and `keep_residual_stream` choose the islands (the defaults are what TensorRT
    needs; the options exist to show what happens without them). `low` is the reduced type
    (HALF or BFLOAT16), `io` the type of the graph's inputs and outputs (FLOAT or `low`)."""
    if low not in (HALF, BFLOAT16) or io not in (FLOAT, low):
        raise ValueError(f"cannot convert to {low} with {io} inputs and outputs")
    model = onnx.ModelProto.FromString(model.SerializeToString())
    g = model.graph
    types = _elem_types(model)
    report = Fp16Report()
    prec, const_nodes = _node_precisions(g, types, fp32_ops, keep_residual_stream, low)
    home = _place_constants(g, prec, const_nodes, report, low, io)
    _rebuild_with_casts(g, types, prec, home, report, low, io)
    report.fp32_nodes = dict(sorted(Counter(report.fp32_nodes).items()))
    onnx.checker.check_model(model)
    onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    return model, report


def _is_float(types: dict[str, int], name: str) -> bool:
    return bool(name) and types.get(name) == FLOAT


def _node_precisions(graph, types, fp32_ops, keep_residual_stream: bool, low: int):
    """Step 1: (node index -> FLOAT or `low` for each node that touches float tensors, float
    Constant nodes by output name)."""
    stream = residual_stream(graph) if keep_residual_stream else set()
    # the written-out normalisations follow the fp32 ops they belong to
    norm = normalisation_nodes(graph) if NORM_SOURCES & set(fp32_ops) else set()
    prec: dict[int, int] = {}
    const_nodes = {}
    for idx, n in enumerate(graph.node):
        if n.op_type == "Constant" and _is_float(types, n.output[0]):
            const_nodes[n.output[0]] = n
            continue
        float_io = any(_is_float(types, t) for t in list(n.input) + list(n.output))
        casts_to_float = n.op_type == "Cast" and any(
            a.name == "to" and a.i == FLOAT for a in n.attribute
        )
        if not (float_io or casts_to_float) or n.op_type in ("Shape", "Size"):
            continue
        keep32 = (
            n.op_type in fp32_ops
            or idx in norm
            or (n.op_type in STREAM_OPS and any(o in stream for o in n.output))
            # float -> int/bool (comparisons, casts to indices): no float result to save, and
            # fp16 would round the values compared or converted
            or not (casts_to_float or any(_is_float(types, o) for o in n.output))
        )
        prec[idx] = FLOAT if keep32 else low
    return prec, const_nodes


def _place_constants(graph, prec, const_nodes, report: Fp16Report, low: int, io: int):
    """Step 2: constants (initializers and Constant nodes) become `low` when every user is.
    Returns the precision each graph input and constant now has (dict name -> type)."""
    users: dict[str, set[int]] = {}
    for idx, n in enumerate(graph.node):
        for k, i in enumerate(n.input):
            if idx in prec and k not in FP32_INPUTS.get(n.op_type, ()):
                users.setdefault(i, set()).add(prec[idx])
            elif i:
                users.setdefault(i, set()).add(FLOAT)
    home: dict[str, int] = {i.name: io for i in graph.input}
    low_dtype = onnx.helper.tensor_dtype_to_np_dtype(low)

    def to_half(arr: np.ndarray) -> np.ndarray:
        if low != HALF:  # bf16 spans fp32's range: nothing to clip
            return arr.astype(low_dtype)
        clipped = np.abs(arr) > FP16_MAX
        report.clipped_weights += int(clipped.sum())
        return np.clip(arr, -FP16_MAX, FP16_MAX).astype(np.float16)

    for t in graph.initializer:
        if t.data_type == FLOAT:
            home[t.name] = low if users.get(t.name) == {low} else FLOAT
            if home[t.name] == low:
                half = to_half(onnx.numpy_helper.to_array(t))
                t.CopyFrom(onnx.numpy_helper.from_array(half, t.name))
    for name, n in const_nodes.items():
        home[name] = low if users.get(name) == {low} else FLOAT
        if home[name] == low:
            for a in n.attribute:
                if a.name == "value":
                    half = to_half(onnx.numpy_helper.to_array(a.t))
                    a.t.CopyFrom(onnx.numpy_helper.from_array(half))
    return home


def _to_half_attributes(n, low: int) -> None:
    """An fp16 node's own float attributes: a Cast to float casts to `low`, a ConstantOfShape
    fills with a `low` value."""
    for a in n.attribute:
        if n.op_type == "Cast" and a.name == "to" and a.i == FLOAT:
            a.i = low
        if n.op_type == "ConstantOfShape" and a.name == "value":
            value = onnx.numpy_helper.to_array(a.t)
            if value.dtype == np.float32:
                low_value = value.astype(onnx.helper.tensor_dtype_to_np_dtype(low))
                a.t.CopyFrom(onnx.numpy_helper.from_array(low_value))


def _rebuild_with_casts(graph, types, prec, home, report: Fp16Report, low: int, io: int) -> None:
    """Step 3: the node list again, with a Cast wherever a tensor's precision and its user's
    differ; a graph output made in another type than `io` is renamed and cast to `io`."""
    cast_cache: dict[tuple[str, int], str] = {}
    out_nodes = []

    def cast(name: str, to: int) -> str:
        key = (name, to)
        if key not in cast_cache:
            new = f"{name}__to_{TYPE_NAMES[to]}"
            out_nodes.append(onnx.helper.make_node("Cast", [name], [new], to=to, name=new))
            report.casts += 1
            cast_cache[key] = new
        return cast_cache[key]

    graph_outputs = {o.name for o in graph.output}
    renamed_outputs: dict[str, str] = {}  # made in the other type -> the output's name
    for idx, n in enumerate(graph.node):
        p = prec.get(idx)
        if p is not None:
            for k, i in enumerate(n.input):
                if not _is_float(types, i) or i not in home:
                    continue
                want = FLOAT if k in FP32_INPUTS.get(n.op_type, ()) else p
                if home[i] != want:
                    n.input[k] = cast(i, want)
            if p == low:
                _to_half_attributes(n, low)
                report.fp16_nodes += 1
            else:
                report.fp32_nodes[n.op_type] = report.fp32_nodes.get(n.op_type, 0) + 1
            for k, o in enumerate(n.output):
                if _is_float(types, o) or (n.op_type == "Cast" and o):
                    home[o] = p
                    if p != io and o in graph_outputs:
                        n.output[k] = f"{o}__{TYPE_NAMES[p]}"
                        renamed_outputs[n.output[k]] = o
        out_nodes.append(n)
        for o in n.output:
            if o in renamed_outputs:
                orig = renamed_outputs[o]
                back = onnx.helper.make_node("Cast", [o], [orig], to=io, name=f"{orig}_cast")
                out_nodes.append(back)
                report.casts += 1
    del graph.node[:]
    graph.node.extend(out_nodes)
    for v in list(graph.input) + list(graph.output):
        if v.type.tensor_type.elem_type == FLOAT:
            v.type.tensor_type.elem_type = io
    del graph.value_info[:]  # stale types; consumers re-infer


def run_in_fp16(model, x: np.ndarray) -> tuple[np.ndarray, str | None]:
    """(float32 output, first node whose output is not finite, or None) of an fp16 (or bf16)
    graph computed in fp16 (bf16) arithmetic; `x` is float32, given in the input's type.

    ONNX Runtime on the CPU runs most fp16 ops in fp32, so it never sees an fp16 overflow.
    onnx's reference evaluator computes every op in numpy in the dtype of its tensors, as an fp16
    GPU kernel would store them, so an intermediate beyond 65504 becomes inf here too.
    """
    inits = {t.name for t in model.graph.initializer}
    inp = next(i for i in model.graph.input if i.name not in inits)
    x = x.astype(onnx.helper.tensor_dtype_to_np_dtype(inp.type.tensor_type.elem_type))
    values = onnx_reference.ReferenceEvaluator(model).run(None, {inp.name: x}, intermediate=True)
    first = None
    for node in model.graph.node:  # graph order is topological: the first one broke first
        bad = [
            o
            for o in node.output
            if isinstance(values.get(o), np.ndarray)
            and values[o].dtype.kind == "f"
            and not np.all(np.isfinite(values[o]))
        ]
        if bad:
            first = f"{node.op_type} {node.name or bad[0]!r}"
            break
    return np.asarray(values[model.graph.output[0].name]).astype(np.float32), first
