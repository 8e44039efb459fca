"""The command line picks the backend: ONNX Runtime and TensorRT from serve (no torch), PyTorch
from adapt, imported only when a PyTorch model is asked for."""

from __future__ import annotations

from adaptsr.core.artifacts import artifact_kind, split_adapter
from adaptsr.core.errors import UserError
from adaptsr.serve.backends import Backend, OnnxBackend, TensorRTBackend


def _torch_backend(spec: str, adapter: str | None, device: str) -> Backend:
    from adaptsr.adapt.backend import TorchBackend

    return TorchBackend.load(spec, adapter=adapter, device=device)


def open_artifact(spec: str, device: str = "auto", provider: str = "auto") -> Backend:
    """A backend for an artifact typed by its suffix (`adaptsr.core.artifacts`)."""
    kind = artifact_kind(spec)
    if kind == "onnx":
        return OnnxBackend(spec, provider=provider)
    if kind == "tensorrt":
        return TensorRTBackend(spec)
    model, adapter = split_adapter(spec)
    return _torch_backend(model, adapter, device)


def open_backend(
    model: str | None = None,
    adapter: str | None = None,
    onnx: str | None = None,
    engine: str | None = None,
    device: str = "auto",
    provider: str = "auto",
) -> Backend:
    """The backend for exactly one of --model (with optional --adapter), --onnx, --engine."""
    given = [flag for flag, v in (("--model", model), ("--onnx", onnx), ("--engine", engine)) if v]
    if len(given) != 1:
        raise UserError(
            "give exactly one of --model, --onnx, --engine"
            + (f" (got {' and '.join(given)})" if given else "")
        )
    if adapter and not model:
        raise UserError("--adapter needs --model (ONNX files and engines hold merged weights)")
    if onnx:
        return OnnxBackend(onnx, provider=provider)
    if engine:
        return TensorRTBackend(engine)
    return _torch_backend(model, adapter, device)
