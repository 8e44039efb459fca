"""Image files in and out, with numpy and OpenCV only (no torch: runs on a bare Jetson).

Images travel as float32 arrays in [0, 1], height x width x channels, RGB order. Alpha is kept
apart (the model sees RGB; alpha is upscaled separately and recombined), and the bit depth is
remembered so that a 16-bit PNG comes out as 16-bit. Images are read upright (EXIF orientation
applied) and written without an orientation tag, so viewers show an output as its input.
Multi-frame files and floating-point samples are refused (check_header), never cut down.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from adaptsr.core.errors import UserError
from adaptsr.core.fileio import atomic_output, check_readable
from adaptsr.core.image_headers import (
    Header,
    image_header,  # noqa: F401  (callers read it here too)
    probe,
    upright_size,
)
from adaptsr.core.image_suffixes import IMAGE_SUFFIXES, is_image_file  # callers read them here too

# Images above this many pixels are refused before decoding (a 69-byte PNG may declare
# 100000 x 100000): 2**26 = 67.1 megapixels, an 8192 x 8192 picture, whose float32 copy alone is
# 768 MiB. `--max-pixels` raises it; the setting travels in the environment so that data-loading
# worker processes see it too.
MAX_PIXELS = 2**26
MAX_PIXELS_ENV = "ADAPTSR_MAX_PIXELS"


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
    # OpenCV has its own decode limit (2**30 pixels); ours is checked first and may be higher
    os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", str(2**40))
    import cv2

    # its log lines ("[ERROR:0@0.1] ... can't read header") would precede our one-line error
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    return cv2


def max_pixels() -> int:
    """The pixel limit in force (MAX_PIXELS unless set_max_pixels raised or lowered it)."""
    try:
        return int(os.environ.get(MAX_PIXELS_ENV, MAX_PIXELS))
    except ValueError:
        return MAX_PIXELS


def set_max_pixels(limit: int) -> None:
    """Change the pixel limit for this process and the processes it starts."""
    if limit < 1:
        raise UserError(f"--max-pixels must be at least 1, not {limit}")
    os.environ[MAX_PIXELS_ENV] = str(int(limit))


def check_pixels(path: str | os.PathLike, height: int, width: int) -> None:
    """A UserError for an image above the pixel limit (or with no pixels)."""
    if height < 1 or width < 1:
        raise UserError(f"cannot read image {path}: it declares {width}x{height} pixels")
    limit = max_pixels()
    if height * width > limit:
        raise UserError(
            f"image {path} is {width}x{height} ({height * width / 1e6:.1f} megapixels), above "
            f"the limit of {limit / 1e6:.1f} megapixels (raise it with --max-pixels)"
        )


def list_images(folder: str | os.PathLike) -> list[Path]:
    """Image files directly inside `folder`, sorted by name."""
    folder = Path(folder)
    if not folder.exists():
        raise UserError(f"no such folder: {folder}")
    if not folder.is_dir():
        raise UserError(f"{folder} is not a folder")
    return sorted(p for p in folder.iterdir() if p.is_file() and is_image_file(p))


def check_header(path: str | os.PathLike, header: Header | None) -> None:
    """Refuse, before decoding, what the header alone shows adaptsr cannot read faithfully:
    more pixels than the limit, several frames (all but the first would be lost), floating-point
    samples (HDR values outside [0, 1] would be clipped and the file come back as 16-bit)."""
    if header is None:  # not a format we parse: the decoder decides, check_pixels follows
        return
    check_pixels(path, header.height, header.width)
    if header.frames > 1:
        raise UserError(
            f"cannot read image {path}: it has {header.frames} frames; adaptsr reads single "
            "images (save the frame you want as an image of its own)"
        )
    if header.float_samples:
        raise float_samples_error(path)


def float_samples_error(path: str | os.PathLike) -> UserError:
    return UserError(
        f"cannot read image {path}: it holds floating-point samples (HDR); adaptsr reads 8- and "
        "16-bit images and writes them back at the same depth (convert it to 16 bits first)"
    )


def apply_orientation(array: np.ndarray, orientation: int) -> np.ndarray:
    """`array` (H, W[, C]) turned upright by its EXIF orientation (1..8), as viewers show it."""
    turns = {
        2: lambda a: a[:, ::-1],  # mirrored left-right
        3: lambda a: a[::-1, ::-1],  # upside down
        4: lambda a: a[::-1],  # mirrored top-bottom
        5: lambda a: a.swapaxes(0, 1),  # transposed
        6: lambda a: np.rot90(a, -1),  # stored a quarter turn anticlockwise: turn it clockwise
        7: lambda a: np.rot90(a.swapaxes(0, 1), 2),  # transposed across the other diagonal
        8: lambda a: np.rot90(a, 1),
    }
    turn = turns.get(orientation)
    return array if turn is None else np.ascontiguousarray(turn(array))


def _decode(path: Path, data: np.ndarray) -> np.ndarray:
    """OpenCV's decode of the file's bytes, its pixels as stored (BGR, any depth)."""
    cv2 = _cv2()
    try:
        raw = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    except cv2.error as e:  # the decoder's own refusals (sizes, damaged streams)
        text = str(e).strip().splitlines()[-1] if str(e).strip() else "decoder error"
        raise UserError(f"cannot read image {path}: corrupt or not an image ({text})") from e
    if raw is None or raw.ndim < 2:
        raise UserError(f"cannot read image {path}: corrupt or not an image")
    check_pixels(path, raw.shape[0], raw.shape[1])  # formats whose header we do not parse
    return raw


def read_image(path: str | os.PathLike) -> Image:
    """Read an 8- or 16-bit image (png, jpg, webp, bmp, tif), grayscale or with alpha, upright
    (its EXIF orientation applied)."""
    path = check_readable(path, "image")  # missing, a folder, a pipe: one line each
    header = probe(path)
    check_header(path, header)  # before reading: the header alone may ask for gigabytes
    try:
        data = np.fromfile(path, dtype=np.uint8)  # imdecode: any path encoding works
    except OSError as e:
        raise UserError(f"cannot read image {path}: {e.strerror or e}") from e
    raw = _decode(path, data)
    if header is not None and header.kind != "tiff":  # OpenCV turns TIFFs itself
        raw = apply_orientation(raw, header.orientation)
    if raw.dtype == np.uint8:
        bit_depth, scale = 8, 255.0
    elif raw.dtype == np.uint16:
        bit_depth, scale = 16, 65535.0
    elif raw.dtype.kind == "f":  # a float format whose header we do not parse
        raise float_samples_error(path)
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


def file_layout(image: Image, suffix: str) -> tuple[int, bool, bool]:
    """How `image` is stored as `suffix`: (bit depth, with alpha, one gray plane)."""
    suffix = suffix.lower()
    if suffix not in IMAGE_SUFFIXES:
        raise UserError(f"unsupported image format {suffix!r} (use {', '.join(IMAGE_SUFFIXES)})")
    bit_depth = image.bit_depth if suffix in (".png", ".tif", ".tiff") else 8
    with_alpha = image.alpha is not None and suffix in (".png", ".webp", ".tif", ".tiff")
    return bit_depth, with_alpha, image.gray and not with_alpha


# The largest side each format can hold (libjpeg: JPEG_MAX_DIMENSION; WebP: 14-bit sides)
MAX_SIDE = {".jpg": 65500, ".jpeg": 65500, ".webp": 16383}


def check_output_size(path: str | os.PathLike, height: int, width: int) -> None:
    """Refuse, before the work, an output the format of `path` (or a bare suffix) cannot hold:
    the encoder would fail only after the whole upscale ran."""
    suffix = Path(path).suffix.lower() or str(path).lower()
    limit = MAX_SIDE.get(suffix)
    if limit is not None and max(height, width) > limit:
        raise UserError(
            f"cannot write {path}: its {width}x{height} pixels exceed what {suffix} holds "
            f"({limit} px a side; .png and .tif hold it)"
        )


def check_output_sizes(jobs, scale: int) -> None:
    """check_output_size for each (input file, output file) of a run, from the input's
    upright size in its header times `scale` (files whose header is not parsed pass)."""
    for src, dst in jobs:
        size = upright_size(src)
        if size is not None:
            check_output_size(dst, size[0] * scale, size[1] * scale)


def file_pixels(rgb: np.ndarray, alpha: np.ndarray | None, bit_depth: int, gray: bool):
    """[0, 1] RGB (and alpha) as the integers an encoder takes: gray, BGR or BGRA."""
    # encoders take 1, 3 or 4 channels: gray+alpha is BGRA
    planes = [rgb.mean(axis=2)] if gray else [rgb[:, :, c] for c in (2, 1, 0)]
    if alpha is not None:
        planes.append(alpha)
    return to_uint(np.stack(planes, axis=2), bit_depth)


def encode_pixels(arr: np.ndarray, suffix: str, jpeg_quality: int = 95) -> bytes:
    """Encode integer pixels (H, W, 1|3|4 in BGR(A) order) in the format of `suffix`."""
    cv2 = _cv2()
    suffix = suffix.lower()
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    params: list[int] = []
    if suffix in (".jpg", ".jpeg"):
        params = [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)]
    elif suffix == ".webp":
        params = [cv2.IMWRITE_WEBP_QUALITY, 101]  # lossless
    try:
        ok, buf = cv2.imencode(suffix, arr, params)
    except cv2.error as e:  # e.g. a JPEG or WebP side above the format's limit
        text = str(e).strip().splitlines()[-1] if str(e).strip() else "encoder error"
        raise UserError(f"cannot encode image as {suffix}: {text}") from e
    if not ok:
        raise UserError(f"cannot encode {arr.shape[1]}x{arr.shape[0]} image as {suffix}")
    return buf.tobytes()


def encode_image(image: Image, suffix: str, jpeg_quality: int = 95) -> bytes:
    """Encode to bytes in the format of `suffix`; 16-bit only where the format holds it."""
    bit_depth, with_alpha, gray = file_layout(image, suffix)
    alpha = image.alpha if with_alpha else None
    arr = file_pixels(image.rgb, alpha, bit_depth, gray)
    return encode_pixels(arr, suffix, jpeg_quality)


def write_image(image: Image, path: str | os.PathLike, force: bool = False) -> Path:
    """Write atomically; an existing file is replaced only with force."""
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
