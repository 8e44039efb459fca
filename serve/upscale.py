"""Upscale image files through a backend: colour through the model, alpha bicubic, bit depth kept.

Files are processed one by one; a file that cannot be read or written is reported and skipped so
that the rest of a folder still finishes. Existing outputs are skipped unless `force` is given,
so rerunning an interrupted folder resumes where it stopped.

A run is checked once, by plan_upscale (inputs, outputs, the model, the tiling options), and
run_upscale trusts the plan: the tiling options are never checked again, and each distinct
input size gets its tile layout once.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from adaptsr.core.errors import UserError
from adaptsr.core.fileio import (
    atomic_output,
    check_output_folder,
    check_outside_inputs,
    check_writable,
)
from adaptsr.core.images import (
    Image,
    check_output_sizes,
    encode_pixels,
    file_layout,
    file_pixels,
    is_image_file,
    list_images,
    read_image,
)
from adaptsr.core.progress import progress_bar
from adaptsr.core.tiling import (
    TileChoice,
    TilePlan,
    check_batch,
    choose_tile,
    layout_tiles,
    tiled_upscale,
    upscale_bands,
)
from adaptsr.serve.backends import Backend

ALPHA_MARGIN = 4  # input rows of context for a band of bicubic alpha (its taps reach 2)


def upscale_image(
    backend: Backend,
    image: Image,
    tile: int | None = None,
    overlap: int | None = None,
    batch: int = 1,
) -> Image:
    """The image upscaled by the backend's factor (RGB through the model, alpha bicubic)."""
    s = backend.scale
    chw = np.ascontiguousarray(image.rgb.transpose(2, 0, 1))
    out = tiled_upscale(backend.run, chw, s, backend.rule, tile=tile, overlap=overlap, batch=batch)
    rgb = np.clip(out.transpose(1, 2, 0), 0.0, 1.0)
    if image.gray:  # a gray picture stays gray, whatever colour cast the model adds
        rgb = np.repeat(rgb.mean(axis=2, keepdims=True), 3, axis=2)
    alpha = None
    if image.alpha is not None:
        h, w = image.alpha.shape
        alpha = cv2.resize(image.alpha, (w * s, h * s), interpolation=cv2.INTER_CUBIC)
        alpha = np.clip(alpha, 0.0, 1.0)
    rgb = np.ascontiguousarray(rgb)
    return Image(rgb=rgb, alpha=alpha, bit_depth=image.bit_depth, gray=image.gray)


def upscale_file(
    backend: Backend,
    src: str | os.PathLike,
    dst: str | os.PathLike,
    tile: int | None = None,
    overlap: int | None = None,
    batch: int = 1,
    force: bool = False,
) -> Path:
    """Upscale one image file into `dst` (written atomically) one row of tiles at a time.

    Each band of model output goes straight into the output's integer pixels, so memory is
    the input as float32 (12 bytes a pixel), the output at its bit depth (3 or 4 bytes an
    output pixel at 8 bits, twice that at 16) and one row of tiles as float32: never the
    float32 output (12 bytes an output pixel) that upscale_image returns. The pixels equal
    upscale_image's.
    """
    check_batch(batch)
    tiles = choose_tile(backend.rule, tile, overlap)
    if not _write_upscaled(backend, Path(src), Path(dst), tiles, batch, force, {}):
        raise UserError(f"{dst} already exists (use --force to overwrite)")
    return Path(dst)


def _write_upscaled(
    backend: Backend,
    src: Path,
    dst: Path,
    tiles: TileChoice,
    batch: int,
    force: bool,
    layouts: dict[tuple[int, int], TilePlan],
) -> bool:
    """upscale_file with checked options; `layouts` caches the tile layout per input size.
    False when, without force, another run wrote `dst` whole while this one worked: theirs
    stands, as any existing output does (both are renamed into place whole, never half)."""
    if not force and dst.is_file():  # also when it appeared since the caller looked
        return False
    dst = check_writable(dst, force=True)  # links and folders; an existing output: just above
    image = read_image(src)
    s = backend.scale
    h, w = image.size
    bit_depth, with_alpha, gray = file_layout(image, dst.suffix)
    channels = (1 if gray else 3) + (1 if with_alpha else 0)
    dtype = np.uint8 if bit_depth == 8 else np.uint16
    try:
        out = np.empty((h * s, w * s, channels), dtype=dtype)
    except MemoryError as e:
        raise UserError(
            f"{src}: not enough memory for its {w * s}x{h * s} output "
            f"({h * s * w * s * channels * out_bytes(bit_depth) / 2**30:.1f} GiB)"
        ) from e
    if (h, w) not in layouts:
        layouts[h, w] = layout_tiles(h, w, backend.rule, tiles)
    chw = np.ascontiguousarray(image.rgb.transpose(2, 0, 1))
    for top, band in upscale_bands(backend.run, chw, s, layouts[h, w], batch):
        rows = band.shape[1]
        rgb = np.clip(band.transpose(1, 2, 0), 0.0, 1.0)
        if image.gray:  # a gray picture stays gray, whatever colour cast the model adds
            rgb = np.repeat(rgb.mean(axis=2, keepdims=True), 3, axis=2)
        alpha = _alpha_rows(image.alpha, s, top, rows) if with_alpha else None
        out[top : top + rows] = file_pixels(rgb, alpha, bit_depth, gray)
    del chw, image
    data = encode_pixels(out, dst.suffix)
    del out
    if not force and dst.is_file():
        return False
    try:
        with atomic_output(dst, force=force) as tmp:
            tmp.write_bytes(data)
    except UserError:
        if not force and dst.is_file():  # written in the instant before this one's rename
            return False
        raise
    return True


def out_bytes(bit_depth: int) -> int:
    return 1 if bit_depth == 8 else 2


def _alpha_rows(alpha: np.ndarray, s: int, top: int, rows: int) -> np.ndarray:
    """Output rows top..top+rows of the bicubic x s alpha, from a band of input rows with
    ALPHA_MARGIN rows of context (equal to resizing the whole plane)."""
    h, w = alpha.shape
    y0, y1 = top // s, (top + rows) // s
    a0, a1 = max(0, y0 - ALPHA_MARGIN), min(h, y1 + ALPHA_MARGIN)
    band = cv2.resize(alpha[a0:a1], (w * s, (a1 - a0) * s), interpolation=cv2.INTER_CUBIC)
    return np.clip(band[(y0 - a0) * s : (y0 - a0) * s + rows], 0.0, 1.0)


def collect_inputs(inputs: list[str | os.PathLike]) -> list[Path]:
    """Image files named directly or found directly inside named folders (in order)."""
    files: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            files.extend(list_images(path))
        elif path.exists():
            if not is_image_file(path):
                raise UserError(f"{path} is not an image file (by its suffix)")
            files.append(path)
        else:
            raise UserError(f"no such file or folder: {path}")
    if not files:
        raise UserError("no images found in the given inputs")
    return files


def input_folders(inputs: list[str | os.PathLike], files: list[Path], out_dir: Path) -> list[Path]:
    """The folders whose images are read: each folder named, and the folder of a file named
    directly when --out is that folder (its output would replace it). A folder below a named
    file's folder is no input: upscale reads only the files named there."""
    named = [Path(item) for item in inputs if Path(item).is_dir()]
    beside = [f.parent for f in files if _same_place(out_dir, f.parent)]
    return [*named, *beside]


def _same_place(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve()
    except (OSError, RuntimeError):  # a link loop: check_output_folder names it
        return False


def output_paths(files: list[Path], out_dir: Path) -> list[Path]:
    """out_dir/<input file name>; two inputs with one name would collide, so that is refused."""
    outs = [out_dir / f.name for f in files]
    seen: dict[Path, Path] = {}
    for src, dst in zip(files, outs, strict=True):
        if dst in seen and seen[dst].resolve() != src.resolve():
            raise UserError(f"{seen[dst]} and {src} would both be written to {dst}")
        seen[dst] = src
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"--out {out_dir} is a file, expected a folder")
    return outs


@dataclass(frozen=True)
class UpscalePlan:
    """One `adapt upscale` run, checked once by plan_upscale and trusted by run_upscale: the
    backend, each input with its output, the checked tiling options and batch."""

    backend: Backend
    jobs: list[tuple[Path, Path]]  # (input file, output file), in order
    out_dir: Path
    tiles: TileChoice
    batch: int = 1
    force: bool = False


def plan_upscale(
    inputs: list[str | os.PathLike],
    out_dir: str | os.PathLike,
    open_backend: Callable[[], Backend],
    tile: int | None = None,
    overlap: int | None = None,
    batch: int = 1,
    force: bool = False,
) -> UpscalePlan:
    """Every check of a run, before any file is written: the inputs and outputs first (so bad
    paths fail before the model loads), then `open_backend()` (the loader), then the tiling
    options against the model."""
    files = collect_inputs(inputs)
    out_dir = Path(out_dir)
    check_outside_inputs(out_dir, input_folders(inputs, files, out_dir), "--out")
    outs = output_paths(files, out_dir)
    check_output_folder(out_dir, f"--out {out_dir}")  # a link loop, a broken link, under a file
    backend = open_backend()
    tiles = choose_tile(backend.rule, tile, overlap)
    check_batch(batch)
    jobs = list(zip(files, outs, strict=True))
    check_output_sizes(jobs, backend.scale)  # a JPEG or WebP too large for its format
    return UpscalePlan(backend, jobs, out_dir, tiles, batch, force)


@dataclass
class Summary:
    written: list[Path] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)  # outputs that exist (no --force)
    failed: list[tuple[Path, str]] = field(default_factory=list)


def run_upscale(
    plan: UpscalePlan,
    progress: bool | None = None,
    report: Callable[[str], None] | None = None,
) -> Summary:
    """Upscale every planned input; per-file failures are collected, not raised."""
    summary = Summary()
    say = report or (lambda text: tqdm.write(text, file=sys.stderr))
    # a bar for several files, on a terminal only (a log file gets the failures and the summary)
    enabled = len(plan.jobs) > 1 if progress is None else progress
    bar = progress_bar(
        total=len(plan.jobs), unit="img", enabled=enabled, off_terminal=False, leave=False
    )
    layouts: dict[tuple[int, int], TilePlan] = {}  # one tile layout per distinct input size
    try:
        for src, dst in plan.jobs:
            bar.set_postfix_str(src.name, refresh=False)
            if dst.exists() and not plan.force:
                summary.skipped.append(dst)
            else:
                try:
                    mine = _write_upscaled(
                        plan.backend, src, dst, plan.tiles, plan.batch, plan.force, layouts
                    )
                    (summary.written if mine else summary.skipped).append(dst)
                except (UserError, OSError, MemoryError) as e:
                    summary.failed.append((src, str(e)))
                    say(f"failed: {src}: {e}")
            bar.update(1)
    finally:
        bar.close()
    return summary
