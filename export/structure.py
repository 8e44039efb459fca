"""Zero overhead, proven twice: graph structure and measured latency, merged vs base (no torch)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np


def _initializers(model) -> dict[str, tuple[int, tuple[int, ...]]]:
    """name -> (ONNX element type, shape) of every initializer, Constant nodes included."""
    from onnx import numpy_helper

    inits = {t.name: (t.data_type, tuple(t.dims)) for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    t = numpy_helper.to_array(attr.t)
                    inits[node.output[0]] = (attr.t.data_type, tuple(t.shape))
    return inits


def summary(model) -> dict:
    """Op-type histogram, initializer shapes and parameter count of an ONNX model."""
    inits = _initializers(model)
    return {
        "ops": dict(sorted(Counter(n.op_type for n in model.graph.node).items())),
        "nodes": len(model.graph.node),
        "initializers": len(inits),
        "params": int(sum(int(np.prod(shape)) for _, shape in inits.values())),
        "_shapes": inits,
    }


def compare_structure(merged, base) -> dict:
    """Identical op histograms, initializer shapes (by name) and parameter counts?"""
    a, b = summary(merged), summary(base)
    diffs = []
    if a["ops"] != b["ops"]:
        keys = sorted(set(a["ops"]) | set(b["ops"]))
        diffs += [
            f"op {k}: {a['ops'].get(k, 0)} vs {b['ops'].get(k, 0)}"
            for k in keys
            if a["ops"].get(k, 0) != b["ops"].get(k, 0)
        ]
    sa, sb = a["_shapes"], b["_shapes"]
    if sorted(sa.values()) != sorted(sb.values()):
        diffs.append("initializer shapes differ")
        diffs += [f"initializer {k}: {sa.get(k)} vs {sb.get(k)}" for k in sorted(set(sa) ^ set(sb))]
    if a["params"] != b["params"]:
        diffs.append(f"parameters: {a['params']} vs {b['params']}")
    return {
        "identical": not diffs,
        "verdict": "PASS" if not diffs else "FAIL",
        "merged": {k: v for k, v in a.items() if not k.startswith("_")},
        "base": {k: v for k, v in b.items() if not k.startswith("_")},
        "differences": diffs[:20],
    }


def compare_latency(
    merged_path: str | Path,
    base_path: str | Path,
    x: np.ndarray,
    rounds: int = 30,
    warmup: int = 3,
    tolerance: float = 0.02,
) -> dict:
    """ONNX Runtime, merged vs base, alternating on the same input (adaptsr.serve.timing)."""
    from adaptsr.export.parity import run, session
    from adaptsr.serve.timing import compare

    merged, base = session(merged_path), session(base_path)
    result = compare(
        lambda: run(base, x),
        lambda: run(merged, x),
        rounds=rounds,
        warmup=warmup,
        tolerance=tolerance,
    ).to_dict()
    result["input_shape"] = list(x.shape)
    result["runtime"] = "onnxruntime CPUExecutionProvider"
    return result
