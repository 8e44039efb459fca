"""`adapt calibrate`'s time on large photos: three 3000 x 2000 JPEG files (scikit-image's
astronaut, coffee and chelsea tiled, Gaussian noise 5, quality 85), calibrated at x4; prints the
seconds and the report. Run it on two checkouts one after the other to compare (PYTHONPATH).

    python -m benchmarks.calibrate_large
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import skimage.data
from PIL import Image

from adaptsr.adapt.calibration import calibrate


def main() -> None:
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as folder:
        paths = []
        for i, name in enumerate(("astronaut", "coffee", "chelsea")):
            tiled = np.tile(getattr(skimage.data, name)()[..., :3], (4, 6, 1))[:2000, :3000]
            lr = np.clip(tiled + rng.normal(0, 5, tiled.shape), 0, 255).astype(np.uint8)
            paths.append(Path(folder) / f"{i}.jpg")
            Image.fromarray(lr).save(paths[-1], quality=85)
        start = time.perf_counter()
        c = calibrate(paths, 4)
        print(f"{time.perf_counter() - start:.1f} s")
        print(c.report())


if __name__ == "__main__":
    main()
