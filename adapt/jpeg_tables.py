"""The standard JPEG quantisation tables and libjpeg's quality scaling (numpy, no torch): the one
copy that the torch JPEG (adapt/jpeg.py) and the calibration's quality estimate read."""

from __future__ import annotations

import numpy as np

# ITU-T T.81 Annex K, tables K.1 (luminance) and K.2 (chrominance), row-major.
LUMA_TABLE = np.array(
    [
        [16, 11, 10, 16, 24, 40, 51, 61],
        [12, 12, 14, 19, 26, 58, 60, 55],
        [14, 13, 16, 24, 40, 57, 69, 56],
        [14, 17, 22, 29, 51, 87, 80, 62],
        [18, 22, 37, 56, 68, 109, 103, 77],
        [24, 35, 55, 64, 81, 104, 113, 92],
        [49, 64, 78, 87, 103, 121, 120, 101],
        [72, 92, 95, 98, 112, 100, 103, 99],
    ]
)
CHROMA_TABLE = np.full((8, 8), 99)
CHROMA_TABLE[:4, :4] = [[17, 18, 24, 47], [18, 21, 26, 66], [24, 26, 56, 99], [47, 66, 99, 99]]


def scaled_table(base: np.ndarray, quality: int) -> np.ndarray:
    """libjpeg's table for an integer quality 1..100: floor((T * s + 50) / 100) clipped to
    1..255, with s = 5000 / q below 50 and 200 - 2q above."""
    s = 5000 // quality if quality < 50 else 200 - 2 * quality
    return np.clip((base * s + 50) // 100, 1, 255)
