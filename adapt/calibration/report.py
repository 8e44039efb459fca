"""The calibration result, its one-paragraph report and the TOML file `--degradation` reads
(the `camera` preset's keys, then a [calibration] table with each estimate's uncertainty and
what it rests on)."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

from adaptsr.adapt.calibration.blur import MIXED_SPREAD, BlurEstimate
from adaptsr.adapt.calibration.jpeg_quality import JpegEstimate
from adaptsr.adapt.calibration.noise import NoiseEstimate
from adaptsr.core.fileio import atomic_output, check_writable


@dataclass(frozen=True)
class Calibration:
    scale: int
    photos: int
    blur: BlurEstimate
    noise: NoiseEstimate
    jpeg: JpegEstimate  # quality None: the photos show no sign of JPEG compression
    warning: str | None = None  # one line where the photos are too small to rely on

    def report(self) -> str:
        """Each estimate with its uncertainty and what it rests on, one line each."""
        b, n, j = self.blur, self.noise, self.jpeg
        if j.quality is None:
            jpeg_line = f"JPEG: no sign of JPEG compression ({j.images} photos)"
        else:
            source = "the files' tables" if j.method == "tables" else f"{j.regions} 8x8 blocks"
            jpeg_line = (
                f"JPEG quality: {j.quality} +- {j.uncertainty:g}, {j.subsampling} "
                f"({j.images} photos, from {source})"
            )
        noise_line = (
            f"noise sigma: {n.sigma:.2f} +- {n.uncertainty:.2f} levels of 255 "
            f"({n.images} photos, {n.regions} flat 8x8 blocks)"
        )
        if n.hidden and math.isinf(n.detection_limit):
            noise_line += (
                f", unreadable: too few flat blocks for noise to show through JPEG quality "
                f"{j.quality}, so there may be none or more (more photos would tell)"
            )
        elif n.hidden:
            noise_line += (
                f", not above the detection limit of {n.detection_limit:.2f}: JPEG quality "
                f"{j.quality} removes weaker noise, so there may be none"
            )
        blur_line = (
            f"blur sigma: {b.sigma:.2f} +- {b.uncertainty:.2f} HR pixels at x{self.scale} "
            f"({b.images} photos, {b.regions} edge pixels)"
        )
        if b.soft_scene:
            blur_line += (
                f", read from the narrower edges: the widths spread {b.spread:.1f}x as much as "
                "one blur of a sharp scene gives, so part are the scene's own soft edges"
            )
        if b.unresolved:
            blur_line += (
                f", not above the resolvable limit of {b.resolvable_limit:.2f}: the photos' edges "
                "cannot tell weaker blur from none"
            )
        lines = [
            blur_line,
            noise_line,
            jpeg_line,
        ]
        return "\n".join(lines + ([f"warning: {self.warning}"] if self.warning else []))


def _toml_float(x: float) -> str:
    return repr(round(float(x), 4))


def to_toml(c: Calibration) -> str:
    """The file's text: the camera preset's keys, then [calibration]."""
    b, n, j = c.blur, c.noise, c.jpeg
    lines = [
        "# Camera degradation calibrated from the camera's photos (adapt calibrate).",
        "# blur_sigma: Gaussian, HR pixels, before the bicubic downsample by the scale;",
        "# noise_sigma: Gaussian per channel, 8-bit levels, at LR; jpeg_quality: libjpeg 1-100.",
        f"blur_sigma = {_toml_float(b.sigma)}",
        f"noise_sigma = {_toml_float(n.sigma)}",
    ]
    if j.quality is None:
        lines.append("# jpeg_quality left out: the photos show no sign of JPEG compression")
    else:
        lines.append(f"jpeg_quality = {j.quality}")
    lines += [
        "",
        "[calibration]",
        f"scale = {c.scale}",
        f"photos = {c.photos}",
        f"blur_sigma_uncertainty = {_toml_float(b.uncertainty)}",
        f"blur_images = {b.images}",
        f"blur_edge_pixels = {b.regions}",
        "# the blur sigma below which the photos' edges cannot be told from unblurred ones",
        f"blur_resolvable_limit = {_toml_float(b.resolvable_limit)}",
        f"# the edges' width spread over one blur's: from {MIXED_SPREAD:g}, a soft scene whose",
        "# blur was read from the narrower edges",
        f"blur_edge_spread = {_toml_float(b.spread)}",
        f"noise_sigma_uncertainty = {_toml_float(n.uncertainty)}",
        f"noise_images = {n.images}",
        f"noise_flat_blocks = {n.regions}",
        "# under JPEG: the noise sigma below which the compression leaves no trace (0: none;",
        "# 255: too few flat blocks to show any)",
        f"noise_detection_limit = {_toml_float(min(n.detection_limit, 255.0))}",
        "noise_channel_sigma = [" + ", ".join(_toml_float(s) for s in n.channel_sigma) + "]",
        "# per channel (R, G, B): variance = a + b * level",
        "noise_variance_a = [" + ", ".join(_toml_float(a) for a, _ in n.variance_fit) + "]",
        "noise_variance_b = [" + ", ".join(_toml_float(b_) for _, b_ in n.variance_fit) + "]",
        f'jpeg_method = "{j.method}"',
        f"jpeg_quality_uncertainty = {_toml_float(j.uncertainty)}",
        f"jpeg_images = {j.images}",
        f'jpeg_subsampling = "{j.subsampling}"',
    ]
    if c.warning:
        lines.append(f"# warning: {c.warning}")
    return "\n".join(lines) + "\n"


def write_calibration(c: Calibration, path: str | os.PathLike, force: bool = False):
    """Write the TOML file atomically (refusing to overwrite unless `force`)."""
    path = check_writable(path, force)
    with atomic_output(path, force) as tmp:
        tmp.write_text(to_toml(c))
    return path
