"""TensorRT engines from exported ONNX files (TensorRT 10 Python API; no torch needed).

The network is created strongly typed: every layer runs in the type the ONNX graph gives it, so
an fp16 engine comes from the fp16 ONNX of `adapt export onnx --fp16` (with its fp32 islands),
not from the builder's FP16 flag (deprecated in TensorRT 10.12). Dynamic height/width need an
optimization profile (min/opt/max), validated here against the size requirements that the export
stored in the ONNX metadata. TensorRT is imported only when an engine is built, so everything
before that (argument checks, profile shapes) works and is tested without it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from adaptsr.core.artifacts import (
    ENGINE_SUFFIXES,
    MAX_BATCH,
    MAX_SIDE,
    META_PRECISION,
    check_engine_info,
    engine_info_path,
    read_engine_info,
    size_metadata,
)
from adaptsr.core.contracts import EngineProfile, EngineSidecar, EngineVerify, record
from adaptsr.core.contracts import EngineZeroOverhead as EngineZeroOverheadProof
from adaptsr.core.errors import UserError
from adaptsr.core.fileio import check_readable, check_writable
from adaptsr.export.trt_builder import FP16_FLAG, STRONGLY_TYPED, Builder, Built, refit_plan
from adaptsr.export.trt_sidecar import hw, new_sidecar, relative, shell_command, write_engine
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


# Precision routes (docs/export.md has the table by TensorRT version)
ROUTES = (STRONGLY_TYPED, FP16_FLAG)
DEFAULT_ROUTE = STRONGLY_TYPED
Profile = EngineProfile  # the optimization profile, as the sidecar records it


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


def _verify(engine_file: Path, reference: Path, profile: Profile, min_psnr: float) -> EngineVerify:
    from adaptsr.export.trt_verify import verify
    from adaptsr.serve.backends import TensorRTBackend

    return verify(TensorRTBackend(engine_file).run, reference, profile, min_psnr)


def _check_outputs(out: Path, force: bool) -> None:
    """An engine name serve recognises, and outputs that are not inputs or existing files."""
    if out.suffix.lower() not in ENGINE_SUFFIXES:  # bench and upscale type artifacts by suffix
        raise UserError(f"{out}: name the engine {' or '.join(ENGINE_SUFFIXES)}")
    check_writable(out, force)
    check_writable(engine_info_path(out), force)


def _check_base_onnx(base_onnx, onnx_path, inp: OnnxInput, precision: str) -> None:
    base_inp = read_onnx_input(base_onnx)
    if base_inp.dims != inp.dims or base_inp.metadata.get(META_PRECISION, "fp32") != precision:
        raise UserError(
            f"--base-onnx {base_onnx} is not an export of the same shape and precision as "
            f"{onnx_path}: export both with the same options"
        )


def _zero_overhead(builder: Builder, base: Built, merged: Built, base_onnx, out: Path):
    """The engine-level proof: the merged engine's layers are the base engine's."""
    from adaptsr.export.trt_inspect import compare_layers

    compared = compare_layers(builder.layers(base.plan), builder.layers(merged.plan))
    proof = record(
        EngineZeroOverheadProof,
        {
            "first_tactic_difference": None,
            **compared,
            "base_onnx": relative(base_onnx, out),
            "base_build_seconds": base.seconds,
        },
        "the engine layer comparison",
    )
    if not proof.structure_identical:
        raise UserError(
            "the merged engine's layers differ from the base engine's: "
            f"{proof.first_difference}: not written"
        )
    return proof


def _build_command(onnx_path, out, fp16, route, profile, min_hw, batch, refittable, reference,
                   verify) -> str:  # fmt: skip
    return shell_command(
        "adapt", "export", "trt", "--onnx", onnx_path, "--out", out,
        "--fp16" if fp16 else None,
        *(("--route", route) if route != DEFAULT_ROUTE else ()),
        *(() if profile.min == profile.max and min_hw is None else
          ("--min-shape", hw(profile.min), "--opt-shape", hw(profile.opt),
           "--max-shape", hw(profile.max))),
        *(("--batch-range", *batch) if batch else ()),
        "--refittable" if refittable else None,
        *(("--reference", reference) if reference else ()),
        *(() if verify else ("--no-verify",)),
    )  # fmt: skip


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
) -> EngineSidecar:
    """Build, verify and write an engine with its sidecar `<out>.engine.json`; returns it.

    With `base_onnx` (the base model's export), the base engine is built first with the same
    timing cache and their layers are compared (`trt_inspect`): the engine-level zero-overhead
    proof, in the sidecar's `zero_overhead`; a structural difference fails the build.
    """
    out = Path(out)
    _check_outputs(out, force)
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
        _check_base_onnx(base_onnx, onnx_path, inp, precision)
    import_tensorrt()
    import tensorrt as trt

    check_route_version(route, trt.__version__)
    gpu = gpu_info()
    builder = Builder(workspace_gib, timing_cache)
    base_built = builder.build(base_onnx, route, profile, refittable) if base_onnx else None
    built = builder.build(onnx_path, route, profile, refittable)
    zero_overhead = None
    if base_built is not None:
        zero_overhead = _zero_overhead(builder, base_built, built, base_onnx, out)
    command = _build_command(
        onnx_path, out, fp16, route, profile, min_hw, batch, refittable, reference, verify
    )
    sidecar = new_sidecar(
        out,
        onnx_path,
        inp.metadata,
        command,
        onnx_input=inp.dims,
        tensorrt_version=str(trt.__version__),
        gpu=gpu["gpu"],
        compute_capability=gpu["compute_capability"],
        precision="fp16" if fp16 or route == FP16_FLAG else precision,
        onnx_precision=precision,
        route=route,
        strongly_typed=route == STRONGLY_TYPED,
        fp32_constrained_layers=built.fp32_layers,
        refittable=refittable,
        profile=profile,
        build_seconds=built.seconds,
        zero_overhead=zero_overhead,
    )
    verify_with = (lambda f: _verify(f, ref, profile, min_psnr)) if ref is not None else None
    sidecar = write_engine(out, built.plan, sidecar, verify_with, force)
    builder.save_cache()
    return sidecar


def _refittable_sidecar(base_engine: Path) -> EngineSidecar:
    base = read_engine_info(base_engine)
    if base is None:
        raise UserError(
            f"{base_engine} has no sidecar {engine_info_path(base_engine)}: refit needs the "
            "profile and precision it records (build the engine with adapt export trt)"
        )
    if not base.refittable:
        raise UserError(
            f"{base_engine} was built without --refittable: rebuild it with --refittable"
        )
    return base


def refit_engine(
    base_engine: str | Path,
    onnx_path: str | Path,
    out: str | Path,
    *,
    verify: bool = True,
    reference: str | Path | None = None,
    min_psnr: float = 45.0,
    force: bool = False,
) -> EngineSidecar:
    """A copy of a refittable engine with the weights of another export of the same model
    (another adapter merged into the same base: same graph, other initializer values).

    TensorRT's ONNX parser refitter maps every ONNX initializer to the engine weights it became,
    so no build runs: seconds instead of minutes.
    """
    out, base_engine = Path(out), check_readable(base_engine, "engine file")
    if out.suffix.lower() in ENGINE_SUFFIXES and out.resolve() == base_engine.resolve():
        raise UserError(f"--out {out} is the --refit-from engine: write the refit copy elsewhere")
    _check_outputs(out, force)
    base = _refittable_sidecar(base_engine)
    inp = read_onnx_input(onnx_path)
    precision = inp.metadata.get(META_PRECISION, "fp32")
    if precision != base.onnx_precision or inp.dims != base.onnx_input:
        raise UserError(
            f"{onnx_path} ({precision}, input {inp.dims}) is not exported like the ONNX the "
            f"engine was built from ({base.onnx_precision}, input {base.onnx_input}): export "
            "it with the same options"
        )
    ref = resolve_reference(onnx_path, precision, inp, reference) if verify else None
    import_tensorrt()
    import tensorrt as trt

    gpu = gpu_info()
    check_engine_info(base, base_engine, trt.__version__, gpu["compute_capability"])
    plan, seconds = refit_plan(base_engine, onnx_path)
    command = shell_command(
        "adapt", "export", "trt", "--refit-from", base_engine, "--onnx", onnx_path, "--out", out,
        *(("--reference", reference) if reference else ()),
        *(() if verify else ("--no-verify",)),
    )  # fmt: skip
    sidecar = new_sidecar(
        out,
        onnx_path,
        inp.metadata,
        command,
        **base.build_settings(),
        refit_from=relative(base_engine, out),
        refit_seconds=seconds,
    )
    profile = base.profile
    verify_with = (lambda f: _verify(f, ref, profile, min_psnr)) if ref is not None else None
    return write_engine(out, plan, sidecar, verify_with, force)
