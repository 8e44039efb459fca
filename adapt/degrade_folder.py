"""`adapt degrade`: a folder's HR images degraded as training degrades them, written as LR images,
and a contact sheet (HR crops beside their LR, enlarged with nearest pixels) so a user sees what
the model will be trained on before training. The sheet is written beside the LR folder, not in
it: a folder of LR images is what calibrate, upscale and train read next.

Image i is degraded with seed + i (its place in the sorted folder), as `adapt eval
--degradation` does: an image's LR does not depend on which other images are in the folder.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from adaptsr.adapt.data import modcrop
from adaptsr.adapt.degradation_file import describe, settings_of
from adaptsr.adapt.evaluate import make_degrade
from adaptsr.core.errors import UserError
from adaptsr.core.fileio import check_outside_inputs, check_writable, leave_as_found
from adaptsr.core.images import IMAGE_SUFFIXES, Image, list_images, read_image, write_image
from adaptsr.core.progress import progress_bar

SHEET_SUFFIX = "-contact-sheet.png"  # lr/ -> lr-contact-sheet.png beside it
SHEET_ROWS = 4  # images on the sheet
SHEET_CROP = 192  # HR pixels per side of a sheet crop (smaller images: the whole image)
GAP = 8  # pixels between and around the crops
BACKGROUND = 0.5


@dataclass(frozen=True)
class DegradedFolder:
    images: list[Path]  # the LR images written
    sheet: Path
    degradation: str  # describe(): the preset's name, or the type of settings a file holds


def degrade_folder(
    hr_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    degradation,
    scale: int = 4,
    count: int | None = None,
    seed: int = 0,
    force: bool = False,
    progress: bool = True,
    sheet: str | os.PathLike | None = None,
) -> DegradedFolder:
    """Degrade the first `count` images of `hr_dir` (all when None), sorted by name, into
    `out_dir` as NAME.png, and write the contact sheet to `sheet` (default_sheet(out_dir))."""
    settings = settings_of(degradation)
    if count is not None and count < 1:
        raise UserError(f"-n must be at least 1, got {count}")
    images = list_images(hr_dir)[:count]
    if not images:
        raise UserError(f"no images in {hr_dir}")
    out = Path(out_dir)
    check_outside_inputs(out, [hr_dir], "--out")
    sheet = Path(sheet) if sheet is not None else default_sheet(out)
    check_outside_inputs(sheet, [hr_dir], "--sheet")
    outputs = [out / f"{p.stem}.png" for p in images]
    if len(set(outputs)) < len(outputs):
        raise UserError(f"{hr_dir}: two images share a name; the LR images are written as NAME.png")
    check_sheet(sheet, out, outputs)
    for path in [*outputs, sheet]:
        check_writable(path, force)  # before any work
    degrade = make_degrade(settings, scale, seed)
    rows = []
    bar = progress_bar(images, desc="degrade", unit="img", enabled=progress)
    with leave_as_found(out):  # an unreadable or too small image leaves no LR images behind
        for index, (path, target) in enumerate(zip(bar, outputs, strict=True)):
            hr = modcrop(read_image(path).rgb, scale)
            if min(hr.shape[:2]) < scale:
                raise UserError(f"{path} is smaller than the scale {scale}")
            lr = degrade(hr, index)
            write_image(Image(lr, None, 8, False), target, force)
            if len(rows) < SHEET_ROWS:
                rows.append(_sheet_row(hr, lr, scale))
        written = write_image(Image(_stack(rows), None, 8, False), sheet, force)
    return DegradedFolder(outputs, written, describe(settings))


def check_sheet(sheet: Path, out: Path, outputs: list[Path]) -> None:
    """The contact sheet is an image file outside the LR folder (what calibrate, upscale and
    train read next holds LR images only)."""
    if sheet in outputs:
        raise UserError(f"--sheet {sheet} is also the name of an LR image: choose another")
    if sheet.resolve().is_relative_to(out.resolve()):
        raise UserError(
            f"--sheet {sheet} is inside --out {out}: the LR folder holds LR images only "
            "(the sheet would be read as one); choose a path outside it"
        )
    if sheet.suffix.lower() not in IMAGE_SUFFIXES:
        raise UserError(f"--sheet {sheet}: choose an image file name ({', '.join(IMAGE_SUFFIXES)})")


def default_sheet(out_dir: str | os.PathLike) -> Path:
    """Where the contact sheet goes when --sheet is not given: beside the LR folder."""
    out = Path(out_dir).resolve()
    return out.parent / f"{out.name or 'lr'}{SHEET_SUFFIX}"


def _sheet_row(hr: np.ndarray, lr: np.ndarray, scale: int) -> np.ndarray:
    """The centre crop of HR beside the same region of LR, enlarged by `scale` (nearest)."""
    h, w = hr.shape[:2]
    side_h = min(SHEET_CROP, h) // scale * scale
    side_w = min(SHEET_CROP, w) // scale * scale
    top = (h - side_h) // 2 // scale * scale
    left = (w - side_w) // 2 // scale * scale
    hr_crop = hr[top : top + side_h, left : left + side_w]
    lr_crop = lr[top // scale : (top + side_h) // scale, left // scale : (left + side_w) // scale]
    enlarged = lr_crop.repeat(scale, axis=0).repeat(scale, axis=1)
    row = np.full((SHEET_CROP, 2 * SHEET_CROP + GAP, 3), BACKGROUND, dtype=np.float32)
    row[:side_h, :side_w] = hr_crop
    row[:side_h, SHEET_CROP + GAP : SHEET_CROP + GAP + side_w] = enlarged
    return row


def _stack(rows: list[np.ndarray]) -> np.ndarray:
    """Rows one under the other, with a border of GAP pixels around every crop."""
    width = rows[0].shape[1] + 2 * GAP
    sheet = np.full((GAP, width, 3), BACKGROUND, dtype=np.float32)
    parts = [sheet]
    for row in rows:
        pad = np.full((row.shape[0], GAP, 3), BACKGROUND, dtype=np.float32)
        parts += [np.concatenate([pad, row, pad], axis=1), sheet]
    return np.concatenate(parts, axis=0)
