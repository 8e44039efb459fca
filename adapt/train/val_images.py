"""--val-save-images N: at each validation, the first N validation images as pictures to look at.

Each picture is one PNG with three panels side by side: the LR input enlarged nearest-neighbour
(its pixels as the model saw them), the model's output (SR) and the HR target, cut to the same
centre crop of at most CROP pixels a side so that details are visible at 100%. They go to
RUN_DIR/val-images/iter_NNNNNN/ (the folder appears whole: written beside and renamed) and, by
the same callback event, to TensorBoard's images.
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from adaptsr.adapt.train.callbacks import Callback
from adaptsr.core.errors import UserError
from adaptsr.core.fileio import describe_os_error, partial_folder, remove_stale_partials
from adaptsr.core.images import Image, write_image

FOLDER = "val-images"
CROP = 384  # HR pixels a side at most: three panels stay a screen wide
GAP = 4  # white pixels between the panels


@dataclass(frozen=True)
class ValPicture:
    """One validation image as LR | SR | HR: `rgb` is (H, W, 3) float32 in [0, 1]."""

    name: str
    rgb: np.ndarray


def picture(name: str, lr: torch.Tensor, sr: torch.Tensor, hr: torch.Tensor) -> ValPicture:
    """The three panels of one validation pair ((1, 3, h, w) LR, (1, 3, H, W) SR and HR)."""
    scale = hr.shape[-1] // lr.shape[-1]
    lr_h, lr_w = lr.shape[-2:]
    side_h, side_w = min(lr_h, CROP // scale), min(lr_w, CROP // scale)
    top, left = (lr_h - side_h) // 2, (lr_w - side_w) // 2
    lr_crop = lr[0, :, top : top + side_h, left : left + side_w]
    big = lr_crop.repeat_interleave(scale, dim=1).repeat_interleave(scale, dim=2)
    rows = slice(top * scale, (top + side_h) * scale)
    cols = slice(left * scale, (left + side_w) * scale)
    panels = [big, sr[0, :, rows, cols], hr[0, :, rows, cols]]
    gap = torch.ones(3, side_h * scale, GAP)
    row = torch.cat([panels[0], gap, panels[1], gap, panels[2]], dim=2).clamp(0, 1)
    return ValPicture(name, row.permute(1, 2, 0).float().numpy())


def file_name(index: int, name: str) -> str:
    """`03-NAME.png`: in validation order, NAME kept to safe characters."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "image"
    return f"{index:02d}-{safe[:100]}.png"


class ValImages(Callback):
    """RUN_DIR/val-images/iter_NNNNNN/*.png for each validation with pictures."""

    def __init__(self, run_dir: Path):
        self.folder = run_dir / FOLDER

    def on_val_images(self, iteration: int, pictures: list[ValPicture]) -> None:
        target = self.folder / f"iter_{iteration:06d}"
        try:
            self.folder.mkdir(exist_ok=True)
            remove_stale_partials(target)
            scratch = partial_folder(target)
            try:
                for index, pic in enumerate(pictures):
                    path = scratch / file_name(index, pic.name)
                    write_image(Image(pic.rgb, None, 8, False), path)
                if target.exists():  # a replayed validation (a resumed run): the same pictures
                    shutil.rmtree(target)
                os.replace(scratch, target)
            finally:
                shutil.rmtree(scratch, ignore_errors=True)
        except OSError as e:
            raise UserError(f"cannot write {target}: {describe_os_error(e)}") from e
