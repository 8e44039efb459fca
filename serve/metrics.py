"""PSNR and SSIM on the Y channel in numpy (float64), and MATLAB's bicubic upscaling, without
torch: a deployed ONNX file or engine is scored where only the runtime is installed.

The conventions are those of the super-resolution literature (the MATLAB evaluation scripts):

- the images are 8-bit (model outputs are rounded to 8 bits before scoring);
- Y is BT.601 luma as MATLAB's `rgb2ycbcr` computes it on double input, not rounded:
  Y = 16 + 65.481 R + 128.553 G + 24.966 B for R, G, B in [0, 1], so Y lies in [16, 235];
  a grayscale file is scored on its one channel in [0, 255], as the MATLAB scripts do;
- a border of `scale` pixels is cropped on every side;
- PSNR uses a peak of 255; SSIM is Wang et al.'s index with an 11x11 Gaussian window of sigma
  1.5, K1 = 0.01, K2 = 0.03, L = 255, computed over the 'valid' part of the filtering only and
  averaged (no automatic downscaling).

adaptsr.adapt.metrics computes the same numbers in torch, on batches, during training.
"""

from __future__ import annotations

import math

import numpy as np

from adaptsr.core.errors import UserError

# MATLAB rgb2ycbcr, Y row, for RGB in [0, 1] -> Y in [16, 235]
Y_WEIGHTS = (65.481, 128.553, 24.966)
Y_OFFSET = 16.0

SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1, SSIM_K2, SSIM_L = 0.01, 0.03, 255.0
C1 = (SSIM_K1 * SSIM_L) ** 2
C2 = (SSIM_K2 * SSIM_L) ** 2

CONVENTIONS = (
    "PSNR/SSIM on BT.601 Y (MATLAB rgb2ycbcr; grayscale files on their one channel), "
    "8-bit rounded, border of scale px cropped; SSIM: 11x11 Gaussian sigma 1.5, K1 0.01, "
    "K2 0.03, L 255, valid filtering; LPIPS (AlexNet, v0.1) and DISTS on RGB, same crop"
)


def least_side(crop: int) -> int:
    """The shortest image side that can be scored: the SSIM window must fit after the border
    crop of `crop` px on each side."""
    return 2 * crop + SSIM_WINDOW


def gaussian_window(size: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA) -> np.ndarray:
    """The 1-D normalised Gaussian whose outer product is MATLAB's fspecial('gaussian', ...)."""
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2
    g = np.exp(-(x**2) / (2 * sigma**2))
    return g / g.sum()


def quantize(img: np.ndarray) -> np.ndarray:
    """An image as 8-bit values (float64 in 0..255): uint8 as is, [0, 1] floats rounded."""
    img = np.asarray(img)
    if img.dtype == np.uint8:
        return img.astype(np.float64)
    if img.dtype == np.uint16:
        raise UserError("16-bit arrays: convert to [0, 1] floats before scoring")
    return np.floor(np.clip(img.astype(np.float64), 0.0, 1.0) * 255.0 + 0.5)


def y_channel(img: np.ndarray, gray: bool = False) -> np.ndarray:
    """BT.601 Y (float64) of an HxWx3 RGB image: studio range [16, 235] as MATLAB's rgb2ycbcr.

    gray=True is for images whose file is grayscale: the MATLAB evaluation scripts score such
    an image's single channel directly, in [0, 255]; for RGB input (a model's output for a gray
    image) that is full-range BT.601 luma, which equals the gray value when R = G = B.
    """
    q = quantize(img) / 255.0
    if q.ndim == 3 and q.shape[2] == 1:
        q = q[:, :, 0]
    if q.ndim == 2:  # one channel: R = G = B
        q = np.repeat(q[:, :, None], 3, axis=2)
    if q.ndim != 3 or q.shape[2] != 3:
        raise UserError(f"expected an HxWx3 RGB image, got shape {q.shape}")
    r, g, b = q[:, :, 0], q[:, :, 1], q[:, :, 2]
    y = Y_WEIGHTS[0] * r + Y_WEIGHTS[1] * g + Y_WEIGHTS[2] * b
    if gray:
        return y * (255.0 / sum(Y_WEIGHTS))
    return Y_OFFSET + y


def crop_border(y: np.ndarray, crop: int) -> np.ndarray:
    if crop < 0:
        raise UserError(f"crop must be >= 0, got {crop}")
    if crop == 0:
        return y
    if y.shape[0] <= 2 * crop or y.shape[1] <= 2 * crop:
        raise UserError(f"image of {y.shape[1]}x{y.shape[0]} is too small for a {crop}-px border")
    return y[crop:-crop, crop:-crop]


def y_pair(sr, hr, crop: int, gray: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """The Y channels of an output and its reference, checked and border-cropped."""
    a, b = y_channel(sr, gray), y_channel(hr, gray)
    if a.shape != b.shape:
        raise UserError(f"size mismatch: {a.shape[1]}x{a.shape[0]} vs {b.shape[1]}x{b.shape[0]}")
    return crop_border(a, crop), crop_border(b, crop)


def psnr_from_y(y1: np.ndarray, y2: np.ndarray) -> float:
    """PSNR (dB, peak 255) between two Y planes; inf for identical planes."""
    mse = float(np.mean((np.asarray(y1, np.float64) - np.asarray(y2, np.float64)) ** 2))
    return math.inf if mse == 0 else 10.0 * math.log10(255.0**2 / mse)


def _filter_valid(img: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Separable 'valid' correlation with the 1-D window g along both axes."""
    n = len(g)
    h, w = img.shape
    rows = sum(g[k] * img[k : h - n + 1 + k, :] for k in range(n))
    return sum(g[k] * rows[:, k : w - n + 1 + k] for k in range(n))


def ssim_from_y(y1: np.ndarray, y2: np.ndarray) -> float:
    """Mean SSIM (Wang et al. 2004) between two Y planes in [0, 255]."""
    x = np.asarray(y1, np.float64)
    y = np.asarray(y2, np.float64)
    if min(x.shape) < SSIM_WINDOW:
        raise UserError(f"SSIM needs at least {SSIM_WINDOW}x{SSIM_WINDOW} pixels, got {x.shape}")
    g = gaussian_window()
    mx, my = _filter_valid(x, g), _filter_valid(y, g)
    sxx = _filter_valid(x * x, g) - mx * mx
    syy = _filter_valid(y * y, g) - my * my
    sxy = _filter_valid(x * y, g) - mx * my
    num = (2 * mx * my + C1) * (2 * sxy + C2)
    den = (mx * mx + my * my + C1) * (sxx + syy + C2)
    return float(np.mean(num / den))


def psnr_y(sr, hr, crop: int = 0, gray: bool = False) -> float:
    """Y-channel PSNR of HxWx3 RGB images ([0, 1] floats or uint8)."""
    return psnr_from_y(*y_pair(sr, hr, crop, gray))


def ssim_y(sr, hr, crop: int = 0, gray: bool = False) -> float:
    """Y-channel SSIM of HxWx3 RGB images ([0, 1] floats or uint8)."""
    return ssim_from_y(*y_pair(sr, hr, crop, gray))


# ---------------------------------------------------------------------------------------------
# bicubic upscaling as MATLAB's imresize (the published bicubic baselines use it)


def _cubic(t: np.ndarray) -> np.ndarray:
    """Keys' cubic convolution kernel with a = -0.5 (MATLAB's bicubic)."""
    a = np.abs(t)
    a2, a3 = a * a, a * a * a
    near = (1.5 * a3 - 2.5 * a2 + 1.0) * (a <= 1)
    far = (-0.5 * a3 + 2.5 * a2 - 4.0 * a + 2.0) * ((a > 1) & (a <= 2))
    return near + far


def _upscale_axis(x: np.ndarray, axis: int, scale: int) -> np.ndarray:
    """One axis enlarged `scale` times: each output pixel a normalised cubic-weighted sum of the
    four input pixels around its centre, the border mirrored (the edge pixel repeated)."""
    n = x.shape[axis]
    u = np.arange(1, n * scale + 1, dtype=np.float64) / scale + 0.5 * (1 - 1 / scale)
    idx = np.floor(u - 2.0)[:, None] + np.arange(6, dtype=np.float64)[None, :]
    w = _cubic(u[:, None] - idx)
    w /= w.sum(axis=1, keepdims=True)
    j = np.remainder(idx.astype(np.int64) - 1, 2 * n)
    j = np.where(j >= n, 2 * n - 1 - j, j)
    shape = [1] * x.ndim
    shape[axis] = n * scale
    return sum(np.take(x, j[:, t], axis=axis) * w[:, t].reshape(shape) for t in range(6))


def bicubic_upscale(lr: np.ndarray, scale: int) -> np.ndarray:
    """An HxWxC image in [0, 1] enlarged `scale` times like MATLAB's `imresize(x, s, 'bicubic')`,
    clipped to [0, 1], float32."""
    out = _upscale_axis(np.asarray(lr, np.float64), 0, scale)
    out = _upscale_axis(out, 1, scale)
    return np.clip(out, 0.0, 1.0).astype(np.float32)
