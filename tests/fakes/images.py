"""Small training images: textured enough for a loss to move, small enough for 2 CPU cores."""

import cv2
import numpy as np


def write_textured_pngs(folder, count, rng):
    """`count` 48x48 PNGs (12x12 noise from `rng`, enlarged) as 000.png, 001.png, ... in
    `folder` (made if missing); returns `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        small = rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)
        cv2.imwrite(str(folder / f"{i:03d}.png"), cv2.resize(small, (48, 48)))
    return folder
