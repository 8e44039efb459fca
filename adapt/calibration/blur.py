"""Lens blur of the camera's photos: the Gaussian sigma, in HR pixels, applied before the
bicubic downsample by the scale, that best explains the photos' edges.

Method. Edge sharpness is measured on the LR luma as the upper quartile, over strong edge
pixels (local maxima of the smoothed gradient, above a contrast threshold clear of the noise),
of the ratio between the gradient magnitude and that of a copy smoothed by a Gaussian of sigma
1 LR pixel: on a step edge of width w the ratio is sqrt(w^2 + 1) / w whatever its contrast, so
it measures width, not contrast. The same measure is taken on a reference scene rendered for
each candidate sigma through the camera's whole chain: a dead-leaves image (overlapping discs
of random grey levels with a power-law size distribution: the occlusion edges and the 1/f^2
spectrum of natural scenes, the test chart of camera texture-sharpness standards), rendered at
HR with 4x4 supersampling, blurred, shrunk by the scale (MATLAB's bicubic), with the estimated
noise added and JPEG-compressed at the estimated quality. The photos' measure is read off that
curve. The reference is synthetic and fixed (seeded), so nothing is tuned to particular photos.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np

from adaptsr.adapt.calibration.jpeg_quality import JpegEstimate
from adaptsr.adapt.calibration.photos import Photo, gaussian_blur, jpeg_roundtrip, luma, shrink

SIGMAS = np.array([0, 0.25, 0.5, 0.75, 1, 1.25, 1.5, 1.75, 2, 2.5, 3, 3.5, 4, 5, 6.0])
REFERENCE_LR = 192  # LR side of the reference scene
MIN_EDGE_CONTRAST = 6.0  # gradient (levels per LR pixel) an edge needs, at the least
NOISE_CLEARANCE = 1.0  # ... and this many times the noise sigma (the smoothed gradient's
# noise is about a fifth of the sigma)
QUANTILE = 75  # the sharpest edges tell the lens blur; softer ones are defocus or shading
MIN_EDGE_PIXELS = 50  # edge pixels a photo needs to count


@dataclass(frozen=True)
class BlurEstimate:
    sigma: float  # HR pixels, as CameraConfig.blur_sigma
    uncertainty: float
    images: int
    regions: int  # edge pixels


@lru_cache(maxsize=8)
def dead_leaves(side: int, seed: int = 0) -> np.ndarray:
    """(side, side) grey dead-leaves scene in 0..255, edges antialiased by 4x4 supersampling."""
    rng = np.random.default_rng(seed)
    ss = 4
    n = side * ss
    img = np.full((n, n), 128.0, dtype=np.float32)
    rmin, rmax = 0.01 * n, 0.2 * n
    # Radii with density ~ r^-3 (scale invariance), drawn by inverting the CDF.
    u = rng.random(4000)
    radii = 1 / np.sqrt(u / rmax**2 + (1 - u) / rmin**2)
    for r in radii:
        cx, cy = rng.random(2) * n
        cv2.circle(img, (int(cx), int(cy)), int(r), float(rng.uniform(20, 235)), -1)
    return cv2.resize(img, (side, side), interpolation=cv2.INTER_AREA).astype(np.float64)


def edge_ratios(y: np.ndarray, noise_sigma: float) -> np.ndarray:
    """Gradient / smoothed-gradient ratio at strong edge pixels of a luma image."""
    gy, gx = np.gradient(y)
    g0 = np.hypot(gx, gy)
    ys = cv2.GaussianBlur(y, (0, 0), 1.0, borderType=cv2.BORDER_REFLECT_101)
    sy, sx = np.gradient(ys)
    g1 = np.hypot(sx, sy)
    # Local maxima of g1 along the gradient direction (quantised to 4 directions).
    angle = (np.round(np.arctan2(sy, sx) / (np.pi / 4)) % 4).astype(int)
    steps = [(0, 1), (1, 1), (1, 0), (1, -1)]
    peak = np.zeros_like(g1, dtype=bool)
    for k, (dy, dx) in enumerate(steps):
        ahead = np.roll(g1, (-dy, -dx), (0, 1))
        behind = np.roll(g1, (dy, dx), (0, 1))
        peak |= (angle == k) & (g1 >= ahead) & (g1 > behind)
    peak[:3] = peak[-3:] = False
    peak[:, :3] = peak[:, -3:] = False
    floor = max(MIN_EDGE_CONTRAST, NOISE_CLEARANCE * noise_sigma)
    strong = peak & (g1 > floor)
    return g0[strong] / g1[strong]


def photo_measure(p: Photo, noise_sigma: float) -> tuple[float, int]:
    r = edge_ratios(luma(p.rgb), noise_sigma)
    return (float(np.percentile(r, QUANTILE)) if len(r) else np.nan), len(r)


@lru_cache(maxsize=16)
def reference_curve(
    scale: int, noise_sigma: float, quality: int | None, subsampling: str
) -> np.ndarray:
    """The measure on the reference scene for each candidate sigma (same chain as the camera)."""
    hr = dead_leaves(REFERENCE_LR * scale)
    rng = np.random.default_rng(1)
    out = []
    for sigma in SIGMAS:
        lr = np.repeat(shrink(gaussian_blur(hr, float(sigma)), scale)[..., None], 3, 2)
        lr = lr + rng.normal(0.0, noise_sigma, lr.shape)  # per channel, as the camera's
        rgb = jpeg_roundtrip(lr, quality, subsampling)
        r = edge_ratios(luma(rgb), noise_sigma)
        out.append(np.percentile(r, QUANTILE) if len(r) else 1.0)  # no edge left: fully blurred
    # Blurrier edges give smaller ratios; keep the curve monotone for reading it off.
    return np.minimum.accumulate(np.array(out))


def sigma_from_measure(curve: np.ndarray, measure: float) -> float:
    xs, ys = curve[::-1], SIGMAS[::-1]  # increasing ratio
    return float(np.interp(measure, xs, ys))


def estimate_blur(
    photos: list[Photo], scale: int, noise_sigma: float, jpeg: JpegEstimate
) -> BlurEstimate | None:
    """The blur sigma with its spread between photos; None when no photo has enough edges."""
    noise_key = round(float(noise_sigma), 1)
    curve = reference_curve(scale, noise_key, jpeg.quality, jpeg.subsampling)
    measures, counts = [], []
    for p in photos:
        m, n = photo_measure(p, noise_key)
        if n >= MIN_EDGE_PIXELS:
            measures.append(m)
            counts.append(n)
    if not measures:
        return None
    sigmas = [sigma_from_measure(curve, m) for m in measures]
    sigma = float(np.median(sigmas))
    spread = np.std(sigmas) / np.sqrt(len(sigmas)) if len(sigmas) > 1 else 0.0
    # A curve step of the candidate grid is the resolution of the reading.
    step = float(np.interp(sigma, SIGMAS[:-1], np.diff(SIGMAS))) / 2
    return BlurEstimate(sigma, float(np.hypot(spread, step)), len(sigmas), int(sum(counts)))
