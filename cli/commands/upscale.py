import click

from adaptsr.adapt.choices import DEFAULT_MODEL
from adaptsr.cli.commands._options import device_option, max_pixels_option, provider_option


@click.command()
@click.argument("inputs", nargs=-1, required=True, type=click.Path())
@click.option("--out", "-o", "out_dir", required=True, type=click.Path(), help="Output folder.")
@click.option(
    "--model",
    help=f"Built-in model name or checkpoint (PyTorch). [default: {DEFAULT_MODEL}, pretrained, "
    "when no --onnx or --engine is given]",
)
@click.option("--adapter", type=click.Path(), help="LoRA adapter file for --model.")
@click.option("--onnx", type=click.Path(), help="ONNX file (ONNX Runtime).")
@click.option("--engine", type=click.Path(), help="TensorRT engine file (.engine/.plan).")
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
@click.option("--batch", type=int, default=1, show_default=True, help="Tiles per model call.")
@click.option("--force", is_flag=True, help="Overwrite existing outputs (else they are skipped).")
@device_option
@max_pixels_option
@provider_option
def upscale(
    inputs, out_dir, model, adapter, onnx, engine, tile, overlap, batch, force, device, provider
) -> None:
    """Upscale images (files or folders) into --out, keeping names, format and bit depth.

    Large images run in overlapping tiles blended without seams. Alpha is upscaled bicubically.
    Existing outputs are skipped (and reported) unless --force, so a rerun resumes a folder.
    An unreadable image is reported, the rest still finish, and the exit code is 1.
    Give at most one of --model (with optional --adapter), --onnx, --engine.
    """
    from pathlib import Path

    from adaptsr.cli.commands._backends import open_backend
    from adaptsr.core.errors import UserError
    from adaptsr.serve.upscale import collect_inputs, output_paths, upscale_files

    files = collect_inputs(list(inputs))  # bad paths fail before the model loads
    output_paths(files, Path(out_dir))
    if not (model or onnx or engine):  # an --adapter alone is one for the default model
        model = DEFAULT_MODEL
    backend = open_backend(model, adapter, onnx, engine, device=device, provider=provider)
    summary = upscale_files(
        backend, files, out_dir, tile=tile, overlap=overlap, batch=batch, force=force
    )
    click.echo(
        f"wrote {len(summary.written)} image(s) to {out_dir} "
        f"(x{backend.scale}, {backend.kind} on {backend.device})"
    )
    if summary.skipped:
        click.echo(
            f"note: skipped {len(summary.skipped)} existing output(s) (use --force to overwrite)",
            err=True,
        )
    if summary.failed:
        raise UserError(f"{len(summary.failed)} of {len(files)} image(s) failed (listed above)")
