import click

from adaptsr.adapt.choices import DEFAULT_DEGRADATION, SEED_MAX
from adaptsr.adapt.rankmap import summary_table
from adaptsr.cli.commands._options import (
    allocate_aliases,
    allocation_options,
    allocation_settings,
    allow_random_base_option,
    degradation_option,
    max_pixels_option,
    targets_option,
)
from adaptsr.core.lazy import lazy_import

allocation = lazy_import("adaptsr.adapt.allocate")  # torch: only when the command runs


@click.command()
@click.option("--model", "model_spec", required=True, help="Base model: checkpoint or built-in.")
@click.option(
    "--data",
    type=click.Path(file_okay=False),
    help="Training data as for `adapt train`: HR images (LR made on the fly), or a DIV2K- or "
    "RealSR-style folder of LR/HR pairs.",
)
@click.option("--lr-dir", type=click.Path(file_okay=False), help="Paired LR folder.")
@click.option("--hr-dir", type=click.Path(file_okay=False), help="Paired HR folder.")
@click.option(
    "--budget",
    required=True,
    help="Trainable parameters: 886000, 886k, 1.2M, 8% (of the base model) or r8 (as uniform r8).",
)
@click.option(
    "--out",
    required=True,
    type=click.Path(dir_okay=False),
    help="Rank map .json; the heatmap goes beside it (same name, .png).",
)
@degradation_option(
    "How LR is made from HR-only data.", default=DEFAULT_DEGRADATION, show_default=True
)
@allocation_options
@allocate_aliases
@targets_option
@click.option(
    "--seed",
    type=click.IntRange(0, SEED_MAX),
    default=0,
    show_default=True,
    help="Seeds the crops, degradations, random scores and tie order.",
)
@click.option("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if present).")
@click.option("--force", is_flag=True, help="Overwrite the rank map and heatmap if they exist.")
@allow_random_base_option()
@max_pixels_option
def allocate(model_spec, budget, **options) -> None:
    """Score every LoRA site on adaptation data and share a parameter budget by importance.

    --score-batches, --score-batch and --score-patch were --batches, --batch and --patch here
    (still accepted).
    """
    settings = allocation_settings(options, budget=budget)
    job = allocation.AllocationJob(model=model_spec, settings=settings, **options)
    output = allocation.run_allocation(job)
    click.echo(summary_table(output.allocation))
    click.echo(f"wrote {output.rank_map} and {output.heatmap}")
    for line in output.allocation.warnings:
        click.echo(f"warning: {line}", err=True)
