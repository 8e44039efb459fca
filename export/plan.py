"""The plan of an ONNX export: every check that needs no model, made once before any work.

`plan_export` refuses what cannot be exported (outputs that exist without --force, that are
inputs or sit in an unusable folder, a name that is not .onnx, an opset out of range, no shape or
two); `adaptsr.export.onnx` runs an `ExportPlan` without checking it again. The checks against
the model's own size rules need the model and run once when it is opened. No torch here.
"""

from __future__ import annotations

import contextlib
import math
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from adaptsr.core.artifacts import model_card_path
from adaptsr.core.errors import UserError
from adaptsr.core.fileio import (
    check_outputs_not_inputs,
    check_outside_inputs,
    check_writable,
    describe_os_error,
    partial_folder,
    remove_stale_partials,
)
from adaptsr.core.lazy import lazy_import
from adaptsr.export.fp16_proof import check_image_files
from adaptsr.serve.timing import MAX_ROUNDS

onnx = lazy_import("onnx")
models = lazy_import("adaptsr.adapt.models")  # torch: only to check a named base's weights

MIN_OPSET = 18  # the dynamo exporter's oldest


def report_path(onnx_path: str | Path) -> Path:
    """The export report of `onnx_path`: NAME.onnx -> NAME.report.json (the one spelling)."""
    return Path(onnx_path).with_suffix(".report.json")


@dataclass(frozen=True)
class ExportPlan:
    """A checked export: where it writes, the graph's shape options and the proof's rounds.
    `model` and `adapter` name what the command opens (None when the caller holds the model)."""

    out: Path
    dynamic: bool
    tile: tuple[int, int] | None
    opset: int = MIN_OPSET
    fp16: bool = False
    dynamic_batch: bool = False
    latency_rounds: int = 30
    latency_max_rounds: int = MAX_ROUNDS
    force: bool = False
    model: str | None = None
    adapter: str | None = None
    strength: float = 1.0  # the adapter's weight when merged (0: the base, 1: as trained)
    bf16: bool = False  # bf16 instead of fp16 (fp32 islands alike)
    fp16_io: bool = False  # the fp16 graph's inputs and outputs in fp16
    check_images: Path | None = None  # the fp16/bf16 check also runs on these images

    @property
    def report(self) -> Path:
        return report_path(self.out)

    @property
    def card(self) -> Path:
        return model_card_path(self.out)


def check_shape_options(dynamic: bool, tile: tuple[int, int] | None, opset: int) -> None:
    """The opset range and exactly one of --dynamic and --tile."""
    if opset < MIN_OPSET:
        raise UserError(f"opset {opset} is too old: the dynamo exporter needs {MIN_OPSET} or newer")
    newest = onnx.defs.onnx_opset_version()
    if opset > newest:
        raise UserError(f"opset {opset} is newer than the installed onnx knows (at most {newest})")
    if dynamic and tile:
        raise UserError("choose either --dynamic or --tile H W, not both")
    if not dynamic and not tile:
        raise UserError("choose the input shape: --dynamic (any height/width) or --tile H W")


def plan_export(
    out: str | Path,
    *,
    model: str | None = None,
    adapter: str | None = None,
    dynamic: bool = False,
    tile: tuple[int, int] | None = None,
    opset: int = MIN_OPSET,
    fp16: bool = False,
    dynamic_batch: bool = False,
    latency_rounds: int = 30,
    latency_max_rounds: int = MAX_ROUNDS,
    force: bool = False,
    strength: float | None = None,
    allow_random_base: bool = False,
    bf16: bool = False,
    fp16_io: bool = False,
    check_images: str | Path | None = None,
) -> ExportPlan:
    """Every check of an export that needs no model, in the order a user meets them; a `model`
    with random weights (a configuration without its weights fetched) only if allowed."""
    out = Path(out)
    if model is not None:
        models.check_base_weights(model, allow_random_base)
    outputs = {"--out": out, "the report": report_path(out), "the model card": model_card_path(out)}
    check_outputs_not_inputs(outputs, [model, adapter])
    for path in outputs.values():
        check_writable(path, force)
    if out.suffix.lower() != ".onnx":
        raise UserError(f"{out}: choose a .onnx file name")
    tile = (int(tile[0]), int(tile[1])) if tile else None
    check_shape_options(dynamic, tile, opset)
    if strength is not None and not adapter:
        raise UserError("--strength needs --merged --adapter (the weight of the adapter's update)")
    if strength is not None and not math.isfinite(strength):
        raise UserError(f"--strength must be a finite number, got {strength}")
    fp16 = fp16 or fp16_io  # --fp16-io: the fp16 graph with fp16 inputs and outputs
    check_reduced(fp16, bf16, fp16_io, opset, check_images)
    for flag, path in outputs.items():  # not among the images a next export checks
        check_outside_inputs(path, [check_images], flag)
    return ExportPlan(
        out, dynamic, tile, opset, fp16, dynamic_batch, latency_rounds, latency_max_rounds,
        force, model, adapter, 1.0 if strength is None else float(strength), bf16, fp16_io,
        Path(check_images) if check_images is not None else None,
    )  # fmt: skip


BF16_OPSET = 22  # ONNX Conv takes bfloat16 from opset 22


def check_reduced(fp16: bool, bf16: bool, fp16_io: bool, opset: int, check_images) -> None:
    """--fp16, --bf16, --fp16-io and --check-images together: one reduced precision, bf16 at an
    opset whose Conv takes it, and a folder of readable images (the first files checked)."""
    if fp16_io and bf16:
        raise UserError("--fp16-io makes the fp16 graph's inputs and outputs fp16: drop --bf16")
    if fp16 and bf16:
        raise UserError("choose either --fp16 or --bf16, not both")
    if bf16 and opset < BF16_OPSET:
        raise UserError(
            f"--bf16 needs --opset {BF16_OPSET} or newer (ONNX Conv takes bfloat16 from opset "
            f"{BF16_OPSET}), got {opset}"
        )
    if check_images is not None:
        if not (fp16 or bf16):
            raise UserError("--check-images checks the fp16 or bf16 graph: add --fp16 or --bf16")
        check_image_files(check_images)


@contextlib.contextmanager
def scratch_folder(out: Path) -> Iterator[Path]:
    """A folder beside `out` for the export's intermediate graphs (as large as the model), named
    as core.fileio names partial files: removed at the end, and one that a killed export left is
    removed by the next export to `out` (not left in the system's temporary folder)."""
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_partials(out)
        folder = partial_folder(out)
    except OSError as e:
        raise UserError(f"cannot write {out}: {describe_os_error(e)}") from e
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)
