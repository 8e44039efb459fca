"""Image files in and out, with numpy and OpenCV only (no torch: runs on a bare Jetson).

Images travel as float32 arrays in [0, 1], height x width x channels, RGB order. Alpha is kept
apart (the model sees RGB; alpha is upscaled separately and recombined), and the bit depth is
remembered so that a 16-bit PNG comes out as 16-bit.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from adaptsr.core.errors import UserError
from adaptsr.core.fileio import atomic_output, check_readable
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


def _png_size(head: bytes) -> tuple[int, int] | None:
    if head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR" and len(head) >= 24:
        w, h = struct.unpack(">II", head[16:24])
        return h, w
    return None


def _jpeg_size(f) -> tuple[int, int] | None:
    f.seek(2)
    while True:
        if f.read(1) != b"\xff":
            return None
        byte = f.read(1)
        while byte == b"\xff":  # fill bytes before a marker
            byte = f.read(1)
        if not byte:
            return None
        marker = byte[0]
        if marker in (0x01, *range(0xD0, 0xD8)):  # markers without a length
            continue
        length = f.read(2)
        if len(length) < 2:
            return None
        (n,) = struct.unpack(">H", length)
        # start of frame: baseline, progressive, lossless... (not DHT C4, JPG C8, DAC CC)
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            body = f.read(5)
            if len(body) < 5:
                return None
            h, w = struct.unpack(">HH", body[1:5])
            return h, w
        if marker == 0xD9 or n < 2:
            return None
        f.seek(n - 2, 1)


def _webp_size(head: bytes) -> tuple[int, int] | None:
    if head[:4] != b"RIFF" or head[8:12] != b"WEBP" or len(head) < 30:
        return None
    kind = head[12:16]
    if kind == b"VP8X":
        w = 1 + int.from_bytes(head[24:27], "little")
        h = 1 + int.from_bytes(head[27:30], "little")
        return h, w
    if kind == b"VP8L" and head[20] == 0x2F:
        bits = int.from_bytes(head[21:25], "little")
        return 1 + ((bits >> 14) & 0x3FFF), 1 + (bits & 0x3FFF)
    if kind == b"VP8 ":
        w, h = struct.unpack("<HH", head[26:30])
        return h & 0x3FFF, w & 0x3FFF
    return None


def _bmp_size(head: bytes) -> tuple[int, int] | None:
    if head[:2] != b"BM" or len(head) < 26:
        return None
    (info,) = struct.unpack("<I", head[14:18])
    if info == 12:  # OS/2 BITMAPCOREHEADER
        w, h = struct.unpack("<HH", head[18:22])
        return h, w
    w, h = struct.unpack("<ii", head[18:26])
    return abs(h), abs(w)


def _tiff_size(f, head: bytes) -> tuple[int, int] | None:
    order = {b"II": "<", b"MM": ">"}.get(head[:2])
    if order is None or struct.unpack(order + "H", head[2:4])[0] != 42:
        return None
    (offset,) = struct.unpack(order + "I", head[4:8])
    f.seek(offset)
    count = f.read(2)
    if len(count) < 2:
        return None
    size: dict[int, int] = {}
    for _ in range(min(struct.unpack(order + "H", count)[0], 4096)):
        entry = f.read(12)
        if len(entry) < 12:
            return None
        tag, kind = struct.unpack(order + "HH", entry[:4])
        if tag in (256, 257):  # ImageWidth, ImageLength: SHORT or LONG
            fmt = "H" if kind == 3 else "I"
            size[tag] = struct.unpack(order + fmt, entry[8 : 8 + struct.calcsize(fmt)])[0]
    if 256 in size and 257 in size:
        return size[257], size[256]
    return None


def image_header(path: str | os.PathLike) -> tuple[int, int] | None:
    """(height, width) as the file's header declares them, without decoding a pixel: PNG, JPEG,
    WebP, BMP and TIFF. None when the header is not one of these or is cut short."""
    try:
        with open(path, "rb") as f:
            head = f.read(32)
            if head[:2] == b"\xff\xd8":
                return _jpeg_size(f)
            if head[:2] in (b"II", b"MM"):
                return _tiff_size(f, head)
    except (OSError, struct.error):
        return None
    return _png_size(head) or _webp_size(head) or _bmp_size(head)


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
    path = check_readable(path, "image")  # missing, a folder, a pipe: one line each
    size = image_header(path)
    if size is not None:  # refused before decoding: the header alone may ask for gigabytes
        check_pixels(path, *size)
    try:
        data = np.fromfile(path, dtype=np.uint8)  # imdecode: any path encoding works
    except OSError as e:
        raise UserError(f"cannot read image {path}: {e.strerror or e}") from e
    try:
        raw = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    except cv2.error as e:  # the decoder's own refusals (sizes, damaged streams)
        text = str(e).strip().splitlines()[-1] if str(e).strip() else "decoder error"
        raise UserError(f"cannot read image {path}: corrupt or not an image ({text})") from e
    if raw is not None and raw.ndim >= 2:
        check_pixels(path, raw.shape[0], raw.shape[1])  # formats whose header we do not parse
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


def file_layout(image: Image, suffix: str) -> tuple[int, bool, bool]:
    """How `image` is stored as `suffix`: (bit depth, with alpha, one gray plane)."""
    suffix = suffix.lower()
    if suffix not in IMAGE_SUFFIXES:
        raise UserError(f"unsupported image format {suffix!r} (use {', '.join(IMAGE_SUFFIXES)})")
    bit_depth = image.bit_depth if suffix in (".png", ".tif", ".tiff") else 8
    with_alpha = image.alpha is not None and suffix in (".png", ".webp", ".tif", ".tiff")
    return bit_depth, with_alpha, image.gray and not with_alpha


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
