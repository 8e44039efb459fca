"""The camera's photos as the estimators see them, and the pieces of the camera model the
estimators replay (numpy, OpenCV and Pillow only: calibration runs without torch).

The camera model is the one of the `camera` preset (adapt/degradations.py, docs/degradations.md):
Gaussian blur on the HR image, MATLAB-style antialiased bicubic down by the scale, Gaussian noise
on the LR image, libjpeg 4:2:0 JPEG.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np
from PIL import Image as PILImage
from PIL import JpegImagePlugin

from adaptsr.core.errors import UserError
from adaptsr.core.images import read_image

MIN_SIDE = 48  # LR pixels: a smaller photo holds too few 8x8 blocks, edges and flat patches


@dataclass(frozen=True)
class Photo:
    path: Path
    rgb: np.ndarray  # float64 (H, W, 3) in 8-bit levels 0..255
    jpeg_tables: tuple[tuple[int, ...], ...] | None  # quantisation tables, natural order
    subsampling: str | None  # "444", "422", "420" for JPEG files


def load_photo(path: str | os.PathLike) -> Photo:
    """Read one photo (any format read_image takes); JPEG files also give their tables."""
    image = read_image(path)
    rgb = np.round(image.rgb.astype(np.float64) * 255)
    tables, sampling = None, None
    try:
        with PILImage.open(path) as pil:
            if pil.format == "JPEG":
                tables = tuple(tuple(pil.quantization[k]) for k in sorted(pil.quantization))
                sub = JpegImagePlugin.get_sampling(pil)
                sampling = {0: "444", 1: "422", 2: "420"}.get(sub)
    except OSError:  # read_image read it; Pillow may not know the format (no tables then)
        pass
    return Photo(Path(path), rgb, tables, sampling)


def load_photos(paths) -> list[Photo]:
    """Every photo, refused in one line when the set cannot be calibrated from."""
    seen: dict[Path, str] = {}
    for p in paths:  # a photo counted twice would narrow the spread the uncertainties report
        key = Path(p).resolve()
        if key in seen:
            raise UserError(f"photo {p} is given twice (also as {seen[key]}): each counts once")
        seen[key] = str(p)
    photos = [load_photo(p) for p in paths]
    if not photos:
        raise UserError("calibration needs photos: none were given")
    small = [p for p in photos if min(p.rgb.shape[:2]) < MIN_SIDE]
    if small:
        h, w = small[0].rgb.shape[:2]
        raise UserError(
            f"photo {small[0].path} is too small to calibrate from ({w}x{h}; "
            f"each side needs at least {MIN_SIDE} pixels)"
        )
    return photos


def luma(rgb: np.ndarray) -> np.ndarray:
    """BT.601 luma (the Y of JPEG), same scale as the input."""
    return rgb @ np.array([0.299, 0.587, 0.114])


def _cubic(x: np.ndarray) -> np.ndarray:
    """Keys' cubic convolution kernel with a = -0.5 (MATLAB's and Pillow's bicubic)."""
    ax = np.abs(x)
    return np.where(
        ax <= 1,
        1.5 * ax**3 - 2.5 * ax**2 + 1,
        np.where(ax <= 2, -0.5 * ax**3 + 2.5 * ax**2 - 4 * ax + 2, 0.0),
    )


@lru_cache(maxsize=32)
def _shrink_matrix(n_in: int, scale: int) -> np.ndarray:
    """(n_in // scale, n_in) weights of MATLAB's antialiased bicubic shrink by `scale`."""
    n_out = n_in // scale
    centre = (np.arange(n_out) + 0.5) * scale - 0.5  # output pixel centres in input pixels
    taps = np.arange(-2 * scale, 2 * scale + 2)
    idx = np.floor(centre)[:, None] + taps[None, :]
    w = _cubic((centre[:, None] - idx) / scale)
    w /= w.sum(1, keepdims=True)
    idx = np.mod(idx, 2 * n_in).astype(int)  # MATLAB's mirror table [1..n, n..1]
    idx = np.where(idx >= n_in, 2 * n_in - 1 - idx, idx)
    m = np.zeros((n_out, n_in))
    np.add.at(m, (np.repeat(np.arange(n_out), len(taps)), idx.ravel()), w.ravel())
    return m


def shrink(x: np.ndarray, scale: int) -> np.ndarray:
    """Antialiased bicubic downsample of (H, W) or (H, W, C) by an integer scale."""
    rows = _shrink_matrix(x.shape[0], scale)
    cols = _shrink_matrix(x.shape[1], scale)
    out = np.tensordot(rows, x, axes=(1, 0))  # (h, W, ...)
    return np.moveaxis(np.tensordot(cols, out, axes=(1, 1)), 0, 1)


def gaussian_blur(x: np.ndarray, sigma: float) -> np.ndarray:
    """Isotropic Gaussian blur with reflected borders (kernel +-3 sigma, as the camera's)."""
    if sigma <= 0:
        return x
    size = 2 * int(np.ceil(3 * sigma)) + 1
    return cv2.GaussianBlur(x, (size, size), sigma, borderType=cv2.BORDER_REFLECT_101)


def jpeg_roundtrip(rgb: np.ndarray, quality: int | None, subsampling: str = "420") -> np.ndarray:
    """8-bit quantisation, then libjpeg compression at `quality` (None: no JPEG)."""
    v = np.clip(np.round(rgb), 0, 255).astype(np.uint8)
    if quality is None:
        return v.astype(np.float64)
    buf = io.BytesIO()
    sub = {"444": 0, "422": 1, "420": 2}[subsampling]
    PILImage.fromarray(v).save(buf, "JPEG", quality=int(quality), subsampling=sub)
    buf.seek(0)
    with PILImage.open(buf) as im:
        return np.asarray(im.convert("RGB"), dtype=np.float64)
