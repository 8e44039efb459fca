"""Image files in and out, with numpy and OpenCV only (no torch: runs on a bare Jetson).

Images travel as float32 arrays in [0, 1], height x width x channels, RGB order. Alpha is kept
apart (the model sees RGB; alpha is upscaled separately and recombined), and the bit depth is
remembered so that a 16-bit PNG comes out as 16-bit.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from adaptsr.errors import UserError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")


@dataclass
class Image:
    rgb: np.ndarray  # float32, (H, W, 3) in [0, 1]; grayscale files are replicated to 3 channels
    alpha: np.ndarray | None  # float32, (H, W) in [0, 1], or None
    bit_depth: int  # 8 or 16
    gray: bool  # the file was single-channel

    @property
    def size(self) -> tuple[int, int]:
        """(height, width)"""
        return self.rgb.shape[0], self.rgb.shape[1]


def _cv2():
    import cv2

    return cv2


def is_image_file(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def list_images(folder: str | os.PathLike) -> list[Path]:
    """Image files directly inside `folder`, sorted by name."""
    folder = Path(folder)
    if not folder.exists():
        raise UserError(f"no such folder: {folder}")
    if not folder.is_dir():
        raise UserError(f"{folder} is not a folder")
    return sorted(p for p in folder.iterdir() if p.is_file() and is_image_file(p))


def read_image(path: str | os.PathLike) -> Image:
    """Read an 8- or 16-bit image (png, jpg, webp, bmp, tif), grayscale or with alpha."""
    cv2 = _cv2()
    path = Path(path)
    if not path.exists():
        raise UserError(f"no such image: {path}")
    try:
        data = np.fromfile(path, dtype=np.uint8)  # imdecode: any path encoding works
    except OSError as e:
        raise UserError(f"cannot read image {path}: {e.strerror or e}") from e
    raw = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if raw is None:
        raise UserError(f"cannot read image {path}: corrupt or not an image")
    if raw.dtype == np.uint8:
        bit_depth, scale = 8, 255.0
    elif raw.dtype == np.uint16:
        bit_depth, scale = 16, 65535.0
    elif raw.dtype == np.float32:
        bit_depth, scale = 16, 1.0
    else:
        raise UserError(f"cannot read image {path}: unsupported pixel type {raw.dtype}")
    img = raw.astype(np.float32) / scale
    if img.ndim == 2:
        img = img[:, :, None]
    channels = img.shape[2]
    gray = channels in (1, 2)
    alpha = None
    if channels in (2, 4):
        alpha = np.clip(img[:, :, -1], 0.0, 1.0)
        img = img[:, :, :-1]
    rgb = np.repeat(img, 3, axis=2) if gray else img[:, :, ::-1]  # OpenCV stores BGR
    rgb = np.ascontiguousarray(np.clip(rgb, 0.0, 1.0))
    return Image(rgb=rgb, alpha=alpha, bit_depth=bit_depth, gray=gray)


def to_uint(array: np.ndarray, bit_depth: int) -> np.ndarray:
    """Round [0, 1] floats to 8- or 16-bit integers."""
    top = 255.0 if bit_depth == 8 else 65535.0
    dtype = np.uint8 if bit_depth == 8 else np.uint16
    return (np.clip(array, 0.0, 1.0) * top + 0.5).astype(dtype)


def encode_image(image: Image, suffix: str, jpeg_quality: int = 95) -> bytes:
    """Encode to bytes in the format of `suffix`; 16-bit only where the format holds it."""
    cv2 = _cv2()
    suffix = suffix.lower()
    if suffix not in IMAGE_SUFFIXES:
        raise UserError(f"unsupported image format {suffix!r} (use {', '.join(IMAGE_SUFFIXES)})")
    bit_depth = image.bit_depth if suffix in (".png", ".tif", ".tiff") else 8
    with_alpha = image.alpha is not None and suffix in (".png", ".webp", ".tif", ".tiff")
    if image.gray and not with_alpha:  # encoders take 1, 3 or 4 channels: gray+alpha is BGRA
        planes = [image.rgb.mean(axis=2)]
    else:
        planes = [image.rgb[:, :, 2], image.rgb[:, :, 1], image.rgb[:, :, 0]]
    if with_alpha:
        planes.append(image.alpha)
    arr = to_uint(np.stack(planes, axis=2), bit_depth)
    if arr.shape[2] == 1:
        arr = arr[:, :, 0]
    params: list[int] = []
    if suffix in (".jpg", ".jpeg"):
        params = [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)]
    elif suffix == ".webp":
        params = [cv2.IMWRITE_WEBP_QUALITY, 101]  # lossless
    ok, buf = cv2.imencode(suffix, arr, params)
    if not ok:
        raise UserError(f"cannot encode image as {suffix}")
    return buf.tobytes()


def write_image(image: Image, path: str | os.PathLike, force: bool = False) -> Path:
    """Write atomically; an existing file is replaced only with force."""
    from adaptsr.fileio import atomic_output

    path = Path(path)
    data = encode_image(image, path.suffix)
    with atomic_output(path, force=force) as tmp:
        tmp.write_bytes(data)
    return path


def synthetic_image(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A photo-like (3, H, W) float32 test picture in [0, 1]: smooth gradients, hard edges
    (rectangles, a disc, thin lines), a fine texture and sensor-like noise. For tests, demos and
    benchmarks, which may not read real images (none are shipped)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    yn, xn = y / max(height - 1, 1), x / max(width - 1, 1)
    img = np.stack([0.2 + 0.6 * xn, 0.3 + 0.5 * yn, 0.5 + 0.3 * (xn - yn)], axis=0)
    for _ in range(4):  # flat-coloured rectangles: step edges at random positions
        y0, x0 = rng.integers(0, height), rng.integers(0, width)
        y1, x1 = y0 + rng.integers(2, max(3, height // 2)), x0 + rng.integers(2, max(3, width // 2))
        img[:, y0:y1, x0:x1] = rng.uniform(0, 1, size=(3, 1, 1))
    cy, cx, r = height * 0.6, width * 0.4, min(height, width) / 4
    disc = (y - cy) ** 2 + (x - cx) ** 2 < r**2
    img[:, disc] = img[:, disc] * 0.3 + 0.6
    img[:, :, ::7] *= 0.5  # thin dark lines
    img += 0.08 * np.sin(x * 0.9 + y * 0.4)[None] * np.cos(y * 0.7)[None]  # fine texture
    img += rng.normal(0, 0.02, size=img.shape)  # noise
    return np.clip(img, 0, 1).astype(np.float32)
