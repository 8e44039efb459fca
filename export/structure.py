"""Zero overhead, proven twice: graph structure and measured latency, merged vs base (no torch).

The structure proof compares two ONNX graphs node by node in a canonical order. Names do not
matter and weight values do not matter; everything else does: each node's op type, domain and
every attribute, and for each input slot where its value comes from (which graph input, which
earlier node's which output, or an initializer of which dtype and shape). Two graphs pass only
when these canonical node lists, and the graph outputs, are equal; the report names the first
node that differs. The parameter count is reported beside it.
"""

from __future__ import annotations

import heapq
from pathlib import Path

import numpy as np

from adaptsr.core.lazy import lazy_import
from adaptsr.export.parity import run, session
from adaptsr.serve.timing import compare

onnx = lazy_import("onnx")

DIFFERENCES_SHOWN = 20


def _attribute(attr, outer: dict[str, str]) -> tuple:
    """An attribute as a comparable value: tensors by dtype and shape, graphs canonically."""
    kind = attr.type
    if kind == onnx.AttributeProto.TENSOR:
        return (attr.name, "tensor", attr.t.data_type, tuple(attr.t.dims))
    if kind == onnx.AttributeProto.TENSORS:
        return (attr.name, "tensors", tuple((t.data_type, tuple(t.dims)) for t in attr.tensors))
    if kind == onnx.AttributeProto.GRAPH:
        return (attr.name, "graph", tuple(canonical_nodes(attr.g, outer)[0]))
    if kind == onnx.AttributeProto.GRAPHS:
        return (
            attr.name,
            "graphs",
            tuple(tuple(canonical_nodes(g, outer)[0]) for g in attr.graphs),
        )
    if kind == onnx.AttributeProto.FLOAT:
        return (attr.name, "float", float(np.float32(attr.f)))
    if kind == onnx.AttributeProto.INT:
        return (attr.name, "int", int(attr.i))
    if kind == onnx.AttributeProto.STRING:
        return (attr.name, "string", bytes(attr.s))
    if kind == onnx.AttributeProto.FLOATS:
        return (attr.name, "floats", tuple(float(np.float32(f)) for f in attr.floats))
    if kind == onnx.AttributeProto.INTS:
        return (attr.name, "ints", tuple(int(i) for i in attr.ints))
    if kind == onnx.AttributeProto.STRINGS:
        return (attr.name, "strings", tuple(bytes(s) for s in attr.strings))
    if kind == onnx.AttributeProto.TYPE_PROTO:
        return (attr.name, "type", attr.tp.SerializeToString(deterministic=True))
    return (attr.name, f"kind {kind}", attr.SerializeToString(deterministic=True))


def canonical_nodes(graph, outer: dict[str, str] | None = None) -> tuple[list[tuple], list[str]]:
    """(canonical node signatures in a deterministic topological order, node labels).

    A signature is (op type, domain, attributes, input sources, output count). Among the nodes
    whose inputs are all known, the smallest signature goes next: two nodes with equal
    signatures compute the same thing from the same values, so either order gives the same
    list. A value's canonical name is where it comes from, so graph and node names never count.
    """
    source: dict[str, str] = dict(outer or {})
    for i, value in enumerate(graph.input):
        source[value.name] = f"input {i}"
    for init in graph.initializer:
        source[init.name] = f"initializer {init.data_type}{list(init.dims)}"
    for sparse in graph.sparse_initializer:
        source[sparse.values.name] = f"sparse initializer {list(sparse.dims)}"
    source[""] = "none"  # an omitted optional input

    waiting = {}  # node index -> inputs not yet known
    users: dict[str, list[int]] = {}
    for index, node in enumerate(graph.node):
        unknown = {name for name in node.input if name not in source}
        waiting[index] = unknown
        for name in unknown:
            users.setdefault(name, []).append(index)

    def signature(index: int) -> tuple:
        node = graph.node[index]
        attrs = tuple(sorted(_attribute(a, source) for a in node.attribute))
        inputs = tuple(source[name] for name in node.input)
        return (node.op_type, node.domain, attrs, inputs, len(node.output))

    ready = [(signature(i), i) for i, unknown in waiting.items() if not unknown]
    heapq.heapify(ready)
    order, labels = [], []
    while ready:
        sig, index = heapq.heappop(ready)
        node = graph.node[index]
        position = len(order)
        order.append(sig)
        labels.append(f"#{position} {node.op_type} {node.name or node.output[0]!r}")
        for k, name in enumerate(node.output):
            if name:
                source[name] = f"node {position} output {k}"
            for user in users.get(name, ()):
                waiting[user].discard(name)
                if not waiting[user]:
                    heapq.heappush(ready, (signature(user), user))
    stuck = [i for i, unknown in waiting.items() if unknown]
    for index in stuck:  # inputs that nothing produces: compare them by name as a last resort
        node = graph.node[index]
        missing = sorted(waiting[index])
        order.append(("unresolved", node.op_type, tuple(missing)))
        labels.append(f"unresolved {node.op_type} {node.name!r} (no producer for {missing[0]!r})")
    outputs = [source.get(v.name, f"unknown {v.name}") for v in graph.output]
    return order + [("graph outputs", tuple(outputs))], labels + ["the graph outputs"]


def parameter_count(model) -> int:
    """Elements of every initializer and Constant tensor."""
    count = sum(int(np.prod(t.dims)) for t in model.graph.initializer)
    for node in model.graph.node:
        if node.op_type == "Constant":
            count += sum(int(np.prod(a.t.dims)) for a in node.attribute if a.name == "value")
    return count


def _explain(a: tuple, b: tuple) -> str:
    """What differs between two node signatures, in words."""
    if len(a) != 5 or len(b) != 5:
        return f"{a[0]} vs {b[0]}"
    if a[0] != b[0] or a[1] != b[1]:
        return f"op {a[1] + '::' if a[1] else ''}{a[0]} vs {b[1] + '::' if b[1] else ''}{b[0]}"
    if a[2] != b[2]:
        da, db = dict((x[0], x[1:]) for x in a[2]), dict((x[0], x[1:]) for x in b[2])
        name = next(k for k in sorted(set(da) | set(db)) if da.get(k) != db.get(k))
        return f"attribute {name}: {da.get(name, 'absent')} vs {db.get(name, 'absent')}"
    if a[3] != b[3]:
        if len(a[3]) != len(b[3]):
            return f"{len(a[3])} inputs vs {len(b[3])}"
        slot = next(i for i, (x, y) in enumerate(zip(a[3], b[3], strict=True)) if x != y)
        return f"input {slot} from {a[3][slot]} vs {b[3][slot]}"
    return f"{a[4]} outputs vs {b[4]}"


def compare_structure(candidate, base) -> dict:
    """Do two ONNX models compute with the same graph (any weight values)?"""
    a, labels_a = canonical_nodes(candidate.graph)
    b, labels_b = canonical_nodes(base.graph)
    diffs = []
    first = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), None)
    if first is not None:
        diffs.append(f"{labels_a[first]} vs {labels_b[first]}: {_explain(a[first], b[first])}")
    elif len(a) != len(b):
        shorter = min(len(a), len(b))
        which, labels = ("candidate", labels_a) if len(a) > len(b) else ("base", labels_b)
        diffs.append(f"{abs(len(a) - len(b))} more node(s) in the {which}, from {labels[shorter]}")
    params = parameter_count(candidate), parameter_count(base)
    if params[0] != params[1]:
        diffs.append(f"parameters: {params[0]} vs {params[1]}")
    return {
        "identical": not diffs,
        "verdict": "PASS" if not diffs else "FAIL",
        "nodes": [len(candidate.graph.node), len(base.graph.node)],
        "params": list(params),
        "first_difference": diffs[0] if diffs else None,
        "differences": diffs[:DIFFERENCES_SHOWN],
    }


def compare_latency(
    merged_path: str | Path,
    base_path: str | Path,
    x: np.ndarray,
    rounds: int = 30,
    warmup: int = 3,
    tolerance: float = 0.02,
    max_rounds: int | None = None,
) -> dict:
    """ONNX Runtime, merged vs base, alternating on the same input (adaptsr.serve.timing)."""
    merged, base = session(merged_path), session(base_path)
    result = compare(
        lambda: run(base, x),
        lambda: run(merged, x),
        rounds=rounds,
        warmup=warmup,
        tolerance=tolerance,
        max_rounds=max_rounds,
    ).to_dict()
    result["input_shape"] = list(x.shape)
    result["runtime"] = "onnxruntime CPUExecutionProvider"
    return result
