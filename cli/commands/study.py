import click

from adaptsr.adapt.choices import DEFAULT_MODEL, MAX_SEEDS
from adaptsr.cli.commands._options import (
    allocation_options,
    allow_random_base_option,
    degradation_option,
    scaling_option,
    targets_option,
)
from adaptsr.core.lazy import lazy_import

study_lib = lazy_import("adaptsr.adapt.study")  # torch: only when the command runs


@click.command()
@click.option("--model", default=DEFAULT_MODEL, show_default=True, help="Base model.")
@click.option(
    "--data",
    "data",
    multiple=True,
    required=True,
    type=click.Path(exists=True, file_okay=False),
    help="Training folder (repeatable), any layout `adapt train` reads.",
)
@click.option(
    "--val",
    required=True,
    type=click.Path(exists=True, file_okay=False),
    help="Validation folder: pairs, or HR-only (degraded with --degradation, fixed seed).",
)
@click.option(
    "--runs",
    default="r1,r4,r8,ra:r8,full",
    show_default=True,
    help="Run specs: rK, ra:rK, ra:886k, ra:rK:fisher, difffit, full; options per spec as "
    "@key=value (r8@rs, ra:r8@rmin=0, difffit@targets=attn, r8@loss=l1:1+gan:0.1@ema=0.999: "
    "'+' between a run's loss terms): docs/study.md.",
)
@click.option(
    "--seeds",
    default=3,
    show_default=True,
    type=click.IntRange(1, MAX_SEEDS),
    help="Seeds per run spec.",
)
@click.option("--iters", default=1000, show_default=True, type=int, help="Iterations per run.")
@click.option("--batch", default=8, show_default=True, type=int, help="Batch size.")
@click.option("--patch", default=128, show_default=True, type=int, help="HR crop size.")
@degradation_option(
    "For HR-only training and validation folders.", default="camera", show_default=True
)
@allocation_options
@click.option("--lr", type=float, help="Start learning rate of LoRA and DiffFit runs [1e-3].")
@scaling_option
@targets_option
@click.option("--loss", default="l1:1", help="Every run's loss: l1:1+gan:0.1 (or ',') [l1:1].")
@click.option("--ema", default=0.0, type=float, help="Every run's weight average [off].")
@click.option("--gan-start", default=0, type=int, help="Pixel-only iterations first [0].")
@click.option("--vgg-weights", type=click.Path(dir_okay=False), help="VGG19 file (perceptual).")
@click.option("--dists-weights", type=click.Path(file_okay=False), help="Folder of DISTS weights.")
@click.option("--val-every", default=0, type=int, help="Validation interval [iters/5].")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:N.")
@click.option("--workers", default=0, show_default=True, type=int, help="Data loading processes.")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Study folder (DIR).")
@click.option("--force", is_flag=True, help="Start over in a --out that holds another study.")
@allow_random_base_option()
@click.option("--quiet", is_flag=True, help="No progress bars.")
def study(model, data, runs, out, force, quiet, **options) -> None:
    """Compare training runs on the same data: ranks, rank-aware budgets, full fine-tuning.

    Every run is an `adapt train` run in OUT/<spec>-s<seed>/, scored on --val like `adapt
    eval`; a rerun skips finished runs and resumes interrupted ones. Writes OUT/study.md,
    OUT/study.json and the plots params.png (PSNR against trainable parameters) and
    curves.png (validation PSNR against iterations). Rank-aware runs score and allocate as
    the allocation options say (--score-batch and --score-patch: --batch and --patch unless
    given); a run spec's budget and score win.
    """
    settings = study_lib.study_settings(
        model, list(data), [r for r in runs.split(",") if r.strip()], options
    )
    study_lib.run_study(settings, out, force=force, progress=not quiet, say=click.echo)
