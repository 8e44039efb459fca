"""Evaluation of a super-resolution model on LR/HR pairs: metrics, tables, saved outputs.

Pairs come from two folders matched by file stem (`--lr DIR --hr DIR`), from one folder in a
paired layout (`--hr DIR` alone: RealSR-style `NAME_HR.png` beside `NAME_LR4.png`, or a DIV2K
root), or from HR images alone, degraded on the fly with a named, seeded degradation. The
layouts and their naming rules are those of adaptsr.adapt.layouts, shared with training.

Every number is computed by adaptsr.serve.metrics (numpy) on the 8-bit rounded output (the
field's convention). With a base model beside the evaluated one (an adapter was given) both are
scored, and so is bicubic upsampling of the LR image, so a table shows what the adaptation bought.

Scoring an ONNX file or an engine needs no torch, as on a deployment machine: torch is imported
only for a PyTorch model, degradations and the perceptual metrics (LPIPS, DISTS, HaarPSI,
MS-GMSD).
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from adaptsr.adapt import layouts
from adaptsr.adapt.eval_report import (
    COMPARE_ROWS,
    Result,
    crops,
    write_compare,
    write_report,
    write_text,
)
from adaptsr.adapt.open import ModelSpec, open_model
from adaptsr.core.errors import UserError
from adaptsr.core.fileio import (
    check_distinct_outputs,
    check_outputs_not_inputs,
    check_outside_inputs,
    check_writable,
)
from adaptsr.core.images import Image, check_header, probe, read_image, write_image
from adaptsr.core.lazy import lazy_import
from adaptsr.core.progress import progress_bar
from adaptsr.core.tiling import tiled_upscale
from adaptsr.serve import metrics
from adaptsr.serve.backends import Backend
from adaptsr.serve.metrics import bicubic_upscale

# torch only for what needs it: a deployed model is scored without it
torch = lazy_import("torch")
torch_backend = lazy_import("adaptsr.adapt.backend")
degradations = lazy_import("adaptsr.adapt.degradations")
devices = lazy_import("adaptsr.adapt.devices")
perceptual_metrics = lazy_import("adaptsr.adapt.metrics")


@dataclass(frozen=True)
class Pair:
    name: str  # the HR file stem: saved outputs and report rows use it
    hr: Path
    lr: Path | None  # None: LR made from HR by a degradation


# ---------------------------------------------------------------------------------------------
# finding pairs


def find_pairs(
    hr_dir: str | os.PathLike, lr_dir: str | os.PathLike | None, scale: int
) -> list[Pair]:
    """Pairs sorted by name (adaptsr.adapt.layouts). lr_dir None: every image of hr_dir, HR-only.
    lr_dir == hr_dir: a folder of pairs in a detected layout (RealSR-style, DIV2K-style root)."""
    if lr_dir is None:
        _, items = layouts.detect(hr_dir, scale, among=(layouts.HR_ONLY,))
    elif Path(lr_dir).resolve() == Path(hr_dir).resolve():
        _, items = layouts.detect(hr_dir, scale)
        if any(lr is None for _, lr in items):
            kinds = " or ".join(lay.name for lay in layouts.LAYOUTS if lay.paired)
            raise UserError(
                f"no LR images: {hr_dir} holds no {kinds} pairs (e.g. NAME_HR.png with "
                f"NAME_LR{scale}.png); give --lr DIR, or --degradation bicubic|realesrgan for "
                "HR-only evaluation"
            )
    else:
        _, items = layouts.pair_folders(hr_dir, lr_dir, scale)
    return [Pair(hr.stem, hr, lr) for hr, lr in items]


def hr_size_for(lr_w: int, lr_h: int, hr_w: int, hr_h: int, scale: int) -> bool:
    """True when HR is LR x scale, allowing the standard mod-crop remainder (< scale px)."""
    return 0 <= hr_w - lr_w * scale < scale and 0 <= hr_h - lr_h * scale < scale


def size_mismatch(pair: Pair, lr_wh, hr_wh, scale: int) -> str:
    return (
        f"{pair.lr}: LR {lr_wh[0]}x{lr_wh[1]} times {scale} does not match HR "
        f"{hr_wh[0]}x{hr_wh[1]} ({pair.hr.name})"
    )


def too_small(pair: Pair, hw: tuple[int, int], scale: int) -> str | None:
    """Why an HR image cannot be scored, or None: it is cropped to a multiple of the scale, the
    metrics crop `scale` px at each border and SSIM's window must fit in what is left."""
    least = -(-metrics.least_side(scale) // scale) * scale  # the next multiple of the scale
    if min(hw) < least:
        return (
            f"{pair.hr}: {hw[1]}x{hw[0]} is too small to score at x{scale} (at least {least} px "
            f"a side: SSIM's {metrics.SSIM_WINDOW}-px window inside a {scale}-px border)"
        )
    return None


def header_size(path: Path) -> tuple[int, int] | None:
    """(height, width) upright, from the header; None when the header cannot tell or the file
    is refused (decoding decides then: skipped, or fatal with --strict)."""
    header = probe(path)
    try:
        check_header(path, header)
    except UserError:
        return None
    return header.upright_size if header is not None else None


def modcrop(rgb: np.ndarray, scale: int) -> np.ndarray:
    h, w = rgb.shape[:2]
    return rgb[: h - h % scale, : w - w % scale]


def have_torch() -> bool:
    """Whether torch can be imported (the training install) or not (the deployment install)."""
    try:
        return importlib.util.find_spec("torch") is not None
    except ImportError:
        return False


def check_sizes(pairs: list[Pair], scale: int) -> None:
    """Fail before any inference if a pair's sizes disagree with the scale (headers only)."""
    for pair in pairs:
        if pair.lr is None:
            continue
        lr_hw, hr_hw = header_size(pair.lr), header_size(pair.hr)
        if not (lr_hw and hr_hw):
            continue  # unreadable: skipped or fatal (--strict) when decoded
        lr_wh, hr_wh = lr_hw[::-1], hr_hw[::-1]
        if not hr_size_for(*lr_wh, *hr_wh, scale):
            raise UserError(size_mismatch(pair, lr_wh, hr_wh, scale))


# ---------------------------------------------------------------------------------------------
# upscaling


def make_degrade(kind, scale: int, seed: int, device: str = "cpu") -> Callable:
    """degrade(hr, index) -> LR (8-bit levels, like an LR file) for HR-only evaluation.

    Each image gets its own Degrader seeded with seed + index (its place in the sorted list),
    so an image's LR does not depend on which other images are in the folder.
    """
    Degrader = degradations.Degrader
    # checks kind (a preset name or a degradation file, read once) and scale before any work
    settings = Degrader(kind, scale, seed, device).settings

    def degrade(hr: np.ndarray, index: int) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(hr, dtype=np.float32)).permute(2, 0, 1)[None]
        with torch.no_grad():
            lr = Degrader(settings, scale, seed + index, device)(x)
        return lr[0].permute(1, 2, 0).float().cpu().numpy()

    return degrade


class Upscaler:
    """A model as an image function, through the core tiler (adaptsr.core.tiling).

    tile 0 runs each image whole (padded to the model's size rule), so metrics do not depend on
    tiling; a positive tile bounds memory on large images.
    """

    def __init__(self, model: Backend | torch.nn.Module, device: str = "auto", tile: int = 0):
        # any backend (PyTorch, ONNX Runtime, TensorRT) is scored through the same tiler; a
        # bare module (study, demo) becomes a PyTorch one
        if isinstance(model, Backend):
            self.backend = model
        else:
            self.backend = torch_backend.TorchBackend(model, device=device)
        self.tile = tile

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        b = self.backend
        chw = np.ascontiguousarray(rgb.transpose(2, 0, 1), dtype=np.float32)
        out = tiled_upscale(b.run, chw, b.scale, b.rule, tile=self.tile)
        return np.clip(out.transpose(1, 2, 0), 0.0, 1.0)


# ---------------------------------------------------------------------------------------------
# evaluation


def score(
    sr: np.ndarray, hr: np.ndarray, crop: int, perceptual: dict[str, Callable], gray: bool = False
) -> dict:
    """All metrics of one output against its HR image (gray: the HR file is grayscale)."""
    y_sr, y_hr = metrics.y_pair(sr, hr, crop, gray)
    out = {"psnr_y": metrics.psnr_from_y(y_sr, y_hr), "ssim_y": metrics.ssim_from_y(y_sr, y_hr)}
    for name, fn in perceptual.items():
        value = fn(sr, hr, crop)
        if value is not None:  # None: too small for this index, left out of its mean
            out[name] = float(value)
    return out


def _load_pair(
    pair: Pair, index: int, scale: int, degrade: Callable | None, strict: bool
) -> tuple[np.ndarray, np.ndarray, bool] | str:
    """(HR, LR, whether the HR file is gray), HR cropped to LR x scale; or why the pair is
    skipped (strict: raised instead). A size that disagrees with the scale is always fatal."""
    try:
        hr_image = read_image(pair.hr)
        lr = read_image(pair.lr).rgb if pair.lr is not None else None
    except UserError as e:
        if strict:
            raise
        return str(e)
    hr = hr_image.rgb
    small = too_small(pair, hr.shape[:2], scale)
    if small:
        if strict:
            raise UserError(small)
        return small
    if lr is None:
        hr = modcrop(hr, scale)
        return hr, degrade(hr, index), hr_image.gray
    (lh, lw), (hh, hw) = lr.shape[:2], hr.shape[:2]
    if not hr_size_for(lw, lh, hw, hh, scale):
        raise UserError(size_mismatch(pair, (lw, lh), (hw, hh), scale))
    return hr[: lh * scale, : lw * scale], lr, hr_image.gray


def evaluate(
    model,
    pairs: list[Pair],
    scale: int,
    *,
    base=None,
    degrade: Callable[[np.ndarray, int], np.ndarray] | None = None,
    device: str = "auto",
    tile: int = 0,
    baselines: bool = True,
    perceptual: dict[str, Callable] | None = None,
    save_dir: Path | None = None,
    force: bool = False,
    strict: bool = False,
    compare_rows: int = 0,
    progress: bool = True,
) -> Result:
    """Score `model` (and `base`, and bicubic) on every pair: each a serve Backend (open_model:
    PyTorch, an ONNX file or an engine), or a PyTorch module run on `device`.

    degrade(hr, index) makes the LR image of an HR-only pair. Unreadable images are skipped
    (listed in the result) unless strict; a size that disagrees with the scale is always fatal.
    """
    perceptual = perceptual or {}
    primary = "adapted" if base is not None else "model"
    methods = (["bicubic"] if baselines else []) + (["base"] if base is not None else [])
    result = Result(methods=[*methods, primary], scale=scale)
    runners = {primary: Upscaler(model, device, tile)}
    if base is not None:
        runners["base"] = Upscaler(base, device, tile)
    check_sizes(pairs, scale)
    if save_dir is not None:
        for pair in pairs:
            path = Path(save_dir) / f"{pair.name}.png"
            if path.exists() and not force:
                raise UserError(f"{path} already exists (use --force to overwrite)")
    bar = progress_bar(pairs, desc="eval", unit="img", enabled=progress)
    for index, pair in enumerate(bar):
        loaded = _load_pair(pair, index, scale, degrade, strict)
        if isinstance(loaded, str):  # unreadable or too small: why, for the report
            result.skipped.append({"name": pair.name, "reason": loaded})
            continue
        hr, lr, gray = loaded
        outputs = {m: run(lr) for m, run in runners.items()}
        if baselines or compare_rows:
            bicubic = bicubic_upscale(lr, scale)
            if baselines:
                outputs["bicubic"] = bicubic
        row: dict = {"name": pair.name}
        for method in result.methods:
            scores = score(outputs[method], hr, scale, perceptual, gray=gray)
            for k, v in scores.items():
                row[f"{method}_{k}"] = v
        result.rows.append(row)
        bar.set_postfix_str(f"psnr_y {row[f'{primary}_psnr_y']:.2f}")
        if save_dir is not None:
            out = Image(rgb=outputs[primary], alpha=None, bit_depth=8, gray=False)
            write_image(out, Path(save_dir) / f"{pair.name}.png", force=force)
        if len(result.compare) < compare_rows:
            panels = [bicubic, *(outputs[m] for m in runners if m != primary), outputs[primary]]
            result.compare.append((pair.name, crops([*panels, hr])))
    if not result.rows:
        first = result.skipped[0]["reason"] if result.skipped else "no pairs"
        raise UserError(f"no image could be evaluated ({len(result.skipped)} skipped: {first})")
    return result


# ---------------------------------------------------------------------------------------------
# `adapt eval`: one request, planned once, scored, written


@dataclass(frozen=True)
class EvalOutputs:
    """Where an evaluation writes: SR images, JSON report, per-image CSV, comparison PNG."""

    save: str | None = None
    report: str | None = None
    csv: str | None = None
    compare: str | None = None

    def by_flag(self) -> dict[str, str | None]:
        return {"--save": self.save, "--report": self.report, "--csv": self.csv,
                "--compare": self.compare}  # fmt: skip

    def check(self, force: bool) -> None:
        """Before any work: one place each, files that may be written, a .png comparison."""
        check_distinct_outputs(self.by_flag())
        for path in (self.report, self.csv, self.compare):
            if path:
                check_writable(path, force)
        if self.compare and not self.compare.lower().endswith(".png"):
            raise UserError(f"--compare {self.compare}: the side-by-side image is a .png file")

    def write(self, result: Result, force: bool) -> None:
        if self.report:
            write_report(result, Path(self.report), force)
        if self.csv:
            write_text(Path(self.csv), result.csv_text(), force)
        if self.compare:
            write_compare(result, Path(self.compare), force)


@dataclass(frozen=True)
class EvalRequest:
    """One evaluation as `adapt eval` asks for it: the model, the images, how to score."""

    model: ModelSpec
    hr: str
    lr: str | None = None  # None: hr holds the pairs, or --degradation makes the LR images
    degradation: str | None = None
    seed: int = 0
    scale: int | None = None  # None: the model's
    outputs: EvalOutputs = field(default_factory=EvalOutputs)
    tile: int = 0
    device: str = "auto"
    provider: str = "auto"
    baselines: bool = True
    perceptual: bool = True
    strict: bool = False
    force: bool = False
    progress: bool = True


@dataclass(frozen=True)
class EvalPlan:
    """An EvalRequest checked and opened (plan_evaluation), trusted by run_evaluation."""

    request: EvalRequest
    model: Backend  # the scored model: the adapted one when an adapter was given
    base: Backend | None  # the model without its adapter, scored beside it
    pairs: list[Pair]
    scale: int
    lr: str | None  # the LR folder (hr itself for a folder of pairs); None: degraded from HR
    device: str  # where PyTorch work runs (perceptual metrics, degradations)


def plan_evaluation(req: EvalRequest) -> EvalPlan:
    """Every check before any inference: device, outputs, the model and its scale, the pairs,
    outputs that would replace an input. The adapted model is opened last."""
    device = devices.pick_device(req.device) if have_torch() else "cpu"
    if req.degradation and not have_torch():
        raise UserError(
            "--degradation needs torch (the training install: pip install adaptsr); "
            "without it, score real pairs with --lr"
        )
    if req.lr and req.degradation:
        raise UserError("give either --lr (real pairs) or --degradation (HR-only), not both")
    req.outputs.check(req.force)
    spec = req.model
    base = open_model(spec.base(), device=device, provider=req.provider)
    scale = req.scale or base.scale
    if scale != base.scale:
        raise UserError(f"--scale {scale} does not match the model's scale (x{base.scale})")
    lr = req.hr if req.lr is None and req.degradation is None else req.lr
    pairs = find_pairs(req.hr, lr, scale)  # lr == hr: a folder of pairs, layout detected
    files = [f for pair in pairs for f in (pair.hr, pair.lr) if f is not None]
    check_outputs_not_inputs(  # whatever --force says: the ground truth is never replaced
        req.outputs.by_flag(),
        [req.hr, lr, spec.path, spec.adapter, *files, *{f.parent for f in files}],
    )
    if req.outputs.compare:  # an image among the images would be scored as one by the next run
        check_outside_inputs(req.outputs.compare, [req.hr, lr, *{f.parent for f in files}],
                             "--compare")  # fmt: skip
    if spec.adapter is None:
        return EvalPlan(req, base, None, pairs, scale, lr, device)
    model = open_model(spec, device=device, provider=req.provider)
    return EvalPlan(req, model, base, pairs, scale, lr, device)


def run_evaluation(req: EvalRequest) -> Result:
    """`adapt eval`: plan, score the model (its base, bicubic), write the outputs asked for."""
    plan = plan_evaluation(req)
    degrade = make_degrade(req.degradation, plan.scale, req.seed) if req.degradation else None
    fns, notes = _perceptual(plan.device) if req.perceptual else ({}, [])
    out = req.outputs
    result = evaluate(
        plan.model,
        plan.pairs,
        plan.scale,
        base=plan.base,
        degrade=degrade,
        device=plan.device,
        tile=req.tile,
        baselines=req.baselines,
        perceptual=fns,
        save_dir=Path(out.save) if out.save else None,
        force=req.force,
        strict=req.strict,
        compare_rows=COMPARE_ROWS if out.compare else 0,
        progress=req.progress,
    )
    result.notes[:0] = notes
    result.info = {**_settings(plan), **result.info}
    out.write(result, req.force)
    return result


def _perceptual(device: str) -> tuple[dict[str, Callable], list[str]]:
    """LPIPS, DISTS, HaarPSI and MS-GMSD where torch, piq and their weights are; a note for
    each that is not."""
    if not have_torch():
        return {}, [
            "LPIPS and DISTS skipped: they need torch (pip install 'adaptsr[metrics]')",
            "HaarPSI and MS-GMSD skipped: they need torch and piq (pip install 'adaptsr[metrics]')",
        ]
    return perceptual_metrics.perceptual_metrics(perceptual_metrics.PERCEPTUAL_NAMES, device)


def _settings(plan: EvalPlan) -> dict:
    """The settings echoed at the top of the JSON report."""
    req = plan.request
    return {
        "model": (plan.base or plan.model).name,  # the spec, or the deployed file
        "adapter": req.model.adapter,
        "artifact": plan.model.kind,  # pytorch, or onnx / tensorrt: the deployed file
        "scale": plan.scale,
        "hr": str(req.hr),
        "lr": None if req.degradation else str(plan.lr),
        "degradation": req.degradation,
        "seed": req.seed if req.degradation else None,
        "metrics": metrics.CONVENTIONS,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
