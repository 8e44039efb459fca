"""Zero overhead at the engine level: the layers TensorRT built, compared (no torch).

An engine built with `ProfilingVerbosity.DETAILED` describes every layer through its
`IEngineInspector` as JSON: layer type, input and output tensors (dimensions, format and data
type), parameters (weight counts, not values) and the tactic chosen. The base and the merged
engine are built with one timing cache, so a layer that is the same in both is timed once and
gets the same tactic; the two are then compared here with names left out (they come from ONNX
node names) and weight values never seen. Identical layers, precisions and tactics: the merged
engine does exactly the work of the base engine.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from adaptsr.core.lazy import lazy_import

if TYPE_CHECKING:  # the type checker reads tensorrt-stubs
    import tensorrt as trt
else:
    trt = lazy_import("tensorrt")

# Keys that name things rather than describe the computation.
NAME_KEYS = ("Name", "Metadata", "Origin")
TACTIC_KEYS = ("TacticName", "TacticValue", "Tactic")


def engine_layers(engine) -> list[dict]:
    """The per-layer information of a deserialized engine (built with DETAILED verbosity)."""
    inspector = engine.create_engine_inspector()
    text = inspector.get_engine_information(trt.LayerInformationFormat.JSON)
    return parse_layers(text)


def parse_layers(text: str) -> list[dict]:
    """Layers from the inspector's JSON; a layer without details (the engine was built without
    DETAILED verbosity) is kept as its one-line string under "Layer"."""
    data = json.loads(text)
    layers = data.get("Layers", []) if isinstance(data, dict) else []
    return [layer if isinstance(layer, dict) else {"Layer": str(layer)} for layer in layers]


def _strip(value, drop: tuple[str, ...]):
    if isinstance(value, dict):
        return {k: _strip(v, drop) for k, v in sorted(value.items()) if k not in drop}
    if isinstance(value, list):
        return [_strip(v, drop) for v in value]
    return value


def _first_difference(a: dict, b: dict) -> str:
    for key in sorted(set(a) | set(b)):
        if a.get(key) != b.get(key):
            return f"{key}: {json.dumps(a.get(key))[:120]} vs {json.dumps(b.get(key))[:120]}"
    return "equal"


def precisions(layers: list[dict]) -> dict[str, int]:
    """How many layer outputs are in each format/data type (e.g. 'Half', 'Float')."""
    counts: dict[str, int] = {}
    for layer in layers:
        for out in layer.get("Outputs", []) or []:
            fmt = out.get("Format/Datatype", "?") if isinstance(out, dict) else "?"
            counts[fmt] = counts.get(fmt, 0) + 1
    return dict(sorted(counts.items()))


def compare_layers(base: list[dict], merged: list[dict]) -> dict:
    """Layer structure (types, tensors, precisions, parameters) and tactics, names aside."""
    result: dict = {
        "layers": [len(base), len(merged)],
        "precisions": precisions(merged),
        "detailed": all(len(layer) > 1 for layer in base + merged),
        "structure_identical": True,
        "tactics_identical": True,
        "first_difference": None,
    }
    if len(base) != len(merged):
        result["structure_identical"] = result["tactics_identical"] = False
        result["first_difference"] = f"{len(base)} layers in the base engine, {len(merged)} merged"
    else:
        structure = NAME_KEYS + TACTIC_KEYS
        for i, (a, b) in enumerate(zip(base, merged, strict=True)):
            sa, sb = _strip(a, structure), _strip(b, structure)
            if sa != sb and result["structure_identical"]:
                result["structure_identical"] = False
                result["first_difference"] = f"layer #{i}: {_first_difference(sa, sb)}"
            ta = {k: a.get(k) for k in TACTIC_KEYS}
            tb = {k: b.get(k) for k in TACTIC_KEYS}
            if ta != tb and result["tactics_identical"]:
                result["tactics_identical"] = False
                result.setdefault("first_tactic_difference", f"layer #{i}: {ta} vs {tb}")
    result["verdict"] = "PASS" if result["structure_identical"] else "FAIL"
    return result
