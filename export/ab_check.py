"""`adapt bench --base A --candidate B`: the zero-overhead check between two artifacts of one
backend. Two ONNX graphs are compared node by node (weights aside), two engines layer by layer
(IEngineInspector); then A and B run alternately on one input (serve.backend_bench). Torch-free.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

from adaptsr.core.artifacts import artifact_kind
from adaptsr.core.contracts import StructureProof
from adaptsr.core.errors import UserError
from adaptsr.core.fileio import check_readable
from adaptsr.core.lazy import lazy_import
from adaptsr.export.structure import compare_structure
from adaptsr.serve.backend_bench import compare_backends
from adaptsr.serve.backends import Backend
from adaptsr.serve.timing import Comparison, latency_line

onnx = lazy_import("onnx")
trt_inspect = lazy_import("adaptsr.export.trt_inspect")  # TensorRT


@dataclass(frozen=True)
class ABCheck:
    """The graph (or engine layers) and the alternating latency of base against candidate."""

    base: str
    candidate: str
    kind: str
    device: str
    size: tuple[int, int]
    latency: Comparison
    structure: StructureProof | None  # two ONNX graphs
    layers: dict | None  # two engines: export.trt_inspect.compare_layers

    @property
    def passed(self) -> bool:
        graph_failed = self.structure is not None and not self.structure.identical
        layers_failed = self.layers is not None and not self.layers["structure_identical"]
        return not (graph_failed or layers_failed) and self.latency.passed

    def to_json(self) -> dict:
        return {
            "base": self.base,
            "candidate": self.candidate,
            "kind": self.kind,
            "device": self.device,
            "size": list(self.size),
            **self.latency.to_dict(),
            "structure": asdict(self.structure) if self.structure else None,
            **({"layers": self.layers} if self.layers is not None else {}),
        }

    def graph_line(self) -> str:
        if self.layers is not None:
            if self.layers["structure_identical"]:
                return f"engine layers identical ({self.layers['layers'][0]} layers): PASS"
            return f"engine layers differ, {self.layers['first_difference']}: FAIL"
        s = self.structure
        if s is None:
            return f"not compared ({self.kind} artifacts hold no ONNX graph)"
        if s.identical:
            return f"identical ({s.nodes[0]} nodes, {s.params[0]:,} parameters): PASS"
        return f"{s.first_difference}: FAIL"

    def text(self) -> str:
        """What was proven (the graph or engine layers) and what was only measured (latency),
        labelled as serve.timing's rule says."""
        r = self.latency
        proven = self.structure is not None or self.layers is not None
        timed = "timed: GPU compute time (CUDA events around execute_async_v3)\n"
        return (
            (timed if self.kind == "tensorrt" else "")
            + f"{self.kind} on {self.device}, {self.size[0]}x{self.size[1]}, "
            f"{r.rounds} alternating rounds\n"
            f"base       {r.base.median_ms:10.2f} ms median  {self.base}\n"
            f"candidate  {r.candidate.median_ms:10.2f} ms median  {self.candidate}\n"
            f"graph, {'proven' if proven else 'not proven'}: {self.graph_line()}\n"
            f"{latency_line(r)}"
        )


def check_overhead(
    base: str,
    candidate: str,
    open_backend: Callable[[str], Backend],
    size: tuple[int, int],
    rounds: int = 30,
    max_rounds: int | None = 200,
    warmup: int = 2,
) -> ABCheck:
    """Compare the artifacts' structure, then their latency (artifacts opened by the loader)."""
    kinds = artifact_kind(base), artifact_kind(candidate)
    if kinds[0] != kinds[1]:  # fail before loading anything
        raise UserError(
            f"--base is a {kinds[0]} artifact but --candidate is {kinds[1]}: "
            "compare two artifacts of the same backend"
        )
    structure = _onnx_structure(base, candidate) if kinds[0] == "onnx" else None
    a, b = open_backend(base), open_backend(candidate)
    layers = None
    if a.kind == "tensorrt":  # engines: their IEngineInspector layers instead of a graph
        a_layers, b_layers = (
            trt_inspect.engine_layers(a.engine),
            trt_inspect.engine_layers(b.engine),
        )
        layers = trt_inspect.compare_layers(a_layers, b_layers)
    latency = compare_backends(a, b, size, rounds, warmup, max_rounds=max_rounds)
    return ABCheck(base, candidate, a.kind, a.device, size, latency, structure, layers)


def _onnx_structure(base: str, candidate: str) -> StructureProof:
    graphs = []
    for path in (candidate, base):
        readable = check_readable(path, "ONNX file")
        try:
            graphs.append(onnx.load(str(readable), load_external_data=False))
        except Exception as e:  # protobuf raises its own DecodeError
            raise UserError(f"cannot read {path}: not an ONNX model ({type(e).__name__})") from e
    return StructureProof(**compare_structure(*graphs))
