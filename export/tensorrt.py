"""TensorRT engines from exported ONNX files (TensorRT 10 Python API; no torch needed).

The network is created strongly typed: every layer runs in the type the ONNX graph gives it, so
an fp16 engine comes from the fp16 ONNX of `adapt export onnx --fp16` (with its fp32 islands),
not from the builder's FP16 flag (deprecated in TensorRT 10.12). Dynamic height/width need an
optimization profile (min/opt/max), validated here against the size requirements that the export
stored in the ONNX metadata. TensorRT is imported only when an engine is built, so everything
before that (argument checks, profile shapes) works and is tested without it.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path

from adaptsr.artifacts import (
    ENGINE_SUFFIXES,
    MAX_SIDE,
    META_PRECISION,
    engine_info_path,
    size_metadata,
)
from adaptsr.errors import UserError
from adaptsr.fileio import atomic_output, check_readable, check_writable
from adaptsr.serve.backends import import_tensorrt


@dataclass
class OnnxInput:
    name: str
    dims: list[int | str]  # ints for static dimensions, names for dynamic ones
    metadata: dict[str, str]

    @property
    def requirements(self) -> tuple[int, int]:
        """(min_size, multiple_of) stored by the export; (1, 1) when absent."""
        return size_metadata(self.metadata, f"ONNX input {self.name}")


@dataclass
class Profile:
    name: str
    min: tuple[int, ...]
    opt: tuple[int, ...]
    max: tuple[int, ...]

    def to_dict(self) -> dict:
        return asdict(self)


def parse_hw(text: str | None) -> tuple[int, int] | None:
    """'256x320' (height x width) -> (256, 320)."""
    if text is None:
        return None
    m = re.fullmatch(r"\s*(\d+)\s*[xX,]\s*(\d+)\s*", text)
    if not m:
        raise UserError(f"shape {text!r} must look like HEIGHTxWIDTH, e.g. 256x256")
    return int(m.group(1)), int(m.group(2))


def read_onnx_input(path: str | Path) -> OnnxInput:
    """Name, dimensions and metadata of the single image input, without loading weights."""
    import onnx

    path = check_readable(path, "ONNX file")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # protobuf raises its own DecodeError
        raise UserError(f"cannot read {path}: not an ONNX model ({type(e).__name__})") from e
    inits = {t.name for t in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in inits]
    if len(inputs) != 1:
        raise UserError(f"{path} has {len(inputs)} inputs; an image model has exactly one")
    dims: list[int | str] = []
    for d in inputs[0].type.tensor_type.shape.dim:
        dims.append(d.dim_value if d.HasField("dim_value") else (d.dim_param or "?"))
    if len(dims) != 4:
        raise UserError(f"{path}: input {inputs[0].name} has rank {len(dims)}, expected NCHW")
    meta = {p.key: p.value for p in model.metadata_props}
    return OnnxInput(inputs[0].name, dims, meta)


def profile_shapes(
    inp: OnnxInput,
    min_hw: tuple[int, int] | None = None,
    opt_hw: tuple[int, int] | None = None,
    max_hw: tuple[int, int] | None = None,
) -> Profile:
    """The optimization profile for the image input, validated against the model."""
    n, c, h, w = inp.dims
    if not isinstance(c, int):
        raise UserError(f"input {inp.name} has a dynamic channel count; export it with 3 channels")
    batch = n if isinstance(n, int) and n > 0 else 1
    given = [s for s in (min_hw, opt_hw, max_hw) if s is not None]
    if isinstance(h, int) and isinstance(w, int):
        if any(s != (h, w) for s in given):
            raise UserError(
                f"this ONNX has a static {h}x{w} input: drop the shape options or give {h}x{w}"
            )
        shape = (batch, c, h, w)
        return Profile(inp.name, shape, shape, shape)
    if isinstance(h, int) or isinstance(w, int):
        # serve cannot tile for an engine that fixes one side only: refuse to build one
        raise UserError(
            f"this ONNX input has one static and one dynamic side ({h} x {w}): export it with "
            "--dynamic or --tile H W"
        )
    if len(given) != 3:
        raise UserError(
            "this ONNX has dynamic height/width: give --min-shape, --opt-shape and --max-shape "
            "(HEIGHTxWIDTH each)"
        )
    fixed = {2: h if isinstance(h, int) else None, 3: w if isinstance(w, int) else None}
    min_size, multiple = inp.requirements
    for label, (sh, sw) in zip(("min", "opt", "max"), given, strict=True):
        for axis, side, v in ((2, "height", sh), (3, "width", sw)):
            if fixed[axis] is not None and v != fixed[axis]:
                raise UserError(f"{label} {side} must be the static {fixed[axis]}, got {v}")
            if v < min_size or v % multiple or v > MAX_SIDE:
                rule = f"at least {min_size}, at most {MAX_SIDE}"
                if multiple > 1:
                    rule += f", a multiple of {multiple}"
                raise UserError(f"{label} {side} {v} is not allowed for this model: {rule}")
    lo, mid, hi = given
    for axis in (0, 1):
        if not lo[axis] <= mid[axis] <= hi[axis]:
            raise UserError(f"shapes must satisfy min <= opt <= max: {lo}, {mid}, {hi}")
    return Profile(inp.name, (batch, c, *lo), (batch, c, *mid), (batch, c, *hi))


def build_engine(
    onnx_path: str | Path,
    out: str | Path,
    *,
    fp16: bool = False,
    min_hw: tuple[int, int] | None = None,
    opt_hw: tuple[int, int] | None = None,
    max_hw: tuple[int, int] | None = None,
    workspace_gib: float = 4.0,
    timing_cache: str | Path | None = None,
    force: bool = False,
) -> dict:
    """Build and write a serialized engine (plus `<out>.engine.json`); returns the info dict."""
    out = Path(out)
    if out.suffix.lower() not in ENGINE_SUFFIXES:  # bench and upscale type artifacts by suffix
        raise UserError(f"{out}: name the engine {' or '.join(ENGINE_SUFFIXES)}")
    check_writable(out, force)
    check_writable(engine_info_path(out), force)
    if workspace_gib <= 0:
        raise UserError(f"workspace must be positive, got {workspace_gib} GiB")
    inp = read_onnx_input(onnx_path)
    precision = inp.metadata.get(META_PRECISION, "fp32")
    if fp16 and precision != "fp16":
        raise UserError(
            f"{onnx_path} is a {precision} graph; a strongly typed fp16 engine needs the fp16 ONNX "
            "(adapt export onnx --fp16)"
        )
    profile = profile_shapes(inp, min_hw, opt_hw, max_hw)
    trt = import_tensorrt()

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        first = errors[0].strip().splitlines()[0] if errors else "unknown error"
        raise UserError(f"TensorRT cannot parse {onnx_path}: {first}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gib * (1 << 30)))
    trt_profile = builder.create_optimization_profile()
    trt_profile.set_shape(profile.name, profile.min, profile.opt, profile.max)
    config.add_optimization_profile(trt_profile)
    cache_path = Path(timing_cache) if timing_cache else None
    if cache_path is not None:
        data = cache_path.read_bytes() if cache_path.exists() else b""
        try:
            cache = config.create_timing_cache(data)
        except Exception as e:  # TensorRT raises untyped errors for damaged caches
            raise UserError(f"cannot read timing cache {cache_path}: {e}".splitlines()[0]) from e
        if not config.set_timing_cache(cache, False):  # False: made by another TensorRT/GPU
            raise UserError(
                f"timing cache {cache_path} does not fit this TensorRT version or GPU: "
                "delete it or name another file"
            )
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise UserError("TensorRT could not build the engine (its log above says why)")
    with atomic_output(out, force) as tmp:
        tmp.write_bytes(bytes(serialized))
    if cache_path is not None:
        with atomic_output(cache_path, force=True) as tmp:
            tmp.write_bytes(bytes(config.get_timing_cache().serialize()))
    info = {
        "engine": str(out),
        "onnx": str(onnx_path),
        "tensorrt_version": str(trt.__version__),
        "strongly_typed": True,
        "precision": precision,
        "profile": profile.to_dict(),
        "metadata": inp.metadata,
    }
    with atomic_output(engine_info_path(out), force) as tmp:
        tmp.write_text(json.dumps(info, indent=2) + "\n")
    return info
