"""TensorRT engines from exported ONNX files (TensorRT 10 Python API; no torch needed).

The network is created strongly typed: every layer runs in the type the ONNX graph gives it, so
an fp16 engine comes from the fp16 ONNX of `adapt export onnx --fp16` (with its fp32 islands),
not from the builder's FP16 flag (deprecated in TensorRT 10.12). A build or refit is planned
first (`adaptsr.export.trt_plan`: every argument check, the optimization profile validated
against the size requirements the export stored in the ONNX metadata); this module runs a plan
without checking it again. TensorRT is imported only when an engine is built, so the planning
works and is tested without it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from adaptsr.core.artifacts import check_engine_info
from adaptsr.core.contracts import EngineSidecar, EngineVerify, record
from adaptsr.core.contracts import EngineZeroOverhead as EngineZeroOverheadProof
from adaptsr.core.errors import UserError
from adaptsr.core.lazy import lazy_import
from adaptsr.export.trt_builder import FP16_FLAG, STRONGLY_TYPED, Builder, Built, refit_plan
from adaptsr.export.trt_plan import (  # the checks, also named here (tests, older callers)
    ROUTES,  # noqa: F401
    EnginePlan,
    OnnxInput,  # noqa: F401
    Profile,
    check_route,  # noqa: F401
    parse_batch,  # noqa: F401
    parse_hw,  # noqa: F401
    plan_build,
    plan_engine,  # noqa: F401
    plan_refit,
    profile_shapes,  # noqa: F401
    read_onnx_input,  # noqa: F401
    resolve_reference,  # noqa: F401
)
from adaptsr.export.trt_sidecar import new_sidecar, relative, write_engine
from adaptsr.serve import cudart
from adaptsr.serve.backends import TensorRTBackend, import_tensorrt

if TYPE_CHECKING:  # the real API's types (tensorrt-stubs); TensorRT itself loads lazily
    import tensorrt as trt
else:
    trt = lazy_import("tensorrt")

trt_inspect = lazy_import("adaptsr.export.trt_inspect")
trt_verify = lazy_import("adaptsr.export.trt_verify")


def check_route_version(route: str, tensorrt_version: str) -> None:
    """TensorRT 11 removed the FP16 builder flag (weakly typed networks are gone)."""
    major = int(str(tensorrt_version).split(".")[0])
    if route == FP16_FLAG and major >= 11:
        raise UserError(
            f"TensorRT {tensorrt_version} has no FP16 builder flag: build the fp16 ONNX "
            f"(adapt export onnx --fp16) with --route {STRONGLY_TYPED}"
        )


def gpu_info() -> dict:
    """The GPU the engine is built for (name, compute capability)."""
    return cudart.device_info()


def _verify(engine_file: Path, reference: Path, profile: Profile, min_psnr: float) -> EngineVerify:
    return trt_verify.verify(TensorRTBackend(engine_file).run, reference, profile, min_psnr)


def _zero_overhead(builder: Builder, base: Built, merged: Built, base_onnx, out: Path):
    """The engine-level proof: the merged engine's layers are the base engine's."""
    compared = trt_inspect.compare_layers(builder.layers(base.plan), builder.layers(merged.plan))
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


def run_engine(plan: EnginePlan) -> EngineSidecar:
    """Build or refit (a plan with `refit_from`) as planned; returns the sidecar written."""
    return refit_planned(plan) if plan.refit_from is not None else build_planned(plan)


def build_planned(plan: EnginePlan) -> EngineSidecar:
    """Build, verify and write the planned engine with its sidecar `<out>.engine.json`.

    With a base export (`plan.base_onnx`), the base engine is built first with the same timing
    cache and their layers are compared (`trt_inspect`): the engine-level zero-overhead proof,
    in the sidecar's `zero_overhead`; a structural difference fails the build.
    """
    import_tensorrt()

    check_route_version(plan.route, trt.__version__)
    gpu = gpu_info()
    builder = Builder(plan.workspace_gib, plan.timing_cache)
    base_onnx, route, profile = plan.base_onnx, plan.route, plan.profile
    base_built = builder.build(base_onnx, route, profile, plan.refittable) if base_onnx else None
    built = builder.build(plan.onnx, route, profile, plan.refittable)
    zero_overhead = None
    if base_built is not None:
        zero_overhead = _zero_overhead(builder, base_built, built, base_onnx, plan.out)
    sidecar = new_sidecar(
        plan.out,
        plan.onnx,
        plan.onnx_input.metadata,
        plan.command,
        onnx_input=plan.onnx_input.dims,
        tensorrt_version=str(trt.__version__),
        gpu=gpu["gpu"],
        compute_capability=gpu["compute_capability"],
        precision="fp16" if plan.fp16 or route == FP16_FLAG else plan.precision,
        onnx_precision=plan.precision,
        route=route,
        strongly_typed=route == STRONGLY_TYPED,
        fp32_constrained_layers=built.fp32_layers,
        refittable=plan.refittable,
        profile=profile,
        build_seconds=built.seconds,
        zero_overhead=zero_overhead,
    )
    sidecar = write_engine(plan.out, built.plan, sidecar, _verifier(plan), plan.force)
    builder.save_cache()
    return sidecar


def refit_planned(plan: EnginePlan) -> EngineSidecar:
    """A copy of the planned refittable engine with the weights of the plan's ONNX (another
    adapter merged into the same base: same graph, other initializer values).

    TensorRT's ONNX parser refitter maps every ONNX initializer to the engine weights it became,
    so no build runs: seconds instead of minutes.
    """
    base_engine, base = plan.refit_from, plan.refit_base
    assert base_engine is not None and base is not None, "a refit plan (plan_refit)"
    import_tensorrt()

    gpu = gpu_info()
    check_engine_info(base, base_engine, trt.__version__, gpu["compute_capability"])
    engine_plan, seconds = refit_plan(base_engine, plan.onnx)
    sidecar = new_sidecar(
        plan.out,
        plan.onnx,
        plan.onnx_input.metadata,
        plan.command,
        **base.build_settings(),
        refit_from=relative(base_engine, plan.out),
        refit_seconds=seconds,
    )
    return write_engine(plan.out, engine_plan, sidecar, _verifier(plan), plan.force)


def _verifier(plan: EnginePlan):
    """Verification of the written engine against the fp32 reference, or None (--no-verify)."""
    ref = plan.reference
    if ref is None:
        return None
    return lambda engine_file: _verify(engine_file, ref, plan.profile, plan.min_psnr)


def build_engine(onnx_path: str | Path, out: str | Path, **options: Any) -> EngineSidecar:
    """Plan and build an engine with its sidecar; returns the sidecar. `options` are
    trt_plan.plan_build's (fp16, route, shapes, batch, workspace, verification, force), spelled
    there once."""
    return build_planned(plan_build(onnx_path, out, **options))


def refit_engine(
    base_engine: str | Path, onnx_path: str | Path, out: str | Path, **options: Any
) -> EngineSidecar:
    """Plan and write a refitted copy of `base_engine`; returns its sidecar. `options` are
    trt_plan.plan_refit's (verification, force)."""
    return refit_planned(plan_refit(base_engine, onnx_path, out, **options))
