"""What every layer agrees on about the files adaptsr writes and reads (no torch, no onnx).

Artifacts are typed by suffix: `.onnx` is an ONNX model, `.engine`/`.plan`/`.trt` a TensorRT
engine, anything else a PyTorch model spec (built-in name or checkpoint), optionally with an
adapter written `MODEL+ADAPTER.safetensors`. An exported ONNX carries its facts in metadata
(`scale`, `size_requirements`); an engine has no metadata, so `adapt export trt` writes them to a
JSON sidecar beside it (`<name>.engine.json`).
"""

from __future__ import annotations

import json
from pathlib import Path

from adaptsr.errors import UserError

ONNX_SUFFIXES = (".onnx",)
ENGINE_SUFFIXES = (".engine", ".plan", ".trt")
ADAPTER_SUFFIXES = (".safetensors",)
MAX_SIDE = 4096  # largest height/width of a dynamic export or engine profile

# ONNX metadata keys written by the export and read by serve and the engine build
META_SCALE = "scale"
META_SIZE_REQUIREMENTS = "size_requirements"  # JSON: {"min_size": N, "multiple_of": M}
META_PRECISION = "precision"


def artifact_kind(spec: str) -> str:
    """ "onnx", "tensorrt" or "pytorch", by the artifact's suffix."""
    suffix = Path(spec).suffix.lower()
    if suffix in ONNX_SUFFIXES:
        return "onnx"
    if suffix in ENGINE_SUFFIXES:
        return "tensorrt"
    return "pytorch"


def split_adapter(spec: str) -> tuple[str, str | None]:
    """'MODEL+ADAPTER.safetensors' -> (MODEL, ADAPTER); without '+ADAPTER' -> (spec, None)."""
    base, plus, adapter = spec.rpartition("+")
    if plus and base and Path(adapter).suffix.lower() in ADAPTER_SUFFIXES:
        return base, adapter
    return spec, None


def positive_int(value, key: str, where) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise UserError(f"{where}: metadata {key}={value!r} is not an integer") from None
    if number < 1:
        raise UserError(f"{where}: metadata {key}={number} must be positive")
    return number


def size_metadata(meta: dict, where) -> tuple[int, int]:
    """(min_size, multiple_of) from the `size_requirements` JSON that `adapt export` writes."""
    text = meta.get(META_SIZE_REQUIREMENTS)
    if not text:
        return 1, 1
    try:
        req = json.loads(text)
    except (ValueError, RecursionError):
        raise UserError(f"{where}: metadata size_requirements is not JSON: {text[:80]!r}") from None
    if not isinstance(req, dict):
        raise UserError(f"{where}: metadata size_requirements should be an object: {text!r}")
    return (
        positive_int(req.get("min_size", 1), "min_size", where),
        positive_int(req.get("multiple_of", 1), "multiple_of", where),
    )


def engine_info_path(engine_path: str | Path) -> Path:
    """The JSON sidecar that `adapt export trt` writes beside an engine."""
    return Path(engine_path).with_suffix(".engine.json")


def engine_metadata(engine_path: str | Path) -> tuple[int, int]:
    """(min_size, multiple_of) from an engine's sidecar; (1, 1) when there is none."""
    info_path = engine_info_path(engine_path)
    if not info_path.is_file():
        return 1, 1
    try:
        info = json.loads(info_path.read_text())
    except (OSError, ValueError) as e:  # JSONDecodeError, UnicodeDecodeError
        raise UserError(f"cannot read {info_path}: {e}") from e
    except RecursionError:
        raise UserError(f"cannot read {info_path}: nested too deeply") from None
    meta = info.get("metadata") if isinstance(info, dict) else None
    return size_metadata(meta if isinstance(meta, dict) else {}, info_path)
