from pathlib import Path

import click

from adaptsr.cli.commands._options import max_pixels_option
from adaptsr.core.errors import UserError
from adaptsr.core.fileio import check_outside_inputs, check_writable
from adaptsr.core.images import list_images
from adaptsr.core.lazy import lazy_import

calibration = lazy_import("adaptsr.adapt.calibration")


@click.command()
@click.argument("photos", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("--scale", required=True, type=int, help="The upscaling factor to train for.")
@click.option(
    "--out", required=True, type=click.Path(dir_okay=False), help="Degradation file (.toml)."
)
@click.option("--force", is_flag=True, help="Overwrite --out.")
@max_pixels_option
def calibrate(photos, scale, out, force) -> None:
    """Estimate the camera's degradation (blur, noise, JPEG) from its PHOTOS alone (folders or
    image files) and write it as a file `--degradation` takes."""
    if Path(out).suffix.lower() != ".toml":
        raise UserError(f"--out {out}: the calibration is written as a .toml file")
    check_outside_inputs(out, photos, "--out")  # before the work
    check_writable(out, force)
    paths = [p for item in photos for p in (list_images(item) if Path(item).is_dir() else [item])]
    result = calibration.calibrate(paths, scale)
    click.echo(result.report())
    click.echo(f"wrote {calibration.write_calibration(result, out, force)}")
