import click

from adaptsr.adapt.choices import DEFAULT_DEGRADATION, SEED_MAX
from adaptsr.cli.commands._options import degradation_option, max_pixels_option
from adaptsr.core.errors import UserError
from adaptsr.core.lazy import lazy_import

degrade_folder = lazy_import("adaptsr.adapt.degrade_folder")  # torch: only when the command runs
degradation_file = lazy_import("adaptsr.adapt.degradation_file")


@click.command()
@click.argument("hr_dir", required=False, type=click.Path(file_okay=False))
@click.option("--out", type=click.Path(file_okay=False), help="Folder for the LR images.")
@degradation_option("How LR is made from HR.", default=DEFAULT_DEGRADATION, show_default=True)
@click.option("--scale", default=4, show_default=True, type=click.IntRange(1, 16))
@click.option("-n", "--count", type=click.IntRange(1), help="Degrade the first N images [all].")
@click.option("--seed", default=0, show_default=True, type=click.IntRange(0, SEED_MAX))
@click.option(
    "--show",
    metavar="NAME|FILE",
    help="Print these settings as a degradation file (a preset to copy and edit) and stop.",
)
@click.option(
    "--sheet",
    type=click.Path(dir_okay=False),
    help="Contact sheet PNG [beside --out: OUT-contact-sheet.png].",
)
@click.option("--force", is_flag=True, help="Overwrite LR images already in --out.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@max_pixels_option
def degrade(hr_dir, out, degradation, scale, count, seed, show, sheet, force, quiet) -> None:
    """Degrade HR_DIR's images into --out as training would, and write a contact sheet (HR
    crops beside their LR) beside it, to look at what the model will be trained on."""
    if show:
        click.echo(degradation_file.to_toml(degradation_file.settings_of(show, "--show")), nl=False)
        return
    if hr_dir is None or out is None:
        raise UserError("give HR_DIR and --out (or --show NAME|FILE)")
    result = degrade_folder.degrade_folder(
        hr_dir, out, degradation, scale, count, seed, force, progress=not quiet, sheet=sheet
    )
    click.echo(
        f"wrote {len(result.images)} LR images (x{scale}, {result.degradation}, seed {seed}) "
        f"and {result.sheet}"
    )
