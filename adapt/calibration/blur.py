"""Lens blur of the camera's photos: the Gaussian sigma, in HR pixels, applied before the
bicubic downsample by the scale, that best explains the photos' edges.

Method. Candidate edges are the local maxima, along the gradient, of the LR luma's gradient
after a Gaussian of sigma 1 LR pixel (smoothed, so the noise makes few). Around each, a 7 x 7
window (pixels within 2 of the normal line through it) is fitted by least squares with a step
edge: a + b * Phi((u - d) / w), u the distance along the normal, over a grid of offsets d and
widths w (then refined between grid widths). Only clean steps count: a fit whose residual is
above what the noise and 5% of the contrast explain is a corner, a line or texture, and an edge
whose contrast is under 4 noise sigmas is too noisy to fit. A least-squares width is nearly
unbiased under noise whatever the contrast, which a gradient-ratio measure is not, and the
residual test keeps texture (which looks sharper than any step) out.

The photos' measure is the interquartile mean of the fitted widths. The same measure is taken
on a reference scene rendered for each candidate sigma through the camera's whole chain: a
dead-leaves image (overlapping discs of random grey levels with a power-law size distribution:
the occlusion edges and the 1/f^2 spectrum of natural scenes, the test chart of camera
texture-sharpness standards), rendered at HR with 4x4 supersampling, blurred, shrunk by the
scale (MATLAB's bicubic), with the estimated noise added and JPEG-compressed at the estimated
quality. The noise level both fits use is the luma noise left after that JPEG (measured on the
reference), and the photos' width is read off the reference curve, which absorbs what the
step model leaves out (the bicubic kernel's lobes, JPEG's loss). The reference is synthetic
and fixed (seeded), so nothing is tuned to particular photos.

Resolvable limit. The reference curve is nearly flat at small sigma: the bicubic kernel (and,
under noise or a strong JPEG, the fits' own scatter) makes an edge about 0.35-0.6 LR pixels wide
before any blur, and a blur adds in quadrature, so at x4 a sigma of 0.5 HR pixels widens an edge
by under 0.01-0.03 LR pixels. The photos' width is known to within its uncertainty u (the
standard error of the interquartile mean over the edges, the spread between photos, and the
reference's own at sigma 0); a blur whose reference width is within RESOLVABLE u of sigma 0's
gives photos whose edge widths cannot be told from unblurred ones, at about 95% (the one-sided
2-sigma test of "wider than sharp"). The largest such sigma is the resolvable limit, reported
with the estimate as noise_dct's detection limit is for the noise.

Soft scenes. Real photos hold the scene's own soft edges (shading, defocus, hair) beside sharp
outlines, and nothing in an LR photo tells a soft edge from a blurred one; the camera's blur
only sets the narrowest edges, which none can be sharper than. A sharp scene under one blur
gives edge widths spread about as much as the reference's at that sigma; where the photos'
interquartile range of widths is MIXED_SPREAD times the reference's or more, their edges are a
mixture of the camera's and the scene's softness, and the blur is read from the narrower edges:
the photos' lower quartile against the reference's lower quartile.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np
from scipy.special import ndtr

from adaptsr.adapt.calibration.jpeg_quality import JpegEstimate
from adaptsr.adapt.calibration.photos import Photo, gaussian_blur, jpeg_roundtrip, luma, shrink

SIGMAS = np.array([0, 0.25, 0.5, 0.75, 1, 1.25, 1.5, 1.75, 2, 2.5, 3, 3.5, 4, 5, 6.0])
REFERENCE_LR = 192  # LR side of the reference scene
MIN_EDGE_CONTRAST = 6.0  # smoothed gradient (levels per LR pixel) a candidate needs, at least
RADIUS = 3  # the fitted window is (2 RADIUS + 1)^2, pixels within HALF_LENGTH of the normal
HALF_LENGTH = 2.0  # along the edge: short enough for the curved outlines of small objects
WIDTHS = np.linspace(0.1, 2.0, 20)  # LR pixels, step edge widths fitted
OFFSETS = np.linspace(-0.75, 0.75, 13)  # LR pixels, edge positions around the candidate
FIT_SLACK = 1.5  # residual variance allowed, in noise variances ...
SHAPE_SLACK = 0.05  # ... plus this share of the contrast (the step model is not exact)
MIN_SNR = 4.0  # contrast an edge needs, in noise sigmas
# Candidate edges fitted per image, a seeded sample: MAX_EDGES, and on large photos one per
# PIXELS_PER_EDGE LR pixels up to MAX_EDGES_LARGE, so that large photos (unlike small ones,
# which hold fewer) give the RELIABLE_EDGES clean edges calibrate asks for
MAX_EDGES = 600
PIXELS_PER_EDGE = 256
MAX_EDGES_LARGE = 4000
MIN_EDGE_PIXELS = 30  # clean edges a photo needs to count
# Width difference from sigma 0's, in uncertainties, that a blur must make to be told from none
RESOLVABLE = 2.0
# Spread of the photos' edge widths (interquartile range), over the reference's at the sigma
# their interquartile mean reads, from which their edges are a mixture with the scene's own
# soft ones. One blur of sharp scenes spreads them 0.7-1.8 times (docs/degradations.md).
MIXED_SPREAD = 2.0
LUMA_NOISE = float(np.sqrt(0.299**2 + 0.587**2 + 0.114**2))  # luma sigma per channel sigma


@dataclass(frozen=True)
class BlurEstimate:
    sigma: float  # HR pixels, as CameraConfig.blur_sigma
    uncertainty: float
    images: int
    regions: int  # edges fitted
    # The sigma below which the photos' edges cannot be told from unblurred ones (their width
    # within RESOLVABLE uncertainties of the reference's at sigma 0)
    resolvable_limit: float = 0.0
    # The photos' edges spread MIXED_SPREAD times the reference's or more (a soft scene): read
    # from their lower quartile
    spread: float = 1.0

    @property
    def soft_scene(self) -> bool:
        return self.spread >= MIXED_SPREAD

    @property
    def unresolved(self) -> bool:
        """The estimate reaches the resolvable limit within its uncertainty: the photos show no
        blur that can be told from none (or from any blur under the limit)."""
        return self.resolvable_limit > 0 and self.sigma - self.uncertainty <= self.resolvable_limit


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


def edge_sample(pixels: int) -> int:
    """How many candidate edges an image of this many LR pixels has fitted, at most."""
    return int(np.clip(pixels // PIXELS_PER_EDGE, MAX_EDGES, MAX_EDGES_LARGE))


def candidates(y: np.ndarray, noise_y: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(rows, cols, unit normals) of candidate edge pixels, at most edge_sample(...) of them."""
    ys = cv2.GaussianBlur(y, (0, 0), 1.0, borderType=cv2.BORDER_REFLECT_101)
    sy, sx = np.gradient(ys)
    g = np.hypot(sx, sy)
    # Local maxima of g along the gradient direction (quantised to 4 directions).
    angle = (np.round(np.arctan2(sy, sx) / (np.pi / 4)) % 4).astype(int)
    peak = np.zeros_like(g, dtype=bool)
    for k, (dy, dx) in enumerate([(0, 1), (1, 1), (1, 0), (1, -1)]):
        ahead = np.roll(g, (-dy, -dx), (0, 1))
        behind = np.roll(g, (dy, dx), (0, 1))
        peak |= (angle == k) & (g >= ahead) & (g > behind)
    # The smoothed gradient's noise is about a fifth of the pixel noise.
    peak &= g > max(MIN_EDGE_CONTRAST, MIN_SNR * 0.2 * noise_y)
    m = RADIUS + 1
    peak[:m] = peak[-m:] = False
    peak[:, :m] = peak[:, -m:] = False
    rows, cols = np.nonzero(peak)
    sample = edge_sample(y.size)
    if len(rows) > sample:
        keep = np.random.default_rng(0).choice(len(rows), sample, replace=False)
        rows, cols = rows[keep], cols[keep]
    normal = np.stack([sx[rows, cols], sy[rows, cols]], 1)
    return rows, cols, normal / np.linalg.norm(normal, axis=1, keepdims=True)


def fit_edges(y: np.ndarray, noise_y: float, error_y: float) -> tuple[np.ndarray, np.ndarray]:
    """(widths, contrasts) in LR pixels and levels of the candidate edges that fit a clean
    step; noise_y is the luma noise sigma, error_y that with JPEG's own error added."""
    rows, cols, normal = candidates(y, noise_y)
    oy, ox = (a.ravel() for a in np.mgrid[-RADIUS : RADIUS + 1, -RADIUS : RADIUS + 1])
    win = y[rows[:, None] + oy, cols[:, None] + ox]  # (edges, pixels)
    u = ox * normal[:, :1] + oy * normal[:, 1:]  # distance along the normal
    mask = np.abs(oy * normal[:, :1] - ox * normal[:, 1:]) <= HALF_LENGTH
    count = mask.sum(1)
    dev = np.where(mask, win - (win * mask).sum(1, keepdims=True) / count[:, None], 0.0)
    var = (dev**2).sum(1)
    # Residual (and contrast) of the best offset for each width: a + b E with E the step.
    resid = np.full((len(WIDTHS), len(rows)), np.inf)
    contrast = np.zeros_like(resid)
    for i, w in enumerate(WIDTHS):
        for d in OFFSETS:
            e = ndtr((u - d) / w)
            de = np.where(mask, e - (e * mask).sum(1, keepdims=True) / count[:, None], 0.0)
            ve = (de**2).sum(1) + 1e-12
            cov = (dev * de).sum(1)
            r = var - cov**2 / ve
            better = r < resid[i]
            resid[i] = np.where(better, r, resid[i])
            contrast[i] = np.where(better, cov / ve, contrast[i])
    k = np.argmin(resid, 0)
    at = np.arange(len(rows))
    b = np.abs(contrast[k, at])
    ok = (k > 0) & (k < len(WIDTHS) - 1)  # a width at the grid's end did not converge
    ok &= resid[k, at] / (count - 4) < FIT_SLACK * error_y**2 + (SHAPE_SLACK * b) ** 2
    ok &= b >= MIN_SNR * noise_y
    widths = _refine(resid, k)
    ok &= np.isfinite(widths)
    return widths[ok], b[ok]


def _refine(resid: np.ndarray, k: np.ndarray) -> np.ndarray:
    """Each edge's width between grid widths: the vertex of a parabola through the best
    width's residual and its neighbours'."""
    k = np.clip(k, 1, len(WIDTHS) - 2)
    at = np.arange(resid.shape[1])
    a, b, c = resid[k - 1, at], resid[k, at], resid[k + 1, at]
    curvature = a - 2 * b + c
    shift = np.where(curvature > 0, 0.5 * (a - c) / np.where(curvature > 0, curvature, 1), 0)
    return WIDTHS[k] + np.clip(shift, -1, 1) * (WIDTHS[1] - WIDTHS[0])


def interquartile_mean(widths: np.ndarray) -> float:
    lo, hi = np.percentile(widths, [25, 75])
    middle = widths[(widths >= lo) & (widths <= hi)]
    # two widths have none between their quartiles: their middle is the median
    return float(middle.mean()) if len(middle) else float(np.median(widths))


def interquartile_uncertainty(widths: np.ndarray) -> float:
    """Standard error of the interquartile mean (Tukey and McLaughlin's for a 25% trimmed
    mean): the sd of the widths winsorized at their quartiles, over 0.5 sqrt(n)."""
    lo, hi = np.percentile(widths, [25, 75])
    return float(np.std(np.clip(widths, lo, hi), ddof=1) / (0.5 * np.sqrt(len(widths))))


def lower_quartile(widths: np.ndarray) -> float:
    return float(np.percentile(widths, 25))


def interquartile_range(widths: np.ndarray) -> float:
    lo, hi = np.percentile(widths, [25, 75])
    return float(hi - lo)


def lower_quartile_uncertainty(widths: np.ndarray) -> float:
    """Standard error of the lower quartile: sqrt(p (1 - p) / n) over the density there, the
    density read from the widths between the 15th and 35th percentiles."""
    lo, hi = np.percentile(widths, [15, 35])
    density = 0.2 / max(float(hi - lo), 1e-6)
    return float(np.sqrt(0.25 * 0.75 / len(widths)) / density)


@dataclass(frozen=True)
class Reference:
    """The reference scene's edge widths for each candidate sigma (SIGMAS), through the camera's
    chain, each statistic made monotone in sigma for reading off."""

    curve: np.ndarray  # interquartile mean
    lower: np.ndarray  # lower quartile
    spread: np.ndarray  # interquartile range
    noise_y: float  # the luma noise sigma left after the chain's JPEG
    error_y: float  # the luma error with JPEG's own (what a step cannot fit: ringing, blocks)
    sharp_uncertainty: float  # of the interquartile mean at sigma 0
    sharp_lower_uncertainty: float  # of the lower quartile at sigma 0


@lru_cache(maxsize=16)
def reference_curve(
    scale: int, noise_sigma: float, quality: int | None, subsampling: str
) -> Reference:
    """The edge widths on the reference scene for each candidate sigma (same chain as the
    camera) as a Reference."""
    hr = dead_leaves(REFERENCE_LR * scale)
    rng = np.random.default_rng(1)
    lrs = [np.repeat(shrink(gaussian_blur(hr, float(s)), scale)[..., None], 3, 2) for s in SIGMAS]
    noisy = [lr + rng.normal(0.0, noise_sigma, lr.shape) for lr in lrs]  # per channel
    rgbs = [jpeg_roundtrip(x, quality, subsampling) for x in noisy]
    # What the fits see as noise: the camera's noise as JPEG left it, and JPEG's own error.
    clean = jpeg_roundtrip(lrs[4], quality, subsampling)
    noise_y = float(np.std(luma(rgbs[4]) - luma(clean)))
    error_y = float(np.std(luma(rgbs[4]) - luma(lrs[4])))
    fits = [fit_edges(luma(rgb), noise_y, error_y)[0] for rgb in rgbs]

    def monotone(statistic) -> np.ndarray:
        # no clean edge left: fully blurred; blurrier edges are wider
        out = [statistic(w) if len(w) > 1 else WIDTHS[-1] for w in fits]
        return np.maximum.accumulate(np.array(out))

    sharp = fits[0]
    return Reference(
        monotone(interquartile_mean),
        monotone(lower_quartile),
        np.array([interquartile_range(w) if len(w) > 1 else 0.0 for w in fits]),
        noise_y,
        error_y,
        interquartile_uncertainty(sharp) if len(sharp) > 1 else 0.0,
        lower_quartile_uncertainty(sharp) if len(sharp) > 1 else 0.0,
    )


def sigma_from_width(curve: np.ndarray, width: float) -> float:
    xs, idx = np.unique(curve, return_index=True)
    return float(np.interp(width, xs, SIGMAS[idx]))


def resolvable_limit(curve: np.ndarray, width_uncertainty: float) -> float:
    """The largest sigma whose reference width is within RESOLVABLE uncertainties of sigma
    0's: photos blurred less cannot be told from unblurred ones."""
    return sigma_from_width(curve, curve[0] + RESOLVABLE * width_uncertainty)


def clean_edge_widths(photos: list[Photo], ref: Reference) -> list[np.ndarray]:
    """Each photo's clean edges' widths, for the photos with MIN_EDGE_PIXELS of them."""
    fits = [fit_edges(luma(p.rgb), ref.noise_y, ref.error_y)[0] for p in photos]
    return [w for w in fits if len(w) >= MIN_EDGE_PIXELS]


def estimate_blur(
    photos: list[Photo], scale: int, noise_sigma: float, jpeg: JpegEstimate
) -> BlurEstimate | None:
    """The blur sigma with its spread between photos; None when no photo has enough edges."""
    noise_key = round(float(noise_sigma), 1)
    ref = reference_curve(scale, noise_key, jpeg.quality, jpeg.subsampling)
    fits = clean_edge_widths(photos, ref)
    if not fits:
        return None
    # The edges of all photos together tell the sigma; the photos' own readings, its spread.
    widths = np.concatenate(fits)
    # How the widths spread against one blur's: the reference's at the sigma all edges read
    all_edges = sigma_from_width(ref.curve, interquartile_mean(widths))
    at = float(np.interp(all_edges, SIGMAS, ref.spread))
    spread = interquartile_range(widths) / at if at > 0 else 1.0
    if spread >= MIXED_SPREAD:  # a soft scene: the narrower edges carry the camera's blur
        curve, statistic = ref.lower, lower_quartile
        own_u, sharp_u = lower_quartile_uncertainty, ref.sharp_lower_uncertainty
    else:
        curve, statistic = ref.curve, interquartile_mean
        own_u, sharp_u = interquartile_uncertainty, ref.sharp_uncertainty
    sigma = sigma_from_width(curve, statistic(widths))
    sigmas = [sigma_from_width(curve, statistic(w)) for w in fits]
    spread_sigma = np.std(sigmas) / np.sqrt(len(sigmas)) if len(sigmas) > 1 else 0.0
    # A curve step of the candidate grid is the resolution of the reading.
    step = float(np.interp(sigma, SIGMAS[:-1], np.diff(SIGMAS))) / 2
    # The width's uncertainty: sampling of the edges, the photos' spread, the reference's own.
    own = [statistic(w) for w in fits]
    between = np.std(own) / np.sqrt(len(own)) if len(own) > 1 else 0.0
    width_u = float(np.sqrt(own_u(widths) ** 2 + between**2 + sharp_u**2))
    return BlurEstimate(
        sigma,
        float(np.hypot(spread_sigma, step)),
        len(fits),
        len(widths),
        resolvable_limit(curve, width_u),
        float(spread),
    )
