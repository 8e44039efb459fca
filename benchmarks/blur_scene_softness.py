"""How much of the blur that the interquartile mean of all edges reads on real photos is the
scenes' own softness: the blur read off the dead-leaves reference beside the blur read off
references made from HR photos, here the photos' own HR (an oracle no user has) and the training
HR photos; and what `adapt calibrate` reports (for a soft scene: from the narrower edges).

    python -m benchmarks.blur_scene_softness --lr heldLR --hr data/eval --hr data/adapt

--lr holds the camera's photos, --hr (repeatable) folders of HR photos, each rendered through
the calibrated chain (blur of each candidate sigma, MATLAB bicubic down by --scale, the
estimated noise, the estimated JPEG) and fitted as the reference scene is. The edge fits and the
read-off are calibrate's own (adaptsr.adapt.calibration.blur). CPU only.
"""

from __future__ import annotations

import click
import numpy as np

from adaptsr.adapt.calibration import blur, calibrate
from adaptsr.adapt.calibration.photos import (
    gaussian_blur,
    jpeg_roundtrip,
    load_photos,
    luma,
    shrink,
)
from adaptsr.core.images import list_images, read_image


def reference_curve(hrs, scale, noise_sigma, quality, subsampling, noise_y, error_y):
    """The interquartile mean edge width for each candidate sigma on these HR photos."""
    rng = np.random.default_rng(1)
    out = []
    for sigma in blur.SIGMAS:
        widths = []
        for hr in hrs:
            h, w = (hr.shape[0] // scale) * scale, (hr.shape[1] // scale) * scale
            sharp = np.stack([gaussian_blur(hr[:h, :w, c], float(sigma)) for c in range(3)], -1)
            lr = shrink(sharp, scale)
            rgb = jpeg_roundtrip(lr + rng.normal(0, noise_sigma, lr.shape), quality, subsampling)
            widths.append(blur.fit_edges(luma(rgb), noise_y, error_y)[0])
        found = np.concatenate(widths)
        out.append(blur.interquartile_mean(found) if len(found) else blur.WIDTHS[-1])
    return np.maximum.accumulate(np.array(out))


@click.command()
@click.option("--lr", "lr_dir", required=True, type=click.Path(exists=True, file_okay=False))
@click.option("--hr", "hr_dirs", multiple=True, type=click.Path(exists=True, file_okay=False))
@click.option("--scale", default=4, show_default=True)
def main(lr_dir, hr_dirs, scale) -> None:
    paths = list_images(lr_dir)
    c = calibrate(paths, scale)
    sub = c.jpeg.subsampling or "420"
    noise_key = round(float(c.noise.sigma), 1)
    ref = blur.reference_curve(scale, noise_key, c.jpeg.quality, sub)
    noise_y, error_y = ref.noise_y, ref.error_y
    widths = np.concatenate(
        [blur.fit_edges(luma(p.rgb), noise_y, error_y)[0] for p in load_photos(paths)]
    )
    measure = blur.interquartile_mean(widths)
    click.echo(f"adapt calibrate: blur {c.blur.sigma:.2f} (edge spread {c.blur.spread:.2f})")
    click.echo(
        "dead-leaves reference, the interquartile mean of all edges: blur "
        f"{blur.sigma_from_width(ref.curve, measure):.2f}"
    )
    for folder in hr_dirs:
        hrs = [read_image(p).rgb.astype(np.float64) * 255 for p in list_images(folder)]
        curve = reference_curve(hrs, scale, c.noise.sigma, c.jpeg.quality, sub, noise_y, error_y)
        click.echo(
            f"{folder} as the reference scene: blur {blur.sigma_from_width(curve, measure):.2f}"
        )


if __name__ == "__main__":
    main()
