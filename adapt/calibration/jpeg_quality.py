"""JPEG quality of the camera's photos.

From a JPEG file's own quantisation tables: libjpeg scales the standard tables (ITU-T T.81
Annex K) by quality q as floor((T * s + 50) / 100) clipped to 1..255, with s = 5000 / q below 50
and 200 - 2q above; the q whose scaled tables equal the file's is the quality, exactly. Tables
that no q gives (an encoder with its own tables) get the q with the closest tables in log-step,
with the spread of the per-coefficient fits as its uncertainty.

From decoded pixels (a PNG of a once-JPEG photo): the 8x8 DCT coefficients of the luma of a
decoded JPEG sit on multiples of that quality's quantisation steps. The 8x8 grid is found by
blockiness (the jump across block borders against the jumps inside blocks); each candidate q is
scored by how tightly the coefficients cluster on its steps. No grid and no lattice: the photos
show no sign of JPEG compression.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np
from scipy.fft import dctn

from adaptsr.adapt.calibration.photos import Photo, luma
from adaptsr.adapt.jpeg_tables import CHROMA_TABLE, LUMA_TABLE, scaled_table

QUALITIES = np.arange(1, 101)
# Low frequencies whose steps the pixel-domain estimate checks (row, column), DC excluded:
# they carry most of the coefficients that are not quantised to zero.
LATTICE_FREQS = [(u, v) for u in range(5) for v in range(5) if (u, v) != (0, 0)]
MIN_LATTICE_SCORE = 0.3  # mean clustering of coefficients on the steps that counts as JPEG
HALF_LATTICE_WINDOW = 12  # qualities above the coarsest fitting lattice searched for the best


@dataclass(frozen=True)
class JpegEstimate:
    quality: int | None  # None: no sign of JPEG compression
    uncertainty: float  # quality steps (0: read exactly from the files' tables)
    images: int  # photos the estimate rests on
    regions: int  # 8x8 blocks (pixel-domain estimate) or tables read
    method: str  # "tables", "pixels" or "none"
    subsampling: str = "420"


def quality_from_tables(tables: tuple[tuple[int, ...], ...]) -> tuple[int, float]:
    """(quality, uncertainty) of a file's tables; exact (0) when libjpeg's scaling gives them."""
    luma_t = np.asarray(tables[0], dtype=float).reshape(8, 8)
    chroma_t = np.asarray(tables[1], dtype=float).reshape(8, 8) if len(tables) > 1 else None
    for q in QUALITIES:
        if np.array_equal(scaled_table(LUMA_TABLE, q), luma_t) and (
            chroma_t is None or np.array_equal(scaled_table(CHROMA_TABLE, q), chroma_t)
        ):
            return int(q), 0.0
    # Not libjpeg's tables: the quality whose luma steps are closest in log ratio.
    errs = [np.abs(np.log(scaled_table(LUMA_TABLE, q) / luma_t)).mean() for q in QUALITIES]
    best = int(QUALITIES[int(np.argmin(errs))])
    near = QUALITIES[np.asarray(errs) <= min(errs) + 0.05]
    return best, float(near.max() - near.min()) / 2 + 1


def block_offset(y: np.ndarray) -> tuple[tuple[int, int], float]:
    """The 8x8 grid's (row, column) offset and its blockiness (border over inner jumps)."""
    offsets, ratios = [], []
    for axis in (0, 1):
        jumps = np.abs(np.diff(y, axis=axis)).mean(axis=1 - axis)  # per row/column border
        phase = np.array([jumps[k::8].mean() for k in range(8)])
        k = int(np.argmax(phase))
        offsets.append((k + 1) % 8)
        median = np.median(phase)
        ratios.append(phase[k] / median if median > 0 else 1.0)  # uniform: no blocks
    return (offsets[0], offsets[1]), float(min(ratios))


def _block_dct(y: np.ndarray, offset: tuple[int, int]) -> np.ndarray:
    """(N, 8, 8) orthonormal DCT of the whole 8x8 blocks at `offset`, level-shifted by 128."""
    y = y[offset[0] :, offset[1] :]
    h, w = (y.shape[0] // 8) * 8, (y.shape[1] // 8) * 8
    blocks = (y[:h, :w] - 128).reshape(h // 8, 8, w // 8, 8).transpose(0, 2, 1, 3)
    return dctn(blocks.reshape(-1, 8, 8), axes=(1, 2), norm="ortho")


def lattice_scores(coefs: np.ndarray) -> np.ndarray:
    """Per quality: mean over LATTICE_FREQS of how tightly the coefficients that are not
    quantised to zero cluster on that quality's steps (1: all on the lattice, ~0: none)."""
    scores = np.zeros(len(QUALITIES))
    for i, q in enumerate(QUALITIES):
        steps = scaled_table(LUMA_TABLE, int(q))
        per_freq = []
        for u, v in LATTICE_FREQS:
            c, step = coefs[:, u, v], steps[u, v]
            c = c[np.abs(c) > step / 2]
            if step < 2 or len(c) < 20:  # a 1-step lattice is hidden by pixel rounding
                continue
            per_freq.append(np.cos(2 * np.pi * c / step).mean())
        scores[i] = np.mean(per_freq) if per_freq else 0.0
    return scores


def photo_coefs(p: Photo) -> np.ndarray:
    """Block DCT of a photo's luma on its most likely 8x8 grid: the file's own grid (0, 0) or
    the blockiest one (a cropped photo), whichever its coefficients cluster better on."""
    y = luma(p.rgb)  # the decoder's Y, up to the rounding of its RGB output
    candidates = {(0, 0), block_offset(y)[0]}
    found = [_block_dct(y, off) for off in candidates]
    if len(found) == 1:  # nothing to choose: no lattice to score
        return found[0]
    return max(found, key=lambda c: lattice_scores(c).max())


def quality_from_pixels(photos: list[Photo]) -> JpegEstimate:
    """Quality from the decoded pixels' DCT lattice, or no JPEG when there is none."""
    coefs = np.concatenate([photo_coefs(p) for p in photos])
    scores = lattice_scores(coefs)
    best = float(scores.max())
    if best < MIN_LATTICE_SCORE:
        return JpegEstimate(None, 0.0, len(photos), len(coefs), "none")
    # A lattice of about half the steps fits too (a quality of about twice the table scale):
    # the best quality next to the coarsest lattice that fits nearly as well is the true one.
    lowest = int(QUALITIES[scores >= 0.9 * best].min())
    window = (lowest <= QUALITIES) & (lowest + HALF_LATTICE_WINDOW >= QUALITIES)
    q = int(QUALITIES[window][np.argmax(scores[window])])
    near = QUALITIES[window & (scores >= scores[q - 1] - 0.02)]
    return JpegEstimate(q, float(max(1, np.ptp(near) / 2)), len(photos), len(coefs), "pixels")


def estimate_jpeg(photos: list[Photo]) -> JpegEstimate:
    """From the files' tables where every photo is a JPEG file, else from the pixels."""
    if all(p.jpeg_tables is not None for p in photos):
        found = [quality_from_tables(p.jpeg_tables) for p in photos]
        counts = Counter(q for q, _ in found)
        q = counts.most_common(1)[0][0]
        spread = float(np.ptp([f[0] for f in found]) / 2)
        unc = max(spread, max(u for _, u in found))
        sub = Counter(p.subsampling for p in photos).most_common(1)[0][0] or "420"
        return JpegEstimate(q, unc, len(photos), len(photos), "tables", sub)
    return quality_from_pixels(photos)
