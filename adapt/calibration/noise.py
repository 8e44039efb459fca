"""Sensor noise of the camera's photos, as the `camera` preset means it: Gaussian, per channel,
in 8-bit levels, added to the LR image before JPEG.

Method. Flat regions are the 8x8 blocks whose smoothed luma has the smallest gradients (the
flattest 15%, away from clipped black and white). In them, the noise shows in the response
of a second-difference filter that cancels planes (Immerkaer's 3x3 mask; gain 6 on white
noise); its RMS per block and channel is the raw measure. JPEG removes part of the noise and
rounding adds some, so the raw measure is not yet the sigma: the same measure is taken on
replays of the camera's last steps, a smoothed copy of the photo plus Gaussian noise of each
candidate sigma, rounded and JPEG-compressed as the photos were (quality and subsampling from
the JPEG estimate), and the photo's measure is read off that curve (median over blocks, per
channel). The replays use the photo's own flat blocks, so JPEG's loss, clipping and what
smoothing leaves in them are the same in both.

Under JPEG (quality below FINE_QUALITY) and with the pixel estimate under STRONG_NOISE, the
sigma comes instead from the luma's low-frequency DCT coefficients (noise_dct): there the
compression has removed the noise from the high frequencies the filter sees, so its measure
hardly changes with the sigma, while the low frequencies with small steps still let it
through. The channels' sigmas and the variance fit are scaled to that sigma.

Signal dependence: the per-block sigmas, corrected through the same curve, are fitted per
channel as variance = a + b * intensity (least squares over intensity bins): b > 0 is shot
noise. The preset's single sigma is the median block sigma, averaged over the channels.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from adaptsr.adapt.calibration.jpeg_quality import JpegEstimate
from adaptsr.adapt.calibration.noise_dct import SIGMAS_Y, estimate_noise_dct, to_channel_sigma
from adaptsr.adapt.calibration.photos import Photo, jpeg_roundtrip, luma

SIGMAS = np.array([0, 0.5, 1, 1.5, 2, 3, 4, 5, 6, 8, 10, 12, 15, 18, 22, 26, 31, 37, 45, 55.0])
MASK = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], dtype=np.float64) / 6  # unit noise gain
FLAT_FRACTION = 0.15  # flattest share of the blocks used
CLIP_MARGIN = 12  # levels from 0 and 255 where clipping would hide noise
INTENSITY_BINS = 8
SIGMA_Y_TOP = float(to_channel_sigma(SIGMAS_Y[-1]))  # the DCT reading's largest sigma
REPLAY_SIDE = 1024  # pixels a side of a photo the replays run on, at most (replay_window)
# Where the pixel measure holds under JPEG: qualities whose steps are too fine to remove noise,
# and noise strong enough to survive in the high frequencies the filter sees. Elsewhere the
# sigma comes from the DCT coefficients (noise_dct).
FINE_QUALITY = 90
STRONG_NOISE = 20.0


@dataclass(frozen=True)
class NoiseEstimate:
    sigma: float  # 8-bit levels, per channel, as CameraConfig.noise_sigma
    uncertainty: float
    images: int
    regions: int  # flat 8x8 blocks
    channel_sigma: tuple[float, float, float]  # R, G, B
    variance_fit: tuple[tuple[float, float], ...]  # per channel (a, b): var = a + b * level
    # Under JPEG, the sigma below which the compression leaves no trace of the noise
    # (noise_dct.detection_limit); 0 where the pixels show any noise (no or fine JPEG)
    detection_limit: float = 0.0

    @property
    def hidden(self) -> bool:
        """The estimate reaches the detection limit within its uncertainty: the photos show no
        noise that can be told from none."""
        return self.detection_limit > 0 and self.sigma - self.uncertainty <= self.detection_limit


def flat_blocks(rgb: np.ndarray) -> np.ndarray:
    """(rows, cols) of the 8x8 blocks of the flattest FLAT_FRACTION, away from clipping."""
    smooth = cv2.GaussianBlur(rgb, (0, 0), 2.0)
    y = luma(smooth)
    gy, gx = np.gradient(y)
    grad = np.hypot(gx, gy)
    h, w = (rgb.shape[0] // 8) * 8, (rgb.shape[1] // 8) * 8
    g = grad[:h, :w].reshape(h // 8, 8, w // 8, 8).mean((1, 3))
    s = smooth[:h, :w].reshape(h // 8, 8, w // 8, 8, 3)
    safe = (s.min((1, 3, 4)) > CLIP_MARGIN) & (s.max((1, 3, 4)) < 255 - CLIP_MARGIN)
    # Image borders are skipped: the filters there see reflected pixels.
    safe[0, :] = safe[-1, :] = safe[:, 0] = safe[:, -1] = False
    if not safe.any():
        return np.zeros((0, 2), dtype=int)
    limit = np.quantile(g[safe], FLAT_FRACTION)
    return np.argwhere(safe & (g <= limit))


def block_rms(rgb: np.ndarray, blocks: np.ndarray) -> np.ndarray:
    """(N, 3) RMS of the plane-cancelling filter in each listed block and channel, over the
    block's inner 6x6 pixels: the filter there does not straddle a JPEG block border."""
    r = cv2.filter2D(rgb, cv2.CV_64F, MASK, borderType=cv2.BORDER_REFLECT_101)
    h, w = (rgb.shape[0] // 8) * 8, (rgb.shape[1] // 8) * 8
    inner = r[:h, :w].reshape(h // 8, 8, w // 8, 8, 3)[:, 1:7, :, 1:7]
    per = (inner**2).mean((1, 3))
    return np.sqrt(per[blocks[:, 0], blocks[:, 1]])


def block_means(rgb: np.ndarray, blocks: np.ndarray) -> np.ndarray:
    h, w = (rgb.shape[0] // 8) * 8, (rgb.shape[1] // 8) * 8
    m = rgb[:h, :w].reshape(h // 8, 8, w // 8, 8, 3).mean((1, 3))
    return m[blocks[:, 0], blocks[:, 1]]


def replay_window(rgb: np.ndarray, blocks: np.ndarray) -> tuple[slice, slice]:
    """The part of a photo its replays run on: all of it up to REPLAY_SIDE pixels a side, else
    the REPLAY_SIDE square (on the 16-pixel grid of JPEG's macroblocks) holding the most flat
    blocks (all of the photo where none holds any). The curve is a median over blocks: a
    thousand or so tell it as well as all."""
    h, w = rgb.shape[:2]
    if max(h, w) <= REPLAY_SIDE:
        return slice(0, h), slice(0, w)
    side_h, side_w = min(h, REPLAY_SIDE) // 16 * 16, min(w, REPLAY_SIDE) // 16 * 16
    best, at = 0, None
    for top in _starts(h, side_h):
        for left in _starts(w, side_w):
            inside = int(_inside(blocks, top, left, side_h, side_w).sum())
            if inside > best:
                best, at = inside, (top, left)
    if at is None:
        return slice(0, h), slice(0, w)
    return slice(at[0], at[0] + side_h), slice(at[1], at[1] + side_w)


def _inside(blocks: np.ndarray, top: int, left: int, side_h: int, side_w: int) -> np.ndarray:
    """Which blocks lie in the window, away from its border: there the filter and JPEG's
    chroma would see the cut."""
    r, c = blocks[:, 0] * 8 - top, blocks[:, 1] * 8 - left
    return (r >= 8) & (r < side_h - 16) & (c >= 8) & (c < side_w - 16)


def _starts(size: int, side: int) -> list[int]:
    """Window starts on the 16-pixel grid: every 128 pixels, and the last one that fits."""
    last = (size - side) // 16 * 16
    return sorted({*range(0, last + 1, 128), last})


def response_curve(photo: Photo, blocks: np.ndarray, jpeg: JpegEstimate, seed: int):
    """(len(SIGMAS), 3): the median block RMS of replays with each candidate sigma, on the
    flat blocks inside the replay window (all of them on a photo of up to REPLAY_SIDE)."""
    rows, cols = replay_window(photo.rgb, blocks)
    # Smoothed whole, then cut: the window's border pixels see their true neighbours.
    clean = cv2.GaussianBlur(photo.rgb, (0, 0), 1.5)[rows, cols]
    if clean.shape[:2] != photo.rgb.shape[:2]:
        kept = blocks[_inside(blocks, rows.start, cols.start, *clean.shape[:2])]
        blocks = kept - [rows.start // 8, cols.start // 8]
    rng = np.random.default_rng(seed)
    curve = []
    for sigma in SIGMAS:
        noisy = clean + rng.normal(0.0, sigma, clean.shape)
        replay = jpeg_roundtrip(noisy, jpeg.quality, jpeg.subsampling)
        curve.append(np.median(block_rms(replay, blocks), axis=0))
    # The measure grows with sigma; where JPEG flattens it, the smallest sigma is kept.
    return np.maximum.accumulate(np.array(curve), axis=0)


def invert(curve: np.ndarray, measured: np.ndarray) -> np.ndarray:
    """Sigma per value (..., 3) read off each channel's curve (linear between candidates)."""
    out = np.empty_like(measured, dtype=np.float64)
    for c in range(3):
        xs, idx = np.unique(curve[:, c], return_index=True)
        out[..., c] = np.interp(measured[..., c], xs, SIGMAS[idx])
    return out


def _fit(levels: np.ndarray, variances: np.ndarray) -> tuple[float, float]:
    """variance = a + b * level over intensity bins (medians), b clipped at 0."""
    edges = np.quantile(levels, np.linspace(0, 1, INTENSITY_BINS + 1))
    xs, ys = [], []
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        sel = (levels >= lo) & (levels <= hi)
        if sel.sum() >= 3:
            xs.append(np.median(levels[sel]))
            ys.append(np.median(variances[sel]))
    if len(xs) < 2 or np.ptp(xs) == 0:
        return float(np.median(variances)), 0.0
    b, a = np.polyfit(xs, ys, 1)
    b = max(0.0, float(b))
    return float(np.mean(ys) - b * np.mean(xs)), b


def estimate_noise(photos: list[Photo], jpeg: JpegEstimate) -> NoiseEstimate | None:
    """The preset's sigma with its spread; None when no photo has flat blocks."""
    per_image, sigmas, levels = [], [], []
    for i, p in enumerate(photos):
        blocks = flat_blocks(p.rgb)
        if len(blocks) < 4:
            continue
        curve = response_curve(p, blocks, jpeg, seed=i)
        s = invert(curve, block_rms(p.rgb, blocks))
        per_image.append(np.median(s, axis=0).mean())
        sigmas.append(s)
        levels.append(block_means(p.rgb, blocks))
    if not sigmas:
        return None
    s, lv = np.concatenate(sigmas), np.concatenate(levels)
    channel = np.median(s, axis=0)
    sigma = float(channel.mean())
    n = len(s)
    # Sampling error of a median of n block sigmas, and the spread between photos.
    within = 1.2533 * 1.4826 * np.median(np.abs(s - channel), axis=0).mean() / np.sqrt(n)
    between = np.std(per_image) / np.sqrt(len(per_image)) if len(per_image) > 1 else 0.0
    fit = tuple(_fit(lv[:, c], s[:, c] ** 2) for c in range(3))
    estimate = NoiseEstimate(
        sigma,
        float(np.hypot(within, between)),
        len(per_image),
        n,
        tuple(float(c) for c in channel),
        fit,
    )
    if jpeg.quality is None or jpeg.quality >= FINE_QUALITY or sigma >= STRONG_NOISE:
        return estimate
    return _from_coefficients(estimate, photos, jpeg)


def _from_coefficients(
    pixels: NoiseEstimate, photos: list[Photo], jpeg: JpegEstimate
) -> NoiseEstimate:
    """Under JPEG: the sigma from the DCT coefficients (noise_dct), the channels' sigmas and
    the variance fit scaled to it; the pixel estimate where no coefficient lets noise through."""
    sigma, uncertainty, blocks, images, limit = estimate_noise_dct(photos, jpeg)
    # none read, or a reading at the top of its grid (what edges in the flattest blocks give)
    if not blocks or sigma >= SIGMA_Y_TOP:
        return pixels
    if pixels.sigma > 0:
        ratio = sigma / pixels.sigma
        channel = tuple(c * ratio for c in pixels.channel_sigma)
        fit = tuple((a * ratio**2, b * ratio**2) for a, b in pixels.variance_fit)
    else:
        channel, fit = (sigma,) * 3, ((sigma**2, 0.0),) * 3
    return NoiseEstimate(sigma, uncertainty, images, blocks, channel, fit, limit)
