import click

from adaptsr.adapt.choices import SEED_MAX
from adaptsr.cli.commands._options import (
    degradation_option,
    max_pixels_option,
    model_options,
    provider_option,
)
from adaptsr.core.lazy import lazy_import

evaluation = lazy_import("adaptsr.adapt.evaluate")  # torch
opening = lazy_import("adaptsr.adapt.open")


@click.command("eval")
@model_options(
    model="Built-in name or checkpoint path.",
    adapter="LoRA adapter file; base is scored beside it.",
    onnx="Score an exported ONNX instead.",
    engine="Score a TensorRT engine instead.",
)
@click.option("--hr", "hr_dir", required=True, type=click.Path(), help="Folder of HR images.")
@click.option(
    "--lr",
    "lr_dir",
    type=click.Path(),
    help="Folder of LR images matched to HR by file stem (omit it when --hr holds the pairs: "
    "RealSR-style NAME_HR/NAME_LR4, or a DIV2K root).",
)
@degradation_option("HR-only evaluation: make each LR image from its HR image.")
@click.option(
    "--seed",
    default=0,
    show_default=True,
    type=click.IntRange(0, SEED_MAX),
    help="Seed of --degradation.",
)
@click.option("--scale", type=int, help="Upscaling factor (default: the model's).")
@click.option("--save", "save_dir", type=click.Path(), help="Write SR images here (HR stems).")
@click.option("--report", type=click.Path(), help="Write a JSON report here.")
@click.option("--csv", "csv_path", type=click.Path(), help="Write per-image metrics as CSV.")
@click.option("--compare", type=click.Path(), help="Write a side-by-side crop PNG here.")
@click.option("--tile", default=0, show_default=True, help="Tile size for large images (0: whole).")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:N.")
@provider_option
@click.option("--baselines/--no-baselines", default=True, help="Also score bicubic upsampling.")
@click.option(
    "--perceptual/--no-perceptual",
    default=True,
    help="LPIPS and DISTS when their weights exist; HaarPSI and MS-GMSD when piq is installed.",
)
@click.option("--strict", is_flag=True, help="Stop at the first unreadable or too small image.")
@click.option("--force", is_flag=True, help="Overwrite existing outputs.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@max_pixels_option
def eval_command(model, adapter, onnx, engine, hr_dir, lr_dir, degradation, seed, scale,
                 save_dir, report, csv_path, compare, tile, device, provider, baselines,
                 perceptual, strict, force, quiet) -> None:  # fmt: skip
    """Score a model (and its adapter) on LR/HR pairs: PSNR/SSIM-Y, LPIPS, DISTS, HaarPSI, MS-GMSD.

    --onnx or --engine scores the deployed artifact instead, with the same metrics and report.
    """
    request = evaluation.EvalRequest(
        model=opening.ModelSpec.from_options(model, adapter, onnx, engine),
        hr=hr_dir,
        lr=lr_dir,
        degradation=degradation,
        seed=seed,
        scale=scale,
        outputs=evaluation.EvalOutputs(save_dir, report, csv_path, compare),
        tile=tile,
        device=device,
        provider=provider,
        baselines=baselines,
        perceptual=perceptual,
        strict=strict,
        force=force,
        progress=not quiet,
    )
    result = evaluation.run_evaluation(request)
    click.echo(result.headline())
    click.echo(result.table())
    for note in [result.skipped_note(), *(f"note: {n}" for n in result.notes)]:
        if note:
            click.echo(note, err=True)
