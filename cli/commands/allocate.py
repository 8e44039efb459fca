import click

from adaptsr.adapt.choices import (
    ALLOCATORS,
    DEFAULT_ALLOCATOR,
    DEFAULT_BATCH,
    DEFAULT_BATCHES,
    DEFAULT_DEGRADATION,
    DEFAULT_NORMALISE,
    DEFAULT_PATCH,
    DEFAULT_R_MAX,
    DEFAULT_R_MIN,
    DEFAULT_SCORE,
    DEGRADATIONS,
    NORMALISATIONS,
    SCORES,
    SEED_MAX,
)
from adaptsr.cli.commands._options import max_pixels_option


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
@click.option(
    "--degradation",
    type=click.Choice(DEGRADATIONS),
    default=DEFAULT_DEGRADATION,
    show_default=True,
    help="How LR is made from HR-only data.",
)
@click.option(
    "--batches",
    type=click.IntRange(1),
    default=DEFAULT_BATCHES,
    show_default=True,
    help="Mini-batches the scores are averaged over.",
)
@click.option(
    "--batch",
    type=click.IntRange(1),
    default=DEFAULT_BATCH,
    show_default=True,
    help="Crops per mini-batch.",
)
@click.option(
    "--patch",
    type=click.IntRange(1),
    default=DEFAULT_PATCH,
    show_default=True,
    help="HR patch size.",
)
@click.option(
    "--score",
    type=click.Choice(SCORES),
    default=DEFAULT_SCORE,
    show_default=True,
    help="Site importance: gradient norm (the paper), Fisher, input activation norm, random.",
)
@click.option(
    "--normalise",
    type=click.Choice(NORMALISATIONS),
    default=DEFAULT_NORMALISE,
    show_default=True,
    help="size: per-element scores (RMS), not favouring large layers.",
)
@click.option(
    "--allocator",
    type=click.Choice(ALLOCATORS),
    default=DEFAULT_ALLOCATOR,
    show_default=True,
    help="paper: fill the top sites to r-max; marginal: best gain per parameter first.",
)
@click.option(
    "--r-min",
    type=click.IntRange(0),
    default=DEFAULT_R_MIN,
    show_default=True,
    help="Lowest rank of a site (0: a site may get no adapter).",
)
@click.option(
    "--r-max",
    type=click.IntRange(1),
    default=DEFAULT_R_MAX,
    show_default=True,
    help="Highest rank of a site (also capped at its useful rank).",
)
@click.option(
    "--seed",
    type=click.IntRange(0, SEED_MAX),
    default=0,
    show_default=True,
    help="Seeds the crops, degradations, random scores and tie order.",
)
@click.option("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if present).")
@click.option("--force", is_flag=True, help="Overwrite the rank map and heatmap if they exist.")
@max_pixels_option
def allocate(
    model_spec,
    data,
    lr_dir,
    hr_dir,
    budget,
    out,
    degradation,
    batches,
    batch,
    patch,
    score,
    normalise,
    allocator,
    r_min,
    r_max,
    seed,
    device,
    force,
) -> None:
    """Score every LoRA site on adaptation data and share a parameter budget by importance."""
    import torch

    from adaptsr.adapt.allocate import allocate_ranks, image_batches
    from adaptsr.adapt.devices import pick_device
    from adaptsr.adapt.models import load_model, model_info
    from adaptsr.adapt.rankmap import heatmap_path, summary_table, write_rank_map
    from adaptsr.core.errors import UserError
    from adaptsr.core.fileio import check_outputs_not_inputs, check_writable

    if not out.lower().endswith(".json"):
        raise UserError(f"{out}: the rank map is a .json file")
    check_outputs_not_inputs(
        {"--out": out, "the heatmap": heatmap_path(out)}, [model_spec, data, lr_dir, hr_dir]
    )
    check_writable(out, force)
    check_writable(heatmap_path(out), force)
    if data is None and lr_dir is None and hr_dir is None and score != "random":
        raise UserError(
            f"--data (or --lr-dir and --hr-dir) is needed for {score} scores "
            "(only random scores need no data)"
        )
    if r_min > r_max:
        raise UserError(f"--r-min {r_min} is above --r-max {r_max}")
    device = torch.device(pick_device(device))
    model = load_model(model_spec, device=device)
    info = model_info(model)
    pairs = None
    if score != "random":
        pairs = image_batches(
            data,
            info.scale,
            batches,
            batch,
            patch,
            degradation,
            seed,
            device,
            lr_multiple=max(1, info.multiple_of),
            lr_min=info.min_size,
            lr_dir=lr_dir,
            hr_dir=hr_dir,
        )
    settings = {
        "model": model_spec,
        "data": data if data is not None else {"lr_dir": lr_dir, "hr_dir": hr_dir},
        "degradation": degradation,
        "batches": batches if pairs is not None else 0,
        "batch": batch,
        "patch": patch,
    }
    result = allocate_ranks(
        model,
        pairs,
        budget,
        score=score,
        allocator=allocator,
        r_min=r_min,
        r_max=r_max,
        normalise=normalise,
        seed=seed,
        progress=True,
        total=batches,
        settings=settings,
    )
    json_path, png_path = write_rank_map(result, out, force=force)
    click.echo(summary_table(result))
    click.echo(f"wrote {json_path} and {png_path}")
    for line in result.warnings:
        click.echo(f"warning: {line}", err=True)
