import click

from adaptsr.adapt.choices import DEFAULT_MODEL
from adaptsr.cli.commands._options import (
    device_option,
    max_pixels_option,
    model_options,
    provider_option,
)
from adaptsr.core.errors import UserError
from adaptsr.core.lazy import lazy_import

opening = lazy_import("adaptsr.adapt.open")  # torch only for a PyTorch model
serving = lazy_import("adaptsr.serve.upscale")


@click.command()
@click.argument("inputs", nargs=-1, required=True, type=click.Path())
@click.option("--out", "-o", "out_dir", required=True, type=click.Path(), help="Output folder.")
@model_options(
    model=f"Built-in model name or checkpoint (PyTorch). [default: {DEFAULT_MODEL}, pretrained, "
    "when no --onnx or --engine is given]"
)
@click.option(
    "--tile",
    type=int,
    default=None,
    help="Tile side in input pixels; 0 = whole image at once. "
    "[default: 512, or the engine's static input]",
)
@click.option(
    "--overlap", type=int, default=None, help="Overlap between tiles in input pixels [tile/32]."
)
@click.option(
    "--strength",
    type=float,
    default=None,
    help="Weight of --adapter's update (0: the base, 1: as trained), folded into the weights "
    "as `adapt merge --strength` does. [default: 1]",
)
@click.option("--batch", type=int, default=1, show_default=True, help="Tiles per model call.")
@click.option("--force", is_flag=True, help="Overwrite existing outputs (else they are skipped).")
@click.option("--quiet", "-q", is_flag=True, help="No progress and no summary: only errors.")
@device_option
@max_pixels_option
@provider_option
def upscale(
    inputs,
    out_dir,
    model,
    adapter,
    onnx,
    engine,
    tile,
    overlap,
    strength,
    batch,
    force,
    quiet,
    device,
    provider,
) -> None:
    """Upscale images (files or folders) into --out, keeping names, format and bit depth.

    Large images run in overlapping tiles blended without seams. Alpha is upscaled bicubically.
    Existing outputs are skipped (and reported) unless --force, so a rerun resumes a folder.
    An unreadable image is reported, the rest still finish, and the exit code is 1.
    Give at most one of --model (with optional --adapter), --onnx, --engine.
    """
    if not (model or onnx or engine):  # an --adapter alone is one for the default model
        model = DEFAULT_MODEL
    spec = opening.ModelSpec.from_options(model, adapter, onnx, engine, strength)
    plan = serving.plan_upscale(
        list(inputs),
        out_dir,
        lambda: opening.open_model(spec, device=device, provider=provider),
        tile=tile,
        overlap=overlap,
        batch=batch,
        force=force,
    )
    summary = serving.run_upscale(plan, progress=False if quiet else None)
    backend = plan.backend
    if not quiet:
        click.echo(
            f"wrote {len(summary.written)} image(s) to {out_dir} "
            f"(x{backend.scale}, {backend.kind} on {backend.device})"
        )
    if summary.skipped and not quiet:
        click.echo(
            f"note: skipped {len(summary.skipped)} existing output(s) (use --force to overwrite)",
            err=True,
        )
    if summary.failed:
        raise UserError(f"{len(summary.failed)} of {len(plan.jobs)} image(s) failed (listed above)")
