"""Evaluation of a super-resolution model on LR/HR pairs: metrics, tables, saved outputs.

Pairs come from two folders matched by file stem (`--lr DIR --hr DIR`), from one folder in a
paired layout (`--hr DIR` alone: RealSR-style `NAME_HR.png` beside `NAME_LR4.png`, or a DIV2K
root), or from HR images alone, degraded on the fly with a named, seeded degradation. The
layouts and their naming rules are those of adaptsr.adapt.layouts, shared with training.

Every number is computed by adaptsr.adapt.metrics on the 8-bit rounded output (the field's
convention). With a base model beside the evaluated one (an adapter was given) both are scored,
and so is bicubic upsampling of the LR image, so a table shows what the adaptation bought.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from adaptsr.adapt import layouts, metrics
from adaptsr.adapt.data import header_size, modcrop
from adaptsr.core.errors import UserError
from adaptsr.core.images import Image, read_image, write_image

COMPARE_ROWS = 4  # images shown in the side-by-side PNG
COMPARE_CROP = 96  # HR pixels per crop side


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
    """Why an HR image cannot be scored, or None: the metrics crop `scale` px at each border,
    so a side needs 3 x scale px (an LR side of 3 px) to leave any pixel."""
    least = 3 * scale
    if min(hw) < least:
        return f"{pair.hr}: {hw[1]}x{hw[0]} is too small to score at x{scale} (at least {least} px)"
    return None


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


def bicubic_upscale(lr: np.ndarray, scale: int) -> np.ndarray:
    """Bicubic upsampling as MATLAB's imresize (the published bicubic baselines use it)."""
    import torch

    from adaptsr.adapt.imresize import imresize

    x = torch.from_numpy(np.ascontiguousarray(lr, dtype=np.float64)).permute(2, 0, 1)
    out = imresize(x, scale).permute(1, 2, 0).numpy()
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def make_degrade(kind: str, scale: int, seed: int, device: str = "cpu") -> Callable:
    """degrade(hr, index) -> LR (8-bit levels, like an LR file) for HR-only evaluation.

    Each image gets its own Degrader seeded with seed + index (its place in the sorted list),
    so an image's LR does not depend on which other images are in the folder.
    """
    import torch

    from adaptsr.adapt.degradations import Degrader

    Degrader(kind, scale, seed, device)  # checks kind and scale before any work

    def degrade(hr: np.ndarray, index: int) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(hr, dtype=np.float32)).permute(2, 0, 1)[None]
        with torch.no_grad():
            lr = Degrader(kind, scale, seed + index, device)(x)
        return lr[0].permute(1, 2, 0).float().cpu().numpy()

    return degrade


class Upscaler:
    """A model as an image function, through the core tiler (adaptsr.core.tiling).

    tile 0 runs each image whole (padded to the model's size rule), so metrics do not depend on
    tiling; a positive tile bounds memory on large images.
    """

    def __init__(self, model, device: str = "auto", tile: int = 0):
        from adaptsr.adapt.backend import TorchBackend
        from adaptsr.serve.backends import Backend

        # A deployed artifact (ONNX Runtime, TensorRT) is scored through the same tiler.
        self.backend = model if isinstance(model, Backend) else TorchBackend(model, device=device)
        self.tile = tile

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        from adaptsr.core.tiling import tiled_upscale

        b = self.backend
        chw = np.ascontiguousarray(rgb.transpose(2, 0, 1), dtype=np.float32)
        out = tiled_upscale(b.run, chw, b.scale, b.rule, tile=self.tile)
        return np.clip(out.transpose(1, 2, 0), 0.0, 1.0)


# ---------------------------------------------------------------------------------------------
# evaluation


@dataclass
class Result:
    methods: list[str]  # row order of the table; the last one is the evaluated model
    rows: list[dict] = field(default_factory=list)  # per image: name, <method>_<metric>
    skipped: list[dict] = field(default_factory=list)  # name, reason
    notes: list[str] = field(default_factory=list)
    info: dict = field(default_factory=dict)  # settings echoed into the report
    compare: list[tuple[str, list[np.ndarray]]] = field(default_factory=list)

    @property
    def primary(self) -> str:
        return self.methods[-1]

    def metric_names(self) -> list[str]:
        names = []
        for row in self.rows:
            for key in row:
                if key.startswith(self.primary + "_"):
                    name = key[len(self.primary) + 1 :]
                    if name not in names:
                        names.append(name)
        return names

    def means(self) -> dict[str, dict[str, float]]:
        out: dict[str, dict[str, float]] = {}
        for method in self.methods:
            out[method] = {}
            for metric in self.metric_names():
                values = [r[f"{method}_{metric}"] for r in self.rows if f"{method}_{metric}" in r]
                if values:
                    out[method][metric] = float(np.mean(values))
        return out

    def report(self) -> dict:
        means = self.means()
        images = []
        for row in self.rows:
            item = {"name": row["name"]}
            item.update({m: row[f"{self.primary}_{m}"] for m in self.metric_names()})
            item.update({k: v for k, v in row.items() if k != "name" and not self._primary(k)})
            images.append(item)
        return {
            **self.info,
            "count": len(self.rows),
            "mean": means.get(self.primary, {}),
            "baselines": {m: means[m] for m in self.methods[:-1]},
            "images": images,
            "skipped": self.skipped,
            "notes": self.notes,
        }

    def _primary(self, key: str) -> bool:
        return key.startswith(self.primary + "_")

    def csv_text(self) -> str:
        keys = ["name"] + [f"{m}_{k}" for m in self.methods for k in self.metric_names()]
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(keys)
        for row in self.rows:
            writer.writerow([_fmt(row.get(k, "")) for k in keys])
        return buf.getvalue()

    def table(self) -> str:
        names = self.metric_names()
        heads = {"psnr_y": "PSNR-Y", "ssim_y": "SSIM-Y", "lpips": "LPIPS", "dists": "DISTS"}
        width = max(8, *(len(m) for m in self.methods))
        lines = [f"{'':<{width}}" + "".join(f"{heads.get(n, n):>10}" for n in names)]
        for method, values in self.means().items():
            cells = "".join(f"{_fmt(values[n]) if n in values else '-':>10}" for n in names)
            lines.append(f"{method:<{width}}{cells}")
        return "\n".join(lines)


def _fmt(v) -> str:
    if isinstance(v, float):
        return "inf" if math.isinf(v) else f"{v:.4f}"
    return str(v)


def score(
    sr: np.ndarray, hr: np.ndarray, crop: int, perceptual: dict[str, Callable], gray: bool = False
) -> dict:
    """All metrics of one output against its HR image (gray: the HR file is grayscale)."""
    y_sr, y_hr = metrics.y_pair(sr, hr, crop, gray)
    out = {"psnr_y": metrics.psnr_from_y(y_sr, y_hr), "ssim_y": metrics.ssim_from_y(y_sr, y_hr)}
    for name, fn in perceptual.items():
        out[name] = float(fn(sr, hr, crop))
    return out


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
    """Score `model` (and `base`, and bicubic) on every pair; `model` may also be a serve
    Backend (an ONNX file or an engine), scored the same way.

    degrade(hr, index) makes the LR image of an HR-only pair. Unreadable images are skipped
    (listed in the result) unless strict; a size that disagrees with the scale is always fatal.
    """
    from tqdm import tqdm

    perceptual = perceptual or {}
    primary = "adapted" if base is not None else "model"
    methods = (["bicubic"] if baselines else []) + (["base"] if base is not None else [])
    result = Result(methods=[*methods, primary])
    runners = {primary: Upscaler(model, device, tile)}
    if base is not None:
        runners["base"] = Upscaler(base, device, tile)
    check_sizes(pairs, scale)
    if save_dir is not None:
        for pair in pairs:
            path = Path(save_dir) / f"{pair.name}.png"
            if path.exists() and not force:
                raise UserError(f"{path} already exists (use --force to overwrite)")
    bar = tqdm(pairs, desc="eval", unit="img", file=sys.stderr, disable=not progress)
    for index, pair in enumerate(bar):
        try:
            hr_image = read_image(pair.hr)
            hr = hr_image.rgb
            lr = read_image(pair.lr).rgb if pair.lr is not None else None
        except UserError as e:
            if strict:
                raise
            result.skipped.append({"name": pair.name, "reason": str(e)})
            continue
        small = too_small(pair, hr.shape[:2], scale)
        if small:
            if strict:
                raise UserError(small)
            result.skipped.append({"name": pair.name, "reason": small})
            continue
        if lr is None:
            hr = modcrop(hr, scale)
            lr = degrade(hr, index)
        else:
            (lh, lw), (hh, hw) = lr.shape[:2], hr.shape[:2]
            if not hr_size_for(lw, lh, hw, hh, scale):
                raise UserError(size_mismatch(pair, (lw, lh), (hw, hh), scale))
            hr = hr[: lh * scale, : lw * scale]
        outputs = {m: run(lr) for m, run in runners.items()}
        if baselines or compare_rows:
            bicubic = bicubic_upscale(lr, scale)
            if baselines:
                outputs["bicubic"] = bicubic
        row: dict = {"name": pair.name}
        for method in result.methods:
            scores = score(outputs[method], hr, scale, perceptual, gray=hr_image.gray)
            for k, v in scores.items():
                row[f"{method}_{k}"] = v
        result.rows.append(row)
        bar.set_postfix_str(f"psnr_y {row[f'{primary}_psnr_y']:.2f}")
        if save_dir is not None:
            out = Image(rgb=outputs[primary], alpha=None, bit_depth=8, gray=False)
            write_image(out, Path(save_dir) / f"{pair.name}.png", force=force)
        if len(result.compare) < compare_rows:
            panels = [bicubic, *(outputs[m] for m in runners if m != primary), outputs[primary]]
            result.compare.append((pair.name, _crops([*panels, hr])))
    if not result.rows:
        first = result.skipped[0]["reason"] if result.skipped else "no pairs"
        raise UserError(f"no image could be evaluated ({len(result.skipped)} skipped: {first})")
    return result


# ---------------------------------------------------------------------------------------------
# side-by-side crops


def _crops(images: list[np.ndarray]) -> list[np.ndarray]:
    """The same window of every image, where the HR (last) image has the most texture."""
    hr = images[-1]
    h, w = hr.shape[:2]
    c = min(COMPARE_CROP, h, w)
    gray = hr.mean(axis=2)
    best, where = -1.0, (0, 0)
    step = max(1, c // 2)
    for y in range(0, h - c + 1, step):
        for x in range(0, w - c + 1, step):
            v = float(gray[y : y + c, x : x + c].var())
            if v > best:
                best, where = v, (y, x)
    y, x = where
    return [img[y : y + c, x : x + c] for img in images]


def compare_image(rows: list[tuple[str, list[np.ndarray]]], labels: list[str]) -> np.ndarray:
    """One PNG-ready RGB uint8 grid: a labelled column per method, a row per image."""
    import cv2

    c = max(crop.shape[0] for _, crops in rows for crop in crops)
    zoom = max(1, 192 // c)
    side, gap, head = c * zoom, 4, 22
    n = len(labels)
    grid = np.full((head + len(rows) * (side + gap), n * (side + gap) - gap, 3), 255, np.uint8)
    for j, label in enumerate(labels):
        cv2.putText(
            grid, label, (j * (side + gap) + 4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1
        )
    for i, (_, crops) in enumerate(rows):
        top = head + i * (side + gap)
        for j, crop in enumerate(crops):
            tile = np.repeat(np.repeat(crop, zoom, axis=0), zoom, axis=1)
            tile = (np.clip(tile, 0, 1) * 255 + 0.5).astype(np.uint8)
            left = j * (side + gap)
            grid[top : top + tile.shape[0], left : left + tile.shape[1]] = tile
    return grid


def compare_labels(result: Result) -> list[str]:
    has_base = "base" in result.methods
    return ["bicubic", *(["base", "adapted"] if has_base else ["model"]), "HR"]


# ---------------------------------------------------------------------------------------------
# writing


def write_text(path: Path, text: str, force: bool) -> None:
    from adaptsr.core.fileio import atomic_output

    with atomic_output(path, force=force) as tmp:
        tmp.write_text(text)


def write_report(result: Result, path: Path, force: bool) -> None:
    def clean(v):  # JSON has no inf
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, list):
            return [clean(x) for x in v]
        return v

    write_text(path, json.dumps(clean(result.report()), indent=2) + "\n", force)


def write_compare(result: Result, path: Path, force: bool) -> None:
    import cv2

    from adaptsr.core.fileio import atomic_output

    grid = compare_image(result.compare, compare_labels(result))
    ok, buf = cv2.imencode(".png", grid[:, :, ::-1])
    if not ok:
        raise UserError(f"cannot encode {path}")
    with atomic_output(path, force=force) as tmp:
        tmp.write_bytes(buf.tobytes())
