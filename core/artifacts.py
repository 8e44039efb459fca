"""What every layer agrees on about the files adaptsr writes and reads (no torch, no onnx).

Artifacts are typed by suffix: `.onnx` is an ONNX model, `.engine`/`.plan`/`.trt` a TensorRT
engine, anything else a PyTorch model spec (built-in name or checkpoint), optionally with an
adapter written `MODEL+ADAPTER.safetensors`. An exported ONNX carries its facts in metadata
(`scale`, `size_requirements`); an engine has no metadata, so `adapt export trt` writes them to a
JSON sidecar beside it (`<name>.engine.json`).
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

from adaptsr.core.contracts import EngineSidecar
from adaptsr.core.errors import UserError

ONNX_SUFFIXES = (".onnx",)
ENGINE_SUFFIXES = (".engine", ".plan", ".trt")
ADAPTER_SUFFIXES = (".safetensors",)
MAX_SIDE = 4096  # largest height/width of a dynamic export or engine profile
MAX_BATCH = 64  # largest batch of a dynamic-batch export or engine profile (tiles per call)

# ONNX metadata keys written by the export and read by serve and the engine build
META_SCALE = "scale"
META_SIZE_REQUIREMENTS = "size_requirements"  # JSON: {"min_size": N, "multiple_of": M}
META_PRECISION = "precision"
META_IO_PRECISION = "io_precision"  # the graph's input and output type: fp32, or fp16 (--fp16-io)


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


def model_card_path(output: str | Path) -> Path:
    """The model card `adapt merge` and `adapt export onnx` write beside their output
    (adaptsr.adapt.model_card): NAME.onnx -> NAME.onnx.modelcard.json. The format stays in the
    name, so the merged checkpoint and its ONNX export in one folder keep a card each."""
    output = Path(output)
    return output.with_name(output.name + ".modelcard.json")


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_engine_info(engine_path: str | Path) -> EngineSidecar | None:
    """The engine's sidecar, or None when there is none (an engine from trtexec)."""
    info_path = engine_info_path(engine_path)
    if not info_path.is_file():
        return None
    try:
        info = json.loads(info_path.read_text())
    except (OSError, ValueError) as e:  # JSONDecodeError, UnicodeDecodeError
        raise UserError(f"cannot read {info_path}: {e}") from e
    except RecursionError:
        raise UserError(f"cannot read {info_path}: nested too deeply") from None
    if not isinstance(info, dict):
        raise UserError(f"{info_path} is not an engine sidecar (a JSON object)")
    return EngineSidecar.from_json(info, info_path)


def _version3(version: str) -> tuple[str, ...]:
    """'10.13.0.35' -> ('10', '13', '0'): plans are bound to major.minor.patch."""
    return tuple(str(version).split(".")[:3])


def check_engine_info(
    info: EngineSidecar, engine_path: str | Path, tensorrt_version: str, compute_capability: str
) -> None:
    """Refuse an engine built for another TensorRT or GPU, or one its sidecar no longer
    describes (engine replaced, or the ONNX it came from changed), with the rebuild command."""
    engine_path = Path(engine_path)
    rebuild = info.build_command or "adapt export trt --onnx MODEL.onnx --out ENGINE"
    how = f"rebuild it on this machine: {rebuild} --force"
    built_trt, built_cc = info.tensorrt_version, info.compute_capability
    if _version3(built_trt) != _version3(tensorrt_version):
        raise UserError(
            f"{engine_path} was built with TensorRT {built_trt}, this machine has "
            f"{tensorrt_version} (engines are not portable across versions): {how}"
        )
    if built_cc != compute_capability:
        raise UserError(
            f"{engine_path} was built for compute capability {built_cc} ({info.gpu}), "
            f"this GPU is {compute_capability} (engines are not portable across GPUs): {how}"
        )
    want = info.engine_sha256
    if want and sha256_file(engine_path) != want:
        raise UserError(
            f"{engine_path} is not the engine its sidecar {engine_info_path(engine_path)} "
            f"describes (replaced after the build): {how}"
        )
    onnx_path, onnx_sha = info.onnx, info.onnx_sha256
    if onnx_path and onnx_sha:
        onnx_file = Path(onnx_path)
        if not onnx_file.is_absolute():  # recorded relative to the engine's folder
            onnx_file = engine_path.parent / onnx_file
        if onnx_file.is_file() and sha256_file(onnx_file) != onnx_sha:
            raise UserError(
                f"{engine_path} is stale: {onnx_file} changed after the engine was built: {how}"
            )


def engine_metadata(engine_path: str | Path) -> tuple[int, int]:
    """(min_size, multiple_of) from an engine's sidecar; (1, 1) when there is none."""
    info = read_engine_info(engine_path)
    return size_metadata(info.metadata if info else {}, engine_info_path(engine_path))


def json_safe(v):
    """Strict JSON for reports and sidecars: infinities (identical outputs give an infinite
    PSNR) and NaN become strings."""
    if isinstance(v, dict):
        return {k: json_safe(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [json_safe(x) for x in v]
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    return v
