"""The plan of an engine build or refit: every check of `adapt export trt`, made once before any
TensorRT call, and what it decided (`EnginePlan`).

`plan_engine` is the command's one call: outputs that are not inputs, --refit-from's rules, then
`plan_build` or `plan_refit`: the engine name, existing outputs (--force), the workspace and
timing cache, the ONNX's input and precision route, the optimization profile (validated against
the size requirements the export stored in the ONNX metadata), the fp32 reference of the
verification and the base export of the zero-overhead proof. `adaptsr.export.tensorrt` runs a
plan without checking it again. No torch, no TensorRT here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from adaptsr.core.artifacts import (
    ENGINE_SUFFIXES,
    MAX_BATCH,
    MAX_SIDE,
    META_IO_PRECISION,
    META_PRECISION,
    engine_info_path,
    read_engine_info,
    size_metadata,
)
from adaptsr.core.contracts import EngineProfile, EngineSidecar
from adaptsr.core.errors import UserError
from adaptsr.core.fileio import check_outputs_not_inputs, check_readable, check_writable
from adaptsr.core.lazy import lazy_import
from adaptsr.export.fp16_proof import BF16_MIN_PSNR
from adaptsr.export.trt_builder import FP16_FLAG, STRONGLY_TYPED
from adaptsr.export.trt_sidecar import hw, shell_command
from adaptsr.export.trt_verify import MIN_PSNR_DB

onnx = lazy_import("onnx")


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


def _check_outputs(out: Path, force: bool) -> None:
    """An engine name serve recognises, and outputs that are not inputs or existing files."""
    if out.suffix.lower() not in ENGINE_SUFFIXES:  # bench and upscale type artifacts by suffix
        raise UserError(f"{out}: name the engine {' or '.join(ENGINE_SUFFIXES)}")
    check_writable(out, force)
    check_writable(engine_info_path(out), force)


def io_precision(metadata: dict[str, str]) -> str:
    """The type of the ONNX's input and output the export recorded (fp16 for --fp16-io)."""
    return metadata.get(META_IO_PRECISION, "fp32")


def _check_base_onnx(base_onnx, onnx_path, inp: OnnxInput, precision: str) -> None:
    base_inp = read_onnx_input(base_onnx)
    if (
        base_inp.dims != inp.dims
        or base_inp.metadata.get(META_PRECISION, "fp32") != precision
        or io_precision(base_inp.metadata) != io_precision(inp.metadata)
    ):
        raise UserError(
            f"--base-onnx {base_onnx} is not an export of the same shape and precision as "
            f"{onnx_path}: export both with the same options"
        )


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


# TensorRT documents that BuilderFlag.REFIT may give wrong output even before any refit (a GEMM
# bias dropped and treated as zero, not exposed to the refitter), so a refittable engine and a
# refitted copy are always checked against ONNX Runtime.
ALWAYS_VERIFIED = (
    "is always verified against ONNX Runtime (TensorRT's REFIT can drop a GEMM bias): drop "
    "--no-verify"
)


def default_min_psnr(precision: str) -> float:
    """--min-psnr when not given: 45 dB, or for a bf16 ONNX the bf16 export check's 35 dB (bf16
    keeps 3 significant bits fewer than fp16)."""
    return BF16_MIN_PSNR if precision == "bf16" else MIN_PSNR_DB


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


@dataclass(frozen=True)
class EnginePlan:
    """A checked build (or, with `refit_from`, a refit): what `adaptsr.export.tensorrt` runs."""

    onnx: Path
    out: Path
    onnx_input: OnnxInput
    precision: str  # the ONNX's
    profile: Profile
    reference: Path | None  # the fp32 ONNX the engine is verified against; None: --no-verify
    min_psnr: float
    force: bool
    command: str  # the shell command that makes this engine again (in the sidecar)
    fp16: bool = False
    route: str = DEFAULT_ROUTE
    workspace_gib: float = 4.0
    timing_cache: Path | None = None
    refittable: bool = False
    base_onnx: Path | None = None
    refit_from: Path | None = None  # a refit: the refittable engine copied
    refit_base: EngineSidecar | None = None  # ... and its sidecar

    @property
    def info(self) -> Path:
        return engine_info_path(self.out)


# What a refit keeps from the engine it copies: these options may not be given with it.
BUILD_ONLY = ("--fp16", "--min-shape", "--opt-shape", "--max-shape", "--batch-range",
              "--refittable", "--base-onnx", "--timing-cache")  # fmt: skip


def plan_engine(
    onnx_path: str | Path,
    out: str | Path,
    *,
    refit_from: str | Path | None = None,
    fp16: bool = False,
    route: str = DEFAULT_ROUTE,
    min_shape: str | None = None,
    opt_shape: str | None = None,
    max_shape: str | None = None,
    batch_range=None,
    workspace_gib: float = 4.0,
    timing_cache: str | Path | None = None,
    refittable: bool = False,
    base_onnx: str | Path | None = None,
    verify: bool = True,
    reference: str | Path | None = None,
    min_psnr: float | None = None,
    force: bool = False,
) -> EnginePlan:
    """`adapt export trt`'s options checked, in the order a user meets them (shapes as
    HEIGHTxWIDTH text, `batch_range` as MIN OPT MAX)."""
    inputs = [p for p in (onnx_path, refit_from, base_onnx, reference) if p]
    check_outputs_not_inputs({"--out": out, "the info file": engine_info_path(out)}, inputs)
    if refit_from:
        values = (fp16, min_shape, opt_shape, max_shape, batch_range, refittable, base_onnx,
                  timing_cache)  # fmt: skip
        given = [flag for flag, v in zip(BUILD_ONLY, values, strict=True) if v]
        if given or route != DEFAULT_ROUTE:
            drop = ", ".join(given or ["--route"])
            raise UserError(f"--refit-from keeps the engine's build settings: drop {drop}")
        return plan_refit(
            refit_from, onnx_path, out, verify=verify, reference=reference, min_psnr=min_psnr,
            force=force,
        )  # fmt: skip
    return plan_build(
        onnx_path, out, fp16=fp16, route=route, min_hw=parse_hw(min_shape),
        opt_hw=parse_hw(opt_shape), max_hw=parse_hw(max_shape), batch=parse_batch(batch_range),
        workspace_gib=workspace_gib, timing_cache=timing_cache, refittable=refittable,
        verify=verify, reference=reference, min_psnr=min_psnr, base_onnx=base_onnx, force=force,
    )  # fmt: skip


def plan_build(
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
    min_psnr: float | None = None,
    base_onnx: str | Path | None = None,
    force: bool = False,
) -> EnginePlan:
    """The checks of a build (build_engine's arguments)."""
    out = Path(out)
    _check_outputs(out, force)
    if refittable and not verify:
        raise UserError(f"a --refittable engine {ALWAYS_VERIFIED}")
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
    min_psnr = default_min_psnr(precision) if min_psnr is None else min_psnr
    if base_onnx is not None:
        _check_base_onnx(base_onnx, onnx_path, inp, precision)
    command = _build_command(
        onnx_path, out, fp16, route, profile, min_hw, batch, refittable, reference, verify
    )
    return EnginePlan(
        Path(onnx_path), out, inp, precision, profile, ref, min_psnr, force, command, fp16,
        route, workspace_gib, Path(timing_cache) if timing_cache else None, refittable,
        Path(base_onnx) if base_onnx else None,
    )  # fmt: skip


def plan_refit(
    base_engine: str | Path,
    onnx_path: str | Path,
    out: str | Path,
    *,
    verify: bool = True,
    reference: str | Path | None = None,
    min_psnr: float | None = None,
    force: bool = False,
) -> EnginePlan:
    """The checks of a refit (refit_engine's arguments): a refittable engine with a sidecar,
    and an ONNX exported like the one it was built from."""
    out, base_engine = Path(out), check_readable(base_engine, "engine file")
    if not verify:
        raise UserError(f"a refitted engine {ALWAYS_VERIFIED}")
    if out.suffix.lower() in ENGINE_SUFFIXES and out.resolve() == base_engine.resolve():
        raise UserError(f"--out {out} is the --refit-from engine: write the refit copy elsewhere")
    _check_outputs(out, force)
    base = _refittable_sidecar(base_engine)
    inp = read_onnx_input(onnx_path)
    precision = inp.metadata.get(META_PRECISION, "fp32")
    io, base_io = io_precision(inp.metadata), io_precision(base.metadata)
    if precision != base.onnx_precision or inp.dims != base.onnx_input or io != base_io:
        raise UserError(
            f"{onnx_path} ({precision}, {io} input {inp.dims}) is not exported like the ONNX "
            f"the engine was built from ({base.onnx_precision}, {base_io} input "
            f"{base.onnx_input}): export it with the same options"
        )
    ref = resolve_reference(onnx_path, precision, inp, reference) if verify else None
    min_psnr = default_min_psnr(precision) if min_psnr is None else min_psnr
    command = shell_command(
        "adapt", "export", "trt", "--refit-from", base_engine, "--onnx", onnx_path, "--out", out,
        *(("--reference", reference) if reference else ()),
        *(() if verify else ("--no-verify",)),
    )  # fmt: skip
    return EnginePlan(
        Path(onnx_path), out, inp, precision, base.profile, ref, min_psnr, force, command,
        refit_from=base_engine, refit_base=base,
    )  # fmt: skip
