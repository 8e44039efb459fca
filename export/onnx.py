"""ONNX export of base or merged models, with parity, metadata and the zero-overhead proof.

Pipeline: (merge the adapter) -> torch.onnx.export with the dynamo exporter (opset >= 18),
with export-time rewrites for window attention -> constant folding and cleanup (onnxslim) ->
onnx.checker -> parity in ONNX Runtime against the original PyTorch model on random inputs and a
photo-like image, at several sizes when the export is dynamic -> metadata -> optional fp16
conversion checked by PSNR -> atomic write. A merged export is also compared with the base
export: op histogram, initializer shapes, parameter count, and alternating ORT latency.

The checks that need no model are made once by export.plan (`plan_export`); `run_export` runs
such a plan (opening the model it names), `export_onnx` plans and runs for a model in hand.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import onnxscript.optimizer
import onnxslim
import torch
from torch import nn
from torch.export import Dim

from adaptsr.adapt.adapter_file import AdapterFile
from adaptsr.adapt.lora import merge_lora
from adaptsr.adapt.merge_adapter import blend_adapters
from adaptsr.adapt.model_card import export_card
from adaptsr.adapt.models import load_model
from adaptsr.core.artifacts import (
    MAX_BATCH,
    MAX_SIDE,
    META_IO_PRECISION,
    META_PRECISION,
    META_SCALE,
    META_SIZE_REQUIREMENTS,
)
from adaptsr.core.contracts import (
    ExportReport,
    ExportShape,
    LatencyProof,
    Parity,
    ParityCheck,
    StructureProof,
    ZeroOverhead,
    record,
)
from adaptsr.core.errors import UserError
from adaptsr.core.fileio import atomic_outputs
from adaptsr.core.images import synthetic_image
from adaptsr.core.progress import progress_bar
from adaptsr.core.tiling import round_up
from adaptsr.core.version import __version__
from adaptsr.export import parity, translations
from adaptsr.export.bf16 import emulate_in_fp32
from adaptsr.export.fp16 import convert_to_fp16
from adaptsr.export.fp16_proof import Reduced, check_inputs, fp16_step
from adaptsr.export.plan import (
    MIN_OPSET,
    ExportPlan,
    check_shape_options,
    plan_export,
    report_path,  # noqa: F401  (callers name the report through this module too)
    scratch_folder,
)
from adaptsr.export.rewrites import export_rewrites, reference_forward, size_requirements
from adaptsr.export.structure import compare_latency, compare_structure
from adaptsr.serve.timing import MAX_ROUNDS

PARITY_TOL = 1e-4  # max abs error, fp32


@dataclass
class ExportSpec:
    dynamic: bool = False
    tile: tuple[int, int] | None = None  # static (H, W)
    opset: int = MIN_OPSET
    fp16: bool = False
    dynamic_batch: bool = False  # batch dimension symbolic (tiles batched on an engine)
    example: tuple[int, int] = (0, 0)  # traced size
    check_sizes: list[tuple[int, int]] = field(default_factory=list)
    min_size: int = 1
    multiple_of: int = 1
    strength: float = 1.0  # the merged adapter's weight (adapt merge --strength)
    bf16: bool = False  # bf16 weights and arithmetic (fp32 islands) instead of fp16
    fp16_io: bool = False  # the fp16 graph takes and gives fp16 (not fp32)
    check_images: Path | None = None  # a folder whose images the fp16/bf16 check also runs on

    @property
    def reduced(self) -> Reduced | None:
        """The reduced precision of the written graph; None for fp32."""
        if self.bf16:
            return Reduced("bf16")
        return Reduced("fp16", "fp16" if self.fp16_io else "fp32") if self.fp16 else None


def plan(
    model: nn.Module, dynamic: bool, tile: tuple[int, int] | None, opset: int = MIN_OPSET
) -> ExportSpec:
    """The shape options checked (export.plan), then against the model's size requirements."""
    check_shape_options(dynamic, tile, opset)
    return model_shapes(model, ExportPlan(Path("model.onnx"), dynamic, tile, opset))


def model_shapes(model: nn.Module, export: ExportPlan) -> ExportSpec:
    """Check the planned shapes against the model's size requirements; choose the traced size
    and the sizes the parity check runs at."""
    dynamic, tile = export.dynamic, export.tile
    min_size, multiple = size_requirements(model)
    spec = ExportSpec(
        dynamic=dynamic,
        tile=tile,
        opset=export.opset,
        fp16=export.fp16,
        dynamic_batch=export.dynamic_batch,
        min_size=max(min_size, 1),
        multiple_of=multiple,
        strength=export.strength,
        bf16=export.bf16,
        fp16_io=export.fp16_io,
        check_images=export.check_images,
    )
    arch = model.adaptsr_info.arch
    if tile:
        h, w = tile
        for side, v in (("height", h), ("width", w)):
            if v < spec.min_size or v % multiple:
                need = f"at least {spec.min_size}"
                need += f", a multiple of {multiple}" if multiple > 1 else ""
                raise UserError(f"tile {side} {v} is not allowed for {arch}: it must be {need}")
            if v > MAX_SIDE:
                raise UserError(f"tile {side} {v} is above the supported {MAX_SIDE}")
        spec.example = (h, w)
        spec.check_sizes = [(h, w)]
        return spec
    # Dynamic: trace at a size that is not square and, where allowed, not a window multiple,
    # then check at three sizes so a dimension silently baked in by the tracer is caught.
    s = round_up(max(spec.min_size, 16), multiple)
    m = multiple
    spec.example = (s + 3 * m, s + 11 * m)
    spec.check_sizes = [spec.example, (s, s), (s + 8 * m, s + 1 * m)]
    return spec


def latency_size(spec: ExportSpec) -> tuple[int, int]:
    """The tile, or for a dynamic export a 64x64-class input the model accepts."""
    if spec.tile:
        return spec.tile
    side = round_up(max(64, spec.min_size), spec.multiple_of)
    return side, side


def _dynamic_shapes(spec: ExportSpec):

    dims: dict = {0: Dim("batch", min=1, max=MAX_BATCH)} if spec.dynamic_batch else {}
    if not spec.dynamic:
        return (dims,)
    if spec.multiple_of == 1:
        lo = max(spec.min_size, 2)
        dims.update({2: Dim("height", min=lo, max=MAX_SIDE), 3: Dim("width", min=lo, max=MAX_SIDE)})
        return (dims,)
    m = spec.multiple_of
    lo = max(-(-spec.min_size // m), 2)
    dims[2] = m * Dim("height_div", min=lo, max=MAX_SIDE // m)
    dims[3] = m * Dim("width_div", min=lo, max=MAX_SIDE // m)
    return (dims,)


def trace_batch(spec: ExportSpec) -> int:
    """Batch of the traced and checked inputs: 2 for a dynamic batch (the tracer would
    specialise a batch of 1 to a constant)."""
    return 2 if spec.dynamic_batch else 1


@contextlib.contextmanager
def _quiet():
    """The exporter prints progress lines and warnings; keep the CLI output ours."""
    with (
        warnings.catch_warnings(),
        contextlib.redirect_stdout(io.StringIO()),
        contextlib.redirect_stderr(io.StringIO()),
    ):
        warnings.simplefilter("ignore")
        yield


def _export_error(arch: str, spec: ExportSpec, e: Exception) -> str:
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(e))
    op = re.search(r"No ONNX function found for <OpOverload\(op='([^']+)'", text)
    if op:
        return (
            f"cannot export {arch} to ONNX: unsupported operator {op.group(1)} "
            "(the exporter has no ONNX translation for it)"
        )
    how = " with dynamic height/width (try --tile H W)" if spec.dynamic else ""
    # The exporter's first line names only the failed step ("Failed to decompose the FX
    # graph ..."); the error that stopped it is quoted further down as "<class 'X'>: why".
    cause = re.search(r"<class '(?:[\w]+\.)*(\w+)'>: (.+)", text)
    if cause:
        return f"cannot export {arch} to ONNX{how}: {cause.group(1)}: {cause.group(2).strip()}"
    lines = [t.strip() for t in text.strip().splitlines() if t.strip()]
    return f"cannot export {arch} to ONNX{how}: {type(e).__name__}: {lines[0] if lines else ''}"


def export_graph(model: nn.Module, spec: ExportSpec):
    """Trace to ONNX (dynamo), fold constants, check. Returns (onnx.ModelProto, rewrites)."""
    x = torch.rand(trace_batch(spec), model.adaptsr_info.in_channels, *spec.example)
    try:
        with _quiet(), export_rewrites(model) as rewrites, torch.no_grad():
            program = torch.onnx.export(
                model,
                (x,),
                dynamo=True,
                opset_version=spec.opset,
                input_names=["input"],
                output_names=["output"],
                dynamic_shapes=_dynamic_shapes(spec)
                if spec.dynamic or spec.dynamic_batch
                else None,
                # Its full optimizer also merges initializers by value (identical weights share
                # one), which would make the structure depend on the weights: fold only.
                optimize=False,
                verbose=False,
                custom_translation_table=translations.table(),
            )
    except Exception as e:  # the exporter raises many types; one line for the user
        raise UserError(_export_error(model.adaptsr_info.arch, spec, e)) from e
    onnxscript.optimizer.fold_constants(program.model)
    onnxscript.optimizer.remove_unused_nodes(program.model)
    proto = program.model_proto
    with _quiet():
        # Constant folding, dead code and common subexpressions; no weight tying: it merges
        # initializers by value, which would make the graph structure depend on the weights.
        proto = onnxslim.slim(proto, skip_optimizations=["weight_tying"])
    try:
        onnx.checker.check_model(proto, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as e:
        raise UserError(f"the exported graph fails onnx.checker: {str(e).splitlines()[0]}") from e
    return proto, rewrites


def check_parity(model: nn.Module, onnx_path: Path, spec: ExportSpec) -> Parity:
    """ORT vs the original PyTorch model on random and photo-like inputs at every check size."""
    sess = parity.session(onnx_path)
    rows = []
    n = trace_batch(spec)
    for i, (h, w) in enumerate(spec.check_sizes):
        for kind, x in (
            ("random", np.concatenate([parity.random_input(h, w, seed=i + k) for k in range(n)])),
            ("image", np.stack([synthetic_image(h, w, seed=i + k) for k in range(n)])),
        ):
            try:
                got = parity.run(sess, x)
            except Exception as e:  # ORT failing at a size the export claims to accept
                hint = " (a dynamic export: try --tile H W)" if spec.dynamic else ""
                raise UserError(
                    f"the exported graph fails in ONNX Runtime at {h}x{w}{hint}: "
                    f"{str(e).strip().splitlines()[0]}"
                ) from e
            with torch.no_grad():
                want = reference_forward(model, torch.from_numpy(x)).numpy()
            if got.shape != want.shape:
                raise UserError(
                    f"the exported graph gives shape {got.shape} at {h}x{w}, PyTorch {want.shape}"
                )
            mx, mean = parity.abs_error(got, want)
            rows.append(ParityCheck([h, w], n, kind, mx, mean))
    worst = max(r.max_abs for r in rows)
    return Parity(
        runtime="onnxruntime CPUExecutionProvider",
        tolerance=PARITY_TOL,
        max_abs=worst,
        mean_abs=float(np.mean([r.mean_abs for r in rows])),
        checks=rows,
        passed=worst <= PARITY_TOL,
    )


def load_merged(
    model_spec: str, adapter_path: str | Path, strength: float = 1.0
) -> tuple[nn.Module, AdapterFile]:
    """Load the base, apply the adapter file (read once; refused for another base), merge;
    at a strength other than 1, its weighted update (adapt merge --strength)."""
    model = load_model(model_spec)
    adapter = AdapterFile.read(adapter_path)
    if strength == 1.0:
        adapter.apply(model)
        merge_lora(model)
    else:
        blend_adapters(model, [(adapter, strength)])
    return model, adapter


def metadata(model: nn.Module, spec: ExportSpec, adapter: AdapterFile | None) -> dict[str, str]:

    info = model.adaptsr_info
    shape = "dynamic" if spec.dynamic else f"{spec.tile[0]}x{spec.tile[1]}"
    return {
        "adaptsr_version": __version__,
        "architecture": info.arch,
        "model": info.name,
        META_SCALE: str(info.scale),
        META_SIZE_REQUIREMENTS: json.dumps(
            {"min_size": spec.min_size, "multiple_of": spec.multiple_of, "shape": shape}
        ),
        META_PRECISION: spec.reduced.name if spec.reduced else "fp32",
        META_IO_PRECISION: spec.reduced.io if spec.reduced else "fp32",
        "merged": "true" if adapter else "false",
        "adapter_fingerprint": adapter.fingerprint if adapter else "",
        "base_fingerprint": adapter.meta.base_fingerprint if adapter else "",
        "rank_summary": json.dumps(adapter.meta.rank_summary()) if adapter else "",
        **({"adapter_strength": repr(spec.strength)} if adapter and spec.strength != 1.0 else {}),
    }


def _set_metadata(proto, props: dict[str, str]) -> None:
    del proto.metadata_props[:]
    for k, v in props.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = k, v


def _progress(enabled: bool):

    return progress_bar(total=0, bar_format="{desc}", enabled=enabled, leave=False)


def _zero_overhead_step(
    final, base: nn.Module, tmp: Path, spec: ExportSpec, rounds: int, max_rounds: int
) -> ZeroOverhead:
    """The merged graph against the base model's export: node for node, then timed."""
    base_proto, _ = export_graph(base, spec)
    if spec.reduced:
        base_proto, _ = convert_to_fp16(base_proto, low=spec.reduced.low, io=spec.reduced.io_type)
    structure = StructureProof(**compare_structure(final, base_proto))
    if not structure.identical:
        differences = "; ".join(structure.differences)
        raise UserError(f"the merged graph differs from the base graph: {differences}")
    base_path, merged_path = tmp / "base.onnx", tmp / "merged.onnx"
    bf16 = spec.reduced is not None and spec.reduced.name == "bf16"
    # ONNX Runtime's CPU provider cannot run bf16: both graphs are timed emulated, alike
    onnx.save(emulate_in_fp32(base_proto) if bf16 else base_proto, base_path)
    onnx.save(emulate_in_fp32(final) if bf16 else final, merged_path)
    x = synthetic_image(*latency_size(spec))[None]
    x = x.astype(np.float16) if spec.fp16_io else x
    latency = compare_latency(merged_path, base_path, x, rounds, max_rounds=max_rounds)
    if bf16:
        latency["runtime"] += ", both graphs bf16 emulated in fp32"
    return ZeroOverhead(structure, record(LatencyProof, latency, "the latency comparison"))


def _shape_record(spec: ExportSpec) -> ExportShape:
    return ExportShape(
        dynamic=spec.dynamic,
        dynamic_batch=spec.dynamic_batch,
        tile=list(spec.tile) if spec.tile else None,
        opset=spec.opset,
        traced_size=list(spec.example),
        checked_sizes=[list(s) for s in spec.check_sizes],
    )


def export_onnx(
    model: nn.Module,
    out: str | Path,
    *,
    dynamic: bool = False,
    tile: tuple[int, int] | None = None,
    opset: int = MIN_OPSET,
    fp16: bool = False,
    dynamic_batch: bool = False,
    bf16: bool = False,
    fp16_io: bool = False,
    check_images: str | Path | None = None,
    adapter: AdapterFile | None = None,
    base: nn.Module | None = None,
    latency_rounds: int = 30,
    latency_max_rounds: int = MAX_ROUNDS,
    force: bool = False,
    progress: bool = False,
) -> ExportReport:
    """Export `model` (merged when `adapter` is given, then `base` is required) to `out`.

    Writes the ONNX file and `<out>.report.json`, or nothing at all when a check fails.
    Returns the report.
    """
    export = plan_export(
        out, dynamic=dynamic, tile=tile, opset=opset, fp16=fp16, dynamic_batch=dynamic_batch,
        latency_rounds=latency_rounds, latency_max_rounds=latency_max_rounds, force=force,
        bf16=bf16, fp16_io=fp16_io, check_images=check_images,
    )  # fmt: skip
    if adapter is not None and base is None:
        raise UserError("a merged export needs the base model for the zero-overhead proof")
    return _run(export, model_shapes(model, export), model, adapter, base, progress)


def run_export(export: ExportPlan, progress: bool = False) -> ExportReport:
    """Run a plan of `plan_export` that names its model (and adapter): open the base, check the
    shapes against it, merge the adapter, export. The plan's checks are not made again."""
    base = load_model(export.model)
    spec = model_shapes(base, export)  # shape errors before the adapter is read
    if export.adapter is None:
        return _run(export, spec, base, None, None, progress)
    merged, adapter = load_merged(export.model, export.adapter, export.strength)
    return _run(export, spec, merged, adapter, base, progress)


def _run(
    export: ExportPlan,
    spec: ExportSpec,
    model: nn.Module,
    adapter: AdapterFile | None,
    base: nn.Module | None,
    progress: bool,
) -> ExportReport:
    """The export pipeline of a checked plan; publishes the model and its report together."""
    out = export.out
    fp16_proof, zero_overhead = None, None
    with scratch_folder(out) as tmp, _progress(progress) as bar:
        bar.set_description_str("exporting with torch.onnx (dynamo)")
        proto, rewrites = export_graph(model, spec)
        fp32_path = tmp / "model.fp32.onnx"
        onnx.save(proto, fp32_path)
        bar.set_description_str("checking parity in ONNX Runtime")
        parity_proof = check_parity(model, fp32_path, spec)
        if not parity_proof.passed:
            hint = " (a dynamic export: try --tile H W)" if spec.dynamic else ""
            raise UserError(
                f"ONNX Runtime output differs from PyTorch by {parity_proof.max_abs:.3g} "
                f"(max abs; allowed {PARITY_TOL:g}){hint}: not written"
            )
        final = proto
        if spec.reduced:
            bar.set_description_str(f"converting to {spec.reduced.name} and checking it")
            tile, least, multiple = spec.tile, spec.min_size, spec.multiple_of
            inputs = check_inputs(spec.check_sizes, spec.check_images, tile, least, multiple)
            final, fp16_proof = fp16_step(proto, fp32_path, tmp, inputs, spec.reduced)
        if adapter is not None:
            bar.set_description_str("exporting the base model and timing merged vs base")
            zero_overhead = _zero_overhead_step(
                final, base, tmp, spec, export.latency_rounds, export.latency_max_rounds
            )
        props = metadata(model, spec, adapter)
        _set_metadata(final, props)
        report = ExportReport(
            onnx=str(out),
            architecture=model.adaptsr_info.arch,
            parity=parity_proof,
            rewrites=list(rewrites),
            fp16=fp16_proof,
            zero_overhead=zero_overhead,
            metadata=props,
            spec=_shape_record(spec),
        )
        # the model, its report and its card are published together, or none is
        outputs = [out, export.report, export.card]
        with atomic_outputs(outputs, export.force) as (tmp_onnx, tmp_json, tmp_card):
            onnx.save(final, tmp_onnx)
            tmp_json.write_text(json.dumps(report.to_json(), indent=2) + "\n")
            card = export_card(model, export.model, adapter, spec.strength, tmp_onnx, out, report)
            tmp_card.write_text(card.text())
    return report
