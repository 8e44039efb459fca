"""Noise under JPEG, from the luma's 8x8 DCT coefficients: what survives the quantisation.

In the photos' flat blocks the coefficients of a JPEG file's luma are the noise (and what
little texture is left) quantised by the file's steps: index k = round(c / Q). For Gaussian
noise of sigma s the chance of each k is known, P(k) = Phi((k + 1/2) Q / s) - Phi((k - 1/2) Q / s),
so the sigma follows by maximum likelihood from the indices of the low frequencies whose steps
are small enough to let noise through (the high ones are quantised to zero whatever the noise:
a pixel-domain measure sees only those). JPEG's loss is thus inverted coefficient by
coefficient, with the file's own steps, not corrected by one factor.

For each frequency read, the flat blocks are those with the least activity in all the other
AC coefficients: white noise is independent between DCT coefficients, so choosing them does
not choose the blocks where the noise of the frequency read happened to be small. They are
chosen among all photos' blocks together, not photo by photo: a photo without flat regions
(a cat's fur fills it) would otherwise give its least textured blocks, read as noise.

Detection limit. A strong JPEG quantises weak noise to nothing: at quality 30 the smallest step
read is 17 levels, and a noise of 5 per channel (3.4 in luma) leaves one index in a thousand
nonzero, as many as the faint texture of flat blocks leaves without any noise. Below the sigma
at which the indices read would show DETECTABLE nonzero values, the photos cannot tell noise
from no noise (no estimator can: the file holds the same numbers), and whatever sigma a
degradation file gives there, its JPEG removes the same way; the limit is reported with the
estimate.
"""

from __future__ import annotations

import numpy as np
from scipy.special import ndtr

from adaptsr.adapt.calibration.jpeg_quality import JpegEstimate, photo_coefs
from adaptsr.adapt.calibration.photos import Photo
from adaptsr.adapt.jpeg_tables import LUMA_TABLE, scaled_table

# AC frequencies read: above the plane (a ramp is signal in every block), low enough that
# their steps let noise through
LOW = [(u, v) for u in range(6) for v in range(6) if 1 < u + v <= 5]
MIN_STEP = 3  # smaller steps are blurred by the decoder's pixel rounding
FLAT_FRACTION = 0.15  # least active share of the blocks
LUMA_GAIN = 0.299**2 + 0.587**2 + 0.114**2  # luma noise variance per channel variance
ROUNDING = LUMA_GAIN / 12 + 1 / 12  # the 8-bit RGB and the encoder's integer luma
SIGMAS_Y = np.geomspace(0.05, 60, 400)  # luma sigmas tried
# Nonzero indices the noise must be expected to leave among those read before it counts as
# seen: with 10 expected, 4 or fewer (what flat blocks' texture leaves) happen 3% of the time
DETECTABLE = 10


def _steps(photo: Photo, quality: int) -> np.ndarray:
    if photo.jpeg_tables is not None:
        return np.asarray(photo.jpeg_tables[0], dtype=float).reshape(8, 8)
    return scaled_table(LUMA_TABLE, quality).astype(float)


def _loglik(k: np.ndarray, step: float) -> np.ndarray:
    """Log-likelihood of the indices k (one frequency) for each luma sigma of SIGMAS_Y."""
    values, counts = np.unique(np.abs(k), return_counts=True)
    s = SIGMAS_Y[:, None]
    hi = ndtr((values + 0.5) * step / s)
    lo = np.where(values == 0, 1 - hi, ndtr((values - 0.5) * step / s))
    p = (hi - lo) * np.where(values == 0, 1, 2)  # both signs
    return (np.log(np.maximum(p, 1e-300)) * counts).sum(1)


def photo_indices(photo: Photo, quality: int) -> tuple[np.ndarray, np.ndarray]:
    """(steps, coefficients) of a photo's luma blocks away from clipping."""
    q = _steps(photo, quality)
    coefs = photo_coefs(photo)
    dc = coefs[:, 0, 0] / 8 + 128
    return q, coefs[(dc > 16) & (dc < 239)]  # clipping would hide noise


def activities(coefs: np.ndarray, q: np.ndarray, freqs: list) -> np.ndarray:
    """(blocks, freqs): each block's activity for each frequency read, the magnitude of all
    its AC coefficients but that one."""
    magnitude = np.abs(np.round(coefs / q) * q)
    magnitude[:, 0, 0] = 0
    everything = magnitude.sum((1, 2))
    return np.stack([everything - magnitude[:, u, v] for u, v in freqs], 1)


def photo_logliks(photos: list[Photo], quality: int) -> list[tuple[np.ndarray, int, np.ndarray]]:
    """Per photo: the log-likelihood over SIGMAS_Y of its flat-block indices, the blocks used,
    and the step of each index read (for the detection limit). The flat blocks are the least
    active FLAT_FRACTION of all photos' blocks together: the noise is the same in every photo
    while texture only adds activity, so a photo with no flat region (fur, foliage) gives none
    rather than its least textured blocks."""
    data = [photo_indices(p, quality) for p in photos]
    q = data[0][0]
    freqs = [f for f in LOW if q[f] >= MIN_STEP]
    if len(freqs) < 2 or not any(len(c) for _, c in data):
        return [(np.zeros(len(SIGMAS_Y)), 0, np.zeros(0)) for _ in photos]
    acts = [activities(c, qp, freqs) for qp, c in data]
    limits = np.quantile(np.concatenate(acts), FLAT_FRACTION, axis=0)
    out = []
    for (qp, coefs), act in zip(data, acts, strict=True):
        total, used, steps = np.zeros(len(SIGMAS_Y)), 0, []
        for j, f in enumerate(freqs):
            flat = act[:, j] <= limits[j]
            if flat.any():
                total += _loglik(np.round(coefs[flat, f[0], f[1]] / qp[f]), qp[f])
                used = max(used, int(flat.sum()))
                steps.append(np.full(int(flat.sum()), qp[f]))
        out.append((total, used, np.concatenate(steps) if steps else np.zeros(0)))
    return out


def detection_limit(steps: np.ndarray) -> float:
    """The per-channel sigma below which indices quantised with these steps are expected to
    show fewer than DETECTABLE nonzero values: weaker noise leaves no trace in them."""
    # the indices share a few steps: each distinct step once, times how many indices have it
    values, counts = np.unique(steps, return_counts=True)
    nonzero = 2 * (1 - ndtr(values[None, :] / (2 * SIGMAS_Y[:, None])))  # P(|k| >= 1)
    seen = np.nonzero(nonzero @ counts >= DETECTABLE)[0]
    return float(to_channel_sigma(SIGMAS_Y[seen[0]])) if len(seen) else np.inf


def to_channel_sigma(sigma_y: np.ndarray) -> np.ndarray:
    return np.sqrt(np.maximum(sigma_y**2 - ROUNDING, 0) / LUMA_GAIN)


def estimate_noise_dct(
    photos: list[Photo], jpeg: JpegEstimate
) -> tuple[float, float, int, int, float]:
    """(sigma per channel, uncertainty, flat blocks, photos that gave some, detection limit)
    from the photos' JPEG coefficients."""
    logliks, blocks, steps = [], 0, []
    for ll, n, s in photo_logliks(photos, int(jpeg.quality)):
        if n:
            logliks.append(ll)
            blocks += n
            steps.append(s)
    if not logliks:
        return np.nan, np.inf, 0, 0, np.inf
    total = np.sum(logliks, 0)
    sigma = float(to_channel_sigma(SIGMAS_Y[np.argmax(total)]))
    # Uncertainty: the sigmas within half a log-likelihood unit of the best (about 1 sigma),
    # and the spread between the photos' own best sigmas.
    near = to_channel_sigma(SIGMAS_Y[total >= total.max() - 0.5])
    own = to_channel_sigma(SIGMAS_Y[[int(np.argmax(ll)) for ll in logliks]])
    between = np.std(own) / np.sqrt(len(own)) if len(own) > 1 else 0.0
    limit = detection_limit(np.concatenate(steps))
    return sigma, float(np.hypot(np.ptp(near) / 2, between)), blocks, len(logliks), limit
