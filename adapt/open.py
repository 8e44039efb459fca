"""The one way to open a model for inference: a PyTorch model with its adapter, an ONNX file or
a TensorRT engine, each behind serve's `Backend`.

Loaders build, runners only run: `open_model` checks the spec, reads the files and hands back a
ready `Backend`, whose `run` does nothing but inference. Nothing here imports torch at module
level: a deployment install opens ONNX files and engines through it, and the PyTorch side is
imported only when a PyTorch model is asked for.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from adaptsr.core.artifacts import artifact_kind, split_adapter
from adaptsr.core.errors import UserError
from adaptsr.core.lazy import lazy_import
from adaptsr.serve.backends import Backend, OnnxBackend, TensorRTBackend

if TYPE_CHECKING:
    from adaptsr.adapt.backend import TorchBackend

# torch and spandrel: imported only to open a PyTorch model
torch_backend = lazy_import("adaptsr.adapt.backend")
adapter_file = lazy_import("adaptsr.adapt.adapter_file")
models = lazy_import("adaptsr.adapt.models")
merging = lazy_import("adaptsr.adapt.merge_adapter")

KINDS = ("pytorch", "onnx", "tensorrt")  # core.artifacts.artifact_kind's answers
ONE_OF = "give exactly one of --model, --onnx, --engine"
MERGED = "--adapter needs --model (ONNX files and engines hold merged weights)"


@dataclass(frozen=True)
class ModelSpec:
    """What to open: `path` is a built-in name or checkpoint (kind "pytorch", optionally with an
    adapter file), an ONNX file ("onnx") or a TensorRT engine ("tensorrt")."""

    path: str
    kind: str = "pytorch"
    adapter: str | None = None
    strength: float = 1.0  # the adapter's weight (0: the base; 1: as trained)

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"unknown model kind {self.kind!r} (one of {', '.join(KINDS)})")
        if self.adapter and self.kind != "pytorch":
            raise UserError(MERGED)
        if self.strength != 1.0 and not self.adapter:
            raise UserError("--strength needs --adapter (the weight of the adapter's update)")
        if not math.isfinite(self.strength):
            raise UserError(f"--strength must be a finite number, got {self.strength}")

    @classmethod
    def parse(cls, spec: str, adapter: str | None = None) -> ModelSpec:
        """A spec typed by its suffix (core.artifacts); `MODEL+ADAPTER.safetensors` names an
        adapter in the spec itself, which `adapter` may not contradict."""
        kind = artifact_kind(spec)
        if kind != "pytorch":
            return cls(spec, kind, adapter)
        path, inline = split_adapter(spec)
        if inline and adapter and inline != adapter:
            raise UserError(f"{spec} names the adapter {inline}, --adapter another: give one")
        return cls(path, kind, adapter or inline)

    @classmethod
    def from_options(
        cls,
        model: str | None = None,
        adapter: str | None = None,
        onnx: str | None = None,
        engine: str | None = None,
        strength: float | None = None,
    ) -> ModelSpec:
        """Exactly one of --model (with an optional --adapter), --onnx, --engine."""
        given = [f for f, v in (("--model", model), ("--onnx", onnx), ("--engine", engine)) if v]
        if len(given) != 1:
            raise UserError(ONE_OF + (f" (got {' and '.join(given)})" if given else ""))
        if adapter and not model:
            raise UserError(MERGED)
        if onnx:
            return cls(str(onnx), "onnx")
        if engine:
            return cls(str(engine), "tensorrt")
        weight = 1.0 if strength is None else float(strength)
        if strength is not None and not adapter:
            raise UserError("--strength needs --adapter (the weight of the adapter's update)")
        return cls(str(model), "pytorch", str(adapter) if adapter else None, weight)

    def base(self) -> ModelSpec:
        """The same model without its adapter."""
        return replace(self, adapter=None, strength=1.0)


def open_model(
    spec: str | ModelSpec,
    adapter: str | None = None,
    *,
    device: str = "auto",
    provider: str = "auto",
) -> Backend:
    """A ready backend for `spec`: ONNX Runtime for an ONNX file (on `provider`), TensorRT for an
    engine, PyTorch (on `device`) for a built-in name or checkpoint with its optional adapter."""
    if not isinstance(spec, ModelSpec):
        spec = ModelSpec.parse(str(spec), adapter)
    elif adapter:
        spec = ModelSpec(spec.path, spec.kind, adapter, spec.strength)
    if spec.kind == "onnx":
        return OnnxBackend(spec.path, provider=provider)
    if spec.kind == "tensorrt":
        return TensorRTBackend(spec.path)
    return open_torch(spec.path, spec.adapter, device=device, strength=spec.strength)


def open_torch(
    path: str, adapter: str | None = None, device: str = "auto", strength: float = 1.0
) -> TorchBackend:
    """A PyTorch model from `load_model` with its adapter applied, as a backend on `device`;
    at a strength other than 1 the adapter's weighted update is folded into the weights (as
    `adapt merge --strength` does)."""
    model = models.load_model(path)
    if adapter and strength == 1.0:
        adapter_file.AdapterFile.read(adapter).apply(model)
    elif adapter:
        merging.blend_adapters(model, [(adapter_file.AdapterFile.read(adapter), strength)])
    name = f"{path}+{adapter}" if adapter else path
    if adapter and strength != 1.0:
        name += f"@{strength:g}"
    return torch_backend.TorchBackend(model, device=device, name=name)
