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
import os
import re
import shlex
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from adaptsr.core.artifacts import (
    ENGINE_SUFFIXES,
    MAX_BATCH,
    MAX_SIDE,
    META_PRECISION,
    check_engine_info,
    engine_info_path,
    json_safe,
    read_engine_info,
    sha256_file,
    size_metadata,
)
from adaptsr.core.errors import UserError
from adaptsr.core.fileio import atomic_output, check_readable, check_writable
from adaptsr.serve.backends import import_tensorrt

if TYPE_CHECKING:  # the real API's types (tensorrt-stubs); TensorRT itself loads lazily
    import tensorrt as trt


@dataclass
class OnnxInput:
    name: str
    dims: list[int | str]  # ints for static dimensions, names for dynamic ones
    metadata: dict[str, str]

    @property
    def requirements(self) -> tuple[int, int]:
        """(min_size, multiple_of) stored by the export; (1, 1) when absent."""
        return size_metadata(self.metadata, f"ONNX input {self.name}")


# Precision routes (docs/export.md has the table by TensorRT version)
STRONGLY_TYPED = "strongly-typed"  # every layer in the type the ONNX gives it (10.x and 11.x)
FP16_FLAG = "fp16-flag"  # fp32 ONNX + BuilderFlag.FP16, fp32 constraints on sensitive layers
ROUTES = (STRONGLY_TYPED, FP16_FLAG)
DEFAULT_ROUTE = STRONGLY_TYPED
# Layers the fp16-flag route pins to fp32: normalisations and softmax overflow or lose their
# mean/variance in fp16 (TensorRT itself warns about LayerNorm in fp16), reductions feed them.
FP32_LAYER_TYPES = ("NORMALIZATION", "SOFTMAX", "REDUCE")


@dataclass
class Profile:
    name: str
    min: tuple[int, ...]
    opt: tuple[int, ...]
    max: tuple[int, ...]

    def to_dict(self) -> dict:
        return asdict(self)


def parse_batch(values) -> tuple[int, int, int] | None:
    """(min, opt, max) batch of a profile from `--batch-range MIN OPT MAX`."""
    if values is None:
        return None
    lo, mid, hi = (int(v) for v in values)
    if not 1 <= lo <= mid <= hi <= MAX_BATCH:
        raise UserError(
            f"batch range {lo} {mid} {hi} must satisfy 1 <= min <= opt <= max <= {MAX_BATCH}"
        )
    return lo, mid, hi


def check_route(route: str, fp16: bool, precision: str, onnx_path) -> None:
    """Checks that need no TensorRT: the ONNX fits the precision route."""
    if route not in ROUTES:
        raise UserError(f"unknown precision route {route!r} (choose {' or '.join(ROUTES)})")
    if route == STRONGLY_TYPED and fp16 and precision != "fp16":
        raise UserError(
            f"{onnx_path} is a {precision} graph; a strongly typed fp16 engine needs the fp16 ONNX "
            f"(adapt export onnx --fp16), or on TensorRT 10 --route {FP16_FLAG}"
        )
    if route == FP16_FLAG and precision != "fp32":
        raise UserError(
            f"--route {FP16_FLAG} builds fp16 from the fp32 ONNX; {onnx_path} is {precision} "
            f"(use --route {STRONGLY_TYPED} for an fp16 ONNX)"
        )


def check_route_version(route: str, tensorrt_version: str) -> None:
    """TensorRT 11 removed the FP16 builder flag (weakly typed networks are gone)."""
    major = int(str(tensorrt_version).split(".")[0])
    if route == FP16_FLAG and major >= 11:
        raise UserError(
            f"TensorRT {tensorrt_version} has no FP16 builder flag: build the fp16 ONNX "
            f"(adapt export onnx --fp16) with --route {STRONGLY_TYPED}"
        )


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
    batch: tuple[int, int, int] | None = None,
) -> Profile:
    """The optimization profile for the image input, validated against the model; `batch` is
    the (min, opt, max) batch for an ONNX with a dynamic batch dimension."""
    n, c, h, w = inp.dims
    if not isinstance(c, int):
        raise UserError(f"input {inp.name} has a dynamic channel count; export it with 3 channels")
    if isinstance(n, int) and n > 0:
        if batch is not None and batch != (n, n, n):
            raise UserError(
                f"this ONNX has a static batch of {n}: drop --batch-range or export with "
                "--dynamic-batch"
            )
        batches = (n, n, n)
    else:
        batches = batch or (1, 1, 1)
    given = [s for s in (min_hw, opt_hw, max_hw) if s is not None]
    if isinstance(h, int) and isinstance(w, int):
        if any(s != (h, w) for s in given):
            raise UserError(
                f"this ONNX has a static {h}x{w} input: drop the shape options or give {h}x{w}"
            )
        return Profile(inp.name, *((b, c, h, w) for b in batches))
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
    return Profile(inp.name, (batches[0], c, *lo), (batches[1], c, *mid), (batches[2], c, *hi))


def gpu_info() -> dict:
    """The GPU the engine is built for (name, compute capability)."""
    from adaptsr.serve import cudart

    return cudart.device_info()


def resolve_reference(onnx_path, precision: str, inp: OnnxInput, reference) -> Path:
    """The fp32 ONNX that verification runs in ONNX Runtime (checked before any build)."""
    if reference is None:
        if precision == "fp32":
            return Path(onnx_path)
        raise UserError(
            f"verification compares the engine with the fp32 ONNX of the model: {onnx_path} is "
            f"{precision}, so give --reference MODEL.onnx (its fp32 export) or --no-verify"
        )
    ref = read_onnx_input(reference)
    ref_precision = ref.metadata.get(META_PRECISION, "fp32")
    if ref_precision != "fp32":
        raise UserError(f"--reference {reference} is {ref_precision}; it must be the fp32 ONNX")
    if [d if isinstance(d, int) else "?" for d in ref.dims] != [
        d if isinstance(d, int) else "?" for d in inp.dims
    ]:
        raise UserError(
            f"--reference {reference} has input {ref.dims}, {onnx_path} has {inp.dims}: "
            "not exports of one model"
        )
    return Path(reference)


def _relative(path, engine: Path) -> str:
    """`path` as the sidecar records it: relative to the engine's folder."""
    return os.path.relpath(Path(path).resolve(), engine.resolve().parent)


def _command(*parts) -> str:
    return " ".join(shlex.quote(str(p)) for p in parts if p is not None and p != "")


def _hw(shape: tuple[int, ...]) -> str:
    return f"{shape[2]}x{shape[3]}"


class _Builder:
    """One logger, runtime and timing cache for the builds of one command."""

    def __init__(self, workspace_gib: float, timing_cache: str | Path | None):
        import tensorrt as trt

        self.logger = trt.Logger(trt.Logger.WARNING)
        self.workspace = int(workspace_gib * (1 << 30))
        self.cache_path = Path(timing_cache) if timing_cache else None
        self.cache: trt.ITimingCache | None = None

    def _attach_cache(self, config) -> None:
        if self.cache is None:  # the first build reads the file (or starts an empty cache)
            path = self.cache_path
            data = path.read_bytes() if path is not None and path.exists() else b""
            try:
                self.cache = config.create_timing_cache(data)
            except Exception as e:  # TensorRT raises untyped errors for damaged caches
                raise UserError(f"cannot read timing cache {path}: {e}".splitlines()[0]) from e
        if not config.set_timing_cache(self.cache, False):  # False: made by another TRT/GPU
            raise UserError(
                f"timing cache {self.cache_path} does not fit this TensorRT version or GPU: "
                "delete it or name another file"
            )

    def build(self, onnx_path, route: str, profile: Profile, refittable: bool) -> dict:
        """Serialize an engine; returns its plan bytes and build facts."""
        import tensorrt as trt

        builder = trt.Builder(self.logger)
        strong = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
        network = builder.create_network(strong if route == STRONGLY_TYPED else 0)
        parser = trt.OnnxParser(network, self.logger)
        if not parser.parse_from_file(str(onnx_path)):
            errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
            first = errors[0].strip().splitlines()[0] if errors else "unknown error"
            raise UserError(f"TensorRT cannot parse {onnx_path}: {first}")
        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, self.workspace)
        # Layer details (types, precisions, tactics) for the inspector; no effect on speed.
        config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED
        if refittable:
            config.set_flag(trt.BuilderFlag.REFIT)
        fp32_layers = 0
        if route == FP16_FLAG:
            config.set_flag(trt.BuilderFlag.FP16)
            config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
            fp32_layers = _pin_fp32(network)
        trt_profile = builder.create_optimization_profile()
        shapes = (trt.Dims(list(s)) for s in (profile.min, profile.opt, profile.max))
        trt_profile.set_shape(profile.name, *shapes)
        config.add_optimization_profile(trt_profile)
        self._attach_cache(config)  # one cache (in memory without --timing-cache) for every build
        start = time.perf_counter()
        serialized = builder.build_serialized_network(network, config)
        seconds = time.perf_counter() - start
        if serialized is None:
            raise UserError("TensorRT could not build the engine (its log above says why)")
        return {"plan": bytes(serialized), "seconds": seconds, "fp32_layers": fp32_layers}

    def layers(self, plan: bytes) -> list[dict]:
        import tensorrt as trt

        from adaptsr.export.trt_inspect import engine_layers

        engine = trt.Runtime(self.logger).deserialize_cuda_engine(plan)
        if engine is None:
            raise UserError("TensorRT cannot load the engine it just built")
        return engine_layers(engine)

    def save_cache(self) -> None:
        if self.cache_path is not None and self.cache is not None:
            with atomic_output(self.cache_path, force=True) as tmp:
                tmp.write_bytes(bytes(self.cache.serialize()))


def _pin_fp32(network: trt.INetworkDefinition) -> int:
    """fp16-flag route: normalisation, softmax and reduction layers compute and output fp32."""
    import tensorrt as trt

    wanted = {getattr(trt.LayerType, name) for name in FP32_LAYER_TYPES}
    floats = (trt.float32, trt.float16)
    pinned = 0
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        if layer.type not in wanted:
            continue
        outputs = range(layer.num_outputs)
        if not all(layer.get_output(j).dtype in floats for j in outputs):
            continue  # a shape computation on integers has no precision to keep
        layer.precision = trt.float32
        for j in outputs:
            layer.set_output_type(j, trt.float32)
        pinned += 1
    return pinned


def _verify(engine_file: Path, reference: Path, profile: Profile, min_psnr: float) -> dict:
    from adaptsr.export.trt_verify import verify
    from adaptsr.serve.backends import TensorRTBackend

    return verify(TensorRTBackend(engine_file).run, reference, profile, min_psnr)


def _write(out: Path, plan: bytes, info: dict, verify_with, force: bool) -> dict:
    """Engine, then sidecar, atomically; verification runs on the engine before it is named."""
    with atomic_output(out, force) as tmp:
        tmp.write_bytes(plan)
        info["verify"] = verify_with(tmp) if verify_with else {"skipped": "--no-verify"}
        info["engine_sha256"] = sha256_file(tmp)
    with atomic_output(engine_info_path(out), force) as tmp_json:
        tmp_json.write_text(json.dumps(json_safe(info), indent=2) + "\n")
    return info


def build_engine(
    onnx_path: str | Path,
    out: str | Path,
    *,
    fp16: bool = False,
    route: str = DEFAULT_ROUTE,
    min_hw: tuple[int, int] | None = None,
    opt_hw: tuple[int, int] | None = None,
    max_hw: tuple[int, int] | None = None,
    batch: tuple[int, int, int] | None = None,
    workspace_gib: float = 4.0,
    timing_cache: str | Path | None = None,
    refittable: bool = False,
    verify: bool = True,
    reference: str | Path | None = None,
    min_psnr: float = 45.0,
    base_onnx: str | Path | None = None,
    force: bool = False,
) -> dict:
    """Build, verify and write an engine with its sidecar `<out>.engine.json`; returns it.

    With `base_onnx` (the base model's export), the base engine is built first with the same
    timing cache and their layers are compared (`trt_inspect`): the engine-level zero-overhead
    proof, in the sidecar's `zero_overhead`; a structural difference fails the build.
    """
    out = Path(out)
    if out.suffix.lower() not in ENGINE_SUFFIXES:  # bench and upscale type artifacts by suffix
        raise UserError(f"{out}: name the engine {' or '.join(ENGINE_SUFFIXES)}")
    check_writable(out, force)
    check_writable(engine_info_path(out), force)
    if workspace_gib <= 0:
        raise UserError(f"workspace must be positive, got {workspace_gib} GiB")
    if timing_cache is not None:  # read and rewritten: it must not be any other file here
        others = [p for p in (onnx_path, reference, base_onnx, out, engine_info_path(out)) if p]
        if any(Path(timing_cache).resolve() == Path(p).resolve() for p in others):
            raise UserError(f"--timing-cache {timing_cache} is another input or output")
    inp = read_onnx_input(onnx_path)
    precision = inp.metadata.get(META_PRECISION, "fp32")
    check_route(route, fp16, precision, onnx_path)
    profile = profile_shapes(inp, min_hw, opt_hw, max_hw, batch)
    ref = resolve_reference(onnx_path, precision, inp, reference) if verify else None
    if base_onnx is not None:
        base_inp = read_onnx_input(base_onnx)
        if base_inp.dims != inp.dims or base_inp.metadata.get(META_PRECISION, "fp32") != precision:
            raise UserError(
                f"--base-onnx {base_onnx} is not an export of the same shape and precision as "
                f"{onnx_path}: export both with the same options"
            )
    import_tensorrt()
    import tensorrt as trt

    check_route_version(route, trt.__version__)
    gpu = gpu_info()
    builder = _Builder(workspace_gib, timing_cache)
    zero_overhead = None
    if base_onnx is not None:
        base_built = builder.build(base_onnx, route, profile, refittable)
    built = builder.build(onnx_path, route, profile, refittable)
    if base_onnx is not None:
        from adaptsr.export.trt_inspect import compare_layers

        zero_overhead = compare_layers(
            builder.layers(base_built["plan"]), builder.layers(built["plan"])
        )
        zero_overhead["base_onnx"] = _relative(base_onnx, out)
        zero_overhead["base_build_seconds"] = base_built["seconds"]
        if not zero_overhead["structure_identical"]:
            raise UserError(
                "the merged engine's layers differ from the base engine's: "
                f"{zero_overhead['first_difference']}: not written"
            )
    command = _command(
        "adapt", "export", "trt", "--onnx", onnx_path, "--out", out,
        "--fp16" if fp16 else None,
        *(("--route", route) if route != DEFAULT_ROUTE else ()),
        *(() if profile.min == profile.max and min_hw is None else
          ("--min-shape", _hw(profile.min), "--opt-shape", _hw(profile.opt),
           "--max-shape", _hw(profile.max))),
        *(("--batch-range", *batch) if batch else ()),
        "--refittable" if refittable else None,
        *(("--reference", reference) if reference else ()),
        *(() if verify else ("--no-verify",)),
    )  # fmt: skip
    info = {
        "engine": out.name,
        "onnx": _relative(onnx_path, out),
        "onnx_sha256": sha256_file(onnx_path),
        "onnx_input": inp.dims,
        "tensorrt_version": str(trt.__version__),
        **gpu,
        "precision": "fp16" if fp16 or route == FP16_FLAG else precision,
        "onnx_precision": precision,
        "route": route,
        "strongly_typed": route == STRONGLY_TYPED,
        "fp32_constrained_layers": built["fp32_layers"],
        "refittable": refittable,
        "profile": profile.to_dict(),
        "adapter_fingerprint": inp.metadata.get("adapter_fingerprint"),
        "base_fingerprint": inp.metadata.get("base_fingerprint"),
        "build_seconds": built["seconds"],
        "built_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "build_command": command,
        "metadata": inp.metadata,
    }
    if zero_overhead is not None:
        info["zero_overhead"] = zero_overhead
    verify_with = (lambda f: _verify(f, ref, profile, min_psnr)) if ref is not None else None
    _write(out, built["plan"], info, verify_with, force)
    builder.save_cache()
    return info


def refit_engine(
    base_engine: str | Path,
    onnx_path: str | Path,
    out: str | Path,
    *,
    verify: bool = True,
    reference: str | Path | None = None,
    min_psnr: float = 45.0,
    force: bool = False,
) -> dict:
    """A copy of a refittable engine with the weights of another export of the same model
    (another adapter merged into the same base: same graph, other initializer values).

    TensorRT's ONNX parser refitter maps every ONNX initializer to the engine weights it became,
    so no build runs: seconds instead of minutes.
    """
    out, base_engine = Path(out), check_readable(base_engine, "engine file")
    if out.suffix.lower() not in ENGINE_SUFFIXES:
        raise UserError(f"{out}: name the engine {' or '.join(ENGINE_SUFFIXES)}")
    if out.resolve() == base_engine.resolve():
        raise UserError(f"--out {out} is the --refit-from engine: write the refit copy elsewhere")
    check_writable(out, force)
    check_writable(engine_info_path(out), force)
    base_info = read_engine_info(base_engine)
    if base_info is None:
        raise UserError(
            f"{base_engine} has no sidecar {engine_info_path(base_engine)}: refit needs the "
            "profile and precision it records (build the engine with adapt export trt)"
        )
    if not base_info.get("refittable"):
        raise UserError(
            f"{base_engine} was built without --refittable: rebuild it with --refittable"
        )
    inp = read_onnx_input(onnx_path)
    precision = inp.metadata.get(META_PRECISION, "fp32")
    if precision != base_info.get("onnx_precision") or inp.dims != base_info.get("onnx_input"):
        raise UserError(
            f"{onnx_path} ({precision}, input {inp.dims}) is not exported like the ONNX the "
            f"engine was built from ({base_info.get('onnx_precision')}, input "
            f"{base_info.get('onnx_input')}): export it with the same options"
        )
    p = base_info["profile"]
    profile = Profile(p["name"], tuple(p["min"]), tuple(p["opt"]), tuple(p["max"]))
    ref = resolve_reference(onnx_path, precision, inp, reference) if verify else None
    import_tensorrt()
    import tensorrt as trt

    gpu = gpu_info()
    check_engine_info(base_info, base_engine, trt.__version__, gpu["compute_capability"])
    logger = trt.Logger(trt.Logger.WARNING)
    engine = trt.Runtime(logger).deserialize_cuda_engine(base_engine.read_bytes())
    if engine is None:
        raise UserError(f"cannot load engine {base_engine}: corrupt (rebuild it)")
    if not engine.refittable:
        raise UserError(f"{base_engine} is not refittable: rebuild it with --refittable")
    start = time.perf_counter()
    refitter = trt.Refitter(engine, logger)
    parser = trt.OnnxParserRefitter(refitter, logger)
    if not parser.refit_from_file(str(onnx_path)):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        first = errors[0].strip().splitlines()[0] if errors else "unknown error"
        raise UserError(f"TensorRT cannot refit from {onnx_path}: {first}")
    missing = refitter.get_missing_weights()
    if missing:
        raise UserError(
            f"{onnx_path} lacks {len(missing)} weights of the engine (first: {missing[0]}): "
            "not an export of the engine's model"
        )
    if not refitter.refit_cuda_engine():
        raise UserError(f"TensorRT could not refit {base_engine} (its log above says why)")
    seconds = time.perf_counter() - start
    serialized = engine.serialize()
    if serialized is None:
        raise UserError("TensorRT could not serialize the refitted engine")
    command = _command(
        "adapt", "export", "trt", "--refit-from", base_engine, "--onnx", onnx_path, "--out", out,
        *(("--reference", reference) if reference else ()),
        *(() if verify else ("--no-verify",)),
    )  # fmt: skip
    info = {
        **{k: v for k, v in base_info.items() if k not in ("verify", "zero_overhead")},
        "engine": out.name,
        "onnx": _relative(onnx_path, out),
        "onnx_sha256": sha256_file(onnx_path),
        "adapter_fingerprint": inp.metadata.get("adapter_fingerprint"),
        "base_fingerprint": inp.metadata.get("base_fingerprint"),
        "refit_from": _relative(base_engine, out),
        "refit_seconds": seconds,
        "built_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "build_command": command,
        "metadata": inp.metadata,
    }
    verify_with = (lambda f: _verify(f, ref, profile, min_psnr)) if ref is not None else None
    return _write(out, bytes(serialized), info, verify_with, force)
