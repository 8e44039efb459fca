"""Calibration from the camera's photos alone: the `camera` degradation (blur in HR pixels,
Gaussian noise in 8-bit levels at LR, JPEG quality) that best explains them, with each
estimate's uncertainty and what it rests on. numpy, OpenCV and Pillow only (no torch).

    from adaptsr.adapt.calibration import calibrate, write_calibration
    c = calibrate(paths, scale=4)
    print(c.report())
    write_calibration(c, "camera.toml")

One module per estimate: jpeg_quality (first: the others replay the compression), noise (then:
blur replays the noise; noise_dct reads it from the DCT coefficients under JPEG), blur; report
holds the result and its TOML file. Methods and measured
accuracy: docs/degradations.md, "Calibration".
"""

from __future__ import annotations

import math
import os

from adaptsr.adapt.calibration.blur import MIN_EDGE_PIXELS, BlurEstimate, estimate_blur
from adaptsr.adapt.calibration.jpeg_quality import JpegEstimate, estimate_jpeg
from adaptsr.adapt.calibration.noise import NoiseEstimate, estimate_noise
from adaptsr.adapt.calibration.photos import MIN_SIDE, load_photos
from adaptsr.adapt.calibration.report import Calibration, to_toml, write_calibration
from adaptsr.core.errors import UserError

__all__ = [
    "MIN_PHOTOS",
    "MIN_SIDE",
    "BlurEstimate",
    "Calibration",
    "JpegEstimate",
    "NoiseEstimate",
    "RELIABLE_EDGES",
    "RELIABLE_FLAT_BLOCKS",
    "calibrate",
    "evidence_warning",
    "to_toml",
    "write_calibration",
]

MIN_PHOTOS = 3  # fewer cannot show the spread between photos that the uncertainties report
MAX_SCALE = 8
# Below these the estimates can be off by more than their uncertainty (docs/degradations.md,
# "Calibration": on five real photos of 75-160 pixels a side, 170 flat blocks and 900 edges,
# noise read 5-20% high, blur 0.8-1.5 HR pixels high)
RELIABLE_FLAT_BLOCKS = 200
RELIABLE_EDGES = 1000
LARGE_SIDE = 512  # short side (LR pixels) from which a photo is not "too small"


def calibrate(paths: list[str | os.PathLike], scale: int) -> Calibration:
    """Estimate the camera degradation from photos taken at the LR resolution of `scale`."""
    if int(scale) != scale or not 1 <= scale <= MAX_SCALE:
        raise UserError(f"scale must be an integer from 1 to {MAX_SCALE}, got {scale}")
    paths = list(paths)
    if len(paths) < MIN_PHOTOS:
        raise UserError(
            f"calibration needs at least {MIN_PHOTOS} photos of the camera, got {len(paths)}"
        )
    photos = load_photos(paths)
    jpeg = estimate_jpeg(photos)
    noise = estimate_noise(photos, jpeg)
    if noise is None:
        raise UserError(
            "the photos are too uniform or too close to black or white to estimate the noise "
            "from: no flat region with room for noise"
        )
    blur = estimate_blur(photos, int(scale), noise.sigma, jpeg)
    if blur is None:
        raise UserError(
            f"the photos are too uniform or too noisy to estimate the blur from: none has "
            f"{MIN_EDGE_PIXELS} clean edges (photos with sharp object outlines are needed)"
        )
    read = (blur.sigma, blur.uncertainty, blur.resolvable_limit, noise.sigma, noise.uncertainty)
    if not all(math.isfinite(x) for x in read):  # never written into a degradation file
        raise UserError(
            "the photos gave no defined estimate of the blur or the noise: give more photos, "
            "with flat regions and sharp object outlines"
        )
    return Calibration(
        int(scale), len(photos), blur, noise, jpeg, evidence_warning(photos, blur, noise)
    )


def evidence_warning(photos: list, blur: BlurEstimate, noise: NoiseEstimate) -> str | None:
    """One line where the estimates rest on too few flat blocks or edges, else None."""
    if noise.regions >= RELIABLE_FLAT_BLOCKS and blur.regions >= RELIABLE_EDGES:
        return None
    sides = sorted(min(p.rgb.shape[:2]) for p in photos)
    # Large photos short of evidence lack flat regions or clean edges, not pixels
    small = sides[0] < LARGE_SIDE
    return (
        f"the photos are {'too small' if small else 'short of flat regions or clean edges'} "
        f"to estimate from reliably ({len(photos)} photos, "
        f"{sides[0]}-{sides[-1]} px on the short side: {noise.regions} flat blocks, "
        f"{blur.regions} clean edges; {RELIABLE_FLAT_BLOCKS} and {RELIABLE_EDGES} wanted), "
        "the estimates can be off by more than their uncertainty: give "
        + ("more or larger photos" if small else "more photos with flat areas and sharp outlines")
    )
