"""The records one layer writes and another reads, typed (no torch, no onnx).

Each is a frozen dataclass whose field names are the keys of its file, so this module is the one
place a key is spelled: `to_json()` gives the JSON object written to disk, `from_json(data,
where)` reads one back and refuses, in one line naming the file and the key, an unknown version,
a missing key or a value of the wrong type.

- AdapterMeta: the metadata of an adapter file (adaptsr.core.adapter_meta, re-exported here).
- ExportReport: `<model>.report.json`, written by `adapt export onnx`.
- EngineSidecar: `<engine>.engine.json`, written by `adapt export trt` (build and refit) and read
  by the Python backend and the native runner (serve/native/src/sidecar.cpp).
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

# the adapter file's record lives in its own module; its names stay importable from here
from adaptsr.core.adapter_meta import ADAPTER_FORMAT, SCALING_RULE, AdapterMeta  # noqa: F401
from adaptsr.core.errors import UserError

EXPORT_REPORT_VERSION = 1
ENGINE_SIDECAR_VERSION = 1
_NON_FINITE = {"inf": math.inf, "-inf": -math.inf, "nan": math.nan}


# ---------------------------------------------------------------------------------------------
# reading and writing any of the records below, by their field types


def _encode(value: Any) -> Any:
    """Strict JSON: dataclasses become objects in field order; infinities and NaN become
    strings (identical outputs have an infinite PSNR)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _encode(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {k: _encode(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_encode(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


class _Mismatch(Exception):
    """A value of the wrong type; the reader turns it into one UserError line."""


def _type_name(tp: Any) -> str:
    if tp is type(None):
        return "null"
    if isinstance(tp, type):
        return {"str": "text", "int": "a whole number", "float": "a number"}.get(
            tp.__name__, "an object" if dataclasses.is_dataclass(tp) else tp.__name__
        )
    return str(tp).replace("typing.", "")


def _decode(tp: Any, value: Any, where: str, key: str) -> Any:
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        options = typing.get_args(tp)
        for option in options:
            try:
                return _decode(option, value, where, key)
            except _Mismatch:
                continue
        raise _Mismatch(" or ".join(_type_name(o) for o in options))
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise _Mismatch("an object")
        return _decode_fields(tp, value, where, key + ".")
    if origin is list or origin is tuple:
        if not isinstance(value, list):
            raise _Mismatch("a list")
        item = typing.get_args(tp)[0]
        items = [_read_key(item, v, where, f"{key}[{i}]") for i, v in enumerate(value)]
        return items if origin is list else tuple(items)
    if origin is dict:
        if not isinstance(value, dict):
            raise _Mismatch("an object")
        item = typing.get_args(tp)[1]
        return {k: _read_key(item, v, where, f"{key}.{k}") for k, v in value.items()}
    if tp is type(None):
        if value is not None:
            raise _Mismatch("null")
        return None
    if tp is float:
        if isinstance(value, str) and value in _NON_FINITE:
            return _NON_FINITE[value]
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _Mismatch("a number")
        return float(value)
    if tp is int and isinstance(value, bool):
        raise _Mismatch("a whole number")
    if not isinstance(value, tp):
        raise _Mismatch(_type_name(tp))
    return value


def _read_key(tp: Any, value: Any, where: str, key: str) -> Any:
    try:
        return _decode(tp, value, where, key)
    except _Mismatch as e:
        raise UserError(
            f"{where}: key {key!r} should be {e}, got {type(value).__name__} {_short(value)}"
        ) from None


def _short(value: Any) -> str:
    text = json.dumps(value) if isinstance(value, (str, int, float, bool, type(None))) else "…"
    return text if len(text) <= 40 else text[:37] + "..."


def _decode_fields(cls: Any, data: dict, where: str, prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    values = {}
    for f in dataclasses.fields(cls):
        if f.name not in data:
            raise UserError(f"{where}: key {prefix + f.name!r} is missing")
        values[f.name] = _read_key(hints[f.name], data[f.name], where, prefix + f.name)
    return cls(**values)


def record(cls: Any, data: Any, where: str | Path) -> Any:
    """One of the records below (a part of a report) from a plain result, checked as
    `from_json` checks a file."""
    if not isinstance(data, dict):
        raise UserError(f"{where}: expected an object, got {type(data).__name__}")
    return _decode_fields(cls, data, str(where))


def _versioned(cls: Any, data: Any, where: str | Path, version: int, remedy: str) -> Any:
    where = str(where)
    if not isinstance(data, dict):
        raise UserError(f"{where}: expected a JSON object, got {type(data).__name__}")
    found = data.get("version")
    if found != version:
        what = "no key 'version'" if "version" not in data else f"version {_short(found)}"
        raise UserError(f"{where}: {what}; this adaptsr reads version {version} ({remedy})")
    return _decode_fields(cls, data, where)


# ---------------------------------------------------------------------------------------------
# the export report


@dataclass(frozen=True)
class ParityCheck:
    size: list[int]  # [height, width]
    batch: int
    input: str  # "random" or "image"
    max_abs: float
    mean_abs: float


@dataclass(frozen=True)
class Parity:
    """ONNX Runtime against the PyTorch model, at every checked size."""

    runtime: str
    tolerance: float
    max_abs: float
    mean_abs: float
    checks: list[ParityCheck]
    passed: bool


@dataclass(frozen=True)
class PsnrCheck:
    size: list[int]
    psnr_db: float
    image: str = "synthetic"  # or the --check-images file the crop came from


@dataclass(frozen=True)
class ArithmeticCheck:
    size: list[int]
    psnr_db: float
    overflow: str | None  # the first node that overflows in fp16
    image: str = "synthetic"


@dataclass(frozen=True)
class Fp16Arithmetic:
    runtime: str
    min_psnr_db: float
    threshold_db: float
    first_overflow: str | None
    checks: list[ArithmeticCheck]
    passed: bool


@dataclass(frozen=True)
class Fp16Proof:
    """The fp16 (or bf16) conversion (islands kept in fp32) and its output against the fp32
    graph's."""

    fp32_islands: dict[str, int]  # op type -> nodes kept in fp32
    fp16_nodes: int
    casts_inserted: int
    clipped_weights: int
    runtime: str
    note: str
    min_psnr_db: float
    threshold_db: float
    checks: list[PsnrCheck]
    arithmetic: Fp16Arithmetic
    passed: bool
    precision: str = "fp16"  # or bf16
    io_precision: str = "fp32"  # the graph's inputs and outputs: fp32, or fp16 (--fp16-io)
    check_images: list[str] = dataclasses.field(default_factory=list)  # --check-images files


@dataclass(frozen=True)
class StructureProof:
    """The merged graph against the base graph, node for node."""

    identical: bool
    verdict: str
    nodes: list[int]  # [merged, base]
    params: list[int]
    first_difference: str | None
    differences: list[str]


@dataclass(frozen=True)
class Timing:
    median_ms: float
    p90_ms: float
    mean_ms: float
    runs: int


@dataclass(frozen=True)
class LatencyProof:
    """Merged against base, alternating rounds (adaptsr.serve.timing's equivalence rule)."""

    ratio: float
    ci_low: float
    ci_high: float
    confidence: float
    base: Timing
    candidate: Timing
    rounds: int
    tolerance: float
    verdict: str  # PASS, FAIL or INCONCLUSIVE
    rounds_needed: int | None
    passed: bool
    input_shape: list[int]
    runtime: str


@dataclass(frozen=True)
class ZeroOverhead:
    structure: StructureProof
    latency: LatencyProof


@dataclass(frozen=True)
class ExportShape:
    dynamic: bool
    dynamic_batch: bool
    tile: list[int] | None
    opset: int
    traced_size: list[int]
    checked_sizes: list[list[int]]


@dataclass(frozen=True)
class ExportReport:
    """`<model>.report.json`: what `adapt export onnx` checked before it wrote the model."""

    onnx: str
    architecture: str
    parity: Parity
    rewrites: list[str]
    fp16: Fp16Proof | None  # an fp16 export only
    zero_overhead: ZeroOverhead | None  # a merged export only
    metadata: dict[str, str]  # the ONNX metadata written
    spec: ExportShape
    version: int = EXPORT_REPORT_VERSION

    def to_json(self) -> dict:
        return _encode(self)

    @classmethod
    def from_json(cls, data: Any, where: str | Path) -> ExportReport:
        return _versioned(
            cls, data, where, EXPORT_REPORT_VERSION, "export the model again with this adaptsr"
        )


# ---------------------------------------------------------------------------------------------
# the engine sidecar


@dataclass(frozen=True)
class EngineProfile:
    """The optimization profile of the engine's image input: NCHW min/opt/max."""

    name: str
    min: tuple[int, ...]
    opt: tuple[int, ...]
    max: tuple[int, ...]


@dataclass(frozen=True)
class VerifyCheck:
    profile: str  # "min", "opt", "max" or joined ("min/opt") for one shape
    shape: list[int]
    psnr_db: float
    max_abs: float
    mean_abs: float


@dataclass(frozen=True)
class EngineVerify:
    """The engine against ONNX Runtime fp32 at its profile's shapes."""

    reference: str
    runtime: str
    input: str
    threshold_db: float
    min_psnr_db: float
    max_abs: float
    checks: list[VerifyCheck]
    passed: bool


@dataclass(frozen=True)
class EngineZeroOverhead:
    """The merged engine's layers against the base engine's (export.trt_inspect)."""

    layers: list[int]  # [base, merged]
    precisions: dict[str, int]
    detailed: bool  # the engines carry layer details (tactics comparable)
    structure_identical: bool
    tactics_identical: bool
    first_difference: str | None
    first_tactic_difference: str | None
    verdict: str
    base_onnx: str
    base_build_seconds: float


# Facts of the build that a refit copies from the engine it refits.
BUILD_SETTINGS = (
    "onnx_input",
    "tensorrt_version",
    "gpu",
    "compute_capability",
    "precision",
    "onnx_precision",
    "route",
    "strongly_typed",
    "fp32_constrained_layers",
    "refittable",
    "profile",
    "build_seconds",
)


@dataclass(frozen=True)
class EngineSidecar:
    """`<engine>.engine.json`: an engine has no metadata of its own, so what it was built from,
    for which TensorRT and GPU, and how it was checked live here."""

    engine: str  # the engine's file name
    onnx: str  # the ONNX it came from, relative to the engine's folder
    onnx_sha256: str
    onnx_input: list[int | str]  # the ONNX input's NCHW dims (names for dynamic ones)
    tensorrt_version: str
    gpu: str  # the GPU's name
    compute_capability: str  # "8.7": the only spelling (the native runner reads this one)
    precision: str  # the engine's: fp16 or fp32
    onnx_precision: str
    route: str  # strongly-typed or fp16-flag
    strongly_typed: bool
    fp32_constrained_layers: int
    refittable: bool
    profile: EngineProfile
    adapter_fingerprint: str | None
    base_fingerprint: str | None
    build_seconds: float
    built_at: str  # UTC, ISO 8601
    build_command: str  # how to rebuild it (the refusals quote it)
    metadata: dict[str, str]  # the ONNX's metadata (scale, size requirements, ...)
    engine_sha256: str = ""  # filled in when the engine is written
    verify: EngineVerify | None = None  # None: built with --no-verify
    zero_overhead: EngineZeroOverhead | None = None  # built with --base-onnx
    refit_from: str | None = None  # the refitted engine, relative to this one's folder
    refit_seconds: float | None = None
    version: int = ENGINE_SIDECAR_VERSION

    def build_settings(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in BUILD_SETTINGS}

    def to_json(self) -> dict:
        data = _encode(self)
        if self.verify is None:  # the key users have always seen for a skipped verification
            data["verify"] = {"skipped": "--no-verify"}
        return data

    @classmethod
    def from_json(cls, data: Any, where: str | Path) -> EngineSidecar:
        if isinstance(data, dict) and data.get("verify") == {"skipped": "--no-verify"}:
            data = {**data, "verify": None}
        # sidecars of earlier releases spelled keys several ways: the engine is rebuilt
        return _versioned(
            cls, data, where, ENGINE_SIDECAR_VERSION, "rebuild the engine with `adapt export trt`"
        )
