import click

from adaptsr.adapt.choices import DEGRADATIONS, SEED_MAX
from adaptsr.cli.commands._options import max_pixels_option, provider_option


@click.command("eval")
@click.option("--model", "model_spec", help="Built-in name or checkpoint path.")
@click.option("--onnx", "onnx_path", type=click.Path(), help="Score an exported ONNX instead.")
@click.option("--engine", "engine_path", type=click.Path(), help="Score a TensorRT engine instead.")
@click.option("--adapter", type=click.Path(), help="LoRA adapter file; base is scored beside it.")
@click.option("--hr", "hr_dir", required=True, type=click.Path(), help="Folder of HR images.")
@click.option(
    "--lr",
    "lr_dir",
    type=click.Path(),
    help="Folder of LR images matched to HR by file stem (omit it when --hr holds the pairs: "
    "RealSR-style NAME_HR/NAME_LR4, or a DIV2K root).",
)
@click.option(
    "--degradation",
    type=click.Choice(DEGRADATIONS),
    help="HR-only evaluation: make each LR image from its HR image.",
)
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
    "--perceptual/--no-perceptual", default=True, help="LPIPS and DISTS when their weights exist."
)
@click.option("--strict", is_flag=True, help="Stop at the first unreadable or too small image.")
@click.option("--force", is_flag=True, help="Overwrite existing outputs.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@max_pixels_option
def eval_command(
    model_spec,
    onnx_path,
    engine_path,
    adapter,
    hr_dir,
    lr_dir,
    degradation,
    seed,
    scale,
    save_dir,
    report,
    csv_path,
    compare,
    tile,
    device,
    provider,
    baselines,
    perceptual,
    strict,
    force,
    quiet,
) -> None:
    """Score a model (and its adapter) on LR/HR pairs: PSNR/SSIM on Y, LPIPS, DISTS.

    --onnx or --engine scores the deployed artifact instead, with the same metrics and report.
    """
    from datetime import datetime, timezone
    from pathlib import Path

    from adaptsr.adapt import evaluate as ev
    from adaptsr.adapt import metrics
    from adaptsr.adapt.devices import pick_device
    from adaptsr.adapt.models import load_model, model_info
    from adaptsr.core.errors import UserError
    from adaptsr.core.fileio import (
        check_distinct_outputs,
        check_outputs_not_inputs,
        check_readable,
        check_writable,
    )

    device = pick_device(device)
    outputs = {"--save": save_dir, "--report": report, "--csv": csv_path, "--compare": compare}
    check_distinct_outputs(outputs)
    if lr_dir and degradation:
        raise UserError("give either --lr (real pairs) or --degradation (HR-only), not both")
    for path in (report, csv_path, compare):
        if path:
            check_writable(path, force)
    if compare and not compare.lower().endswith(".png"):
        raise UserError(f"--compare {compare}: the side-by-side image is a .png file")

    if onnx_path or engine_path:  # a deployed artifact: merged weights, its own scale
        from adaptsr.cli.commands._backends import open_backend

        model = open_backend(model_spec, adapter, onnx_path, engine_path, provider=provider)
        model_spec, model_scale = model.name, model.scale
    else:
        if not model_spec:
            raise UserError("give exactly one of --model, --onnx, --engine")
        model = load_model(model_spec)
        model_scale = model_info(model).scale
    scale = scale or model_scale
    if scale != model_scale:
        raise UserError(f"--scale {scale} does not match the model's scale (x{model_scale})")
    if lr_dir is None and degradation is None:
        lr_dir = hr_dir  # a folder of pairs (RealSR-style, DIV2K root): find_pairs detects it
    pairs = ev.find_pairs(hr_dir, lr_dir, scale)
    files = [f for pair in pairs for f in (pair.hr, pair.lr) if f is not None]
    check_outputs_not_inputs(  # whatever --force says: the ground truth is never replaced
        outputs,
        [hr_dir, lr_dir, model_spec, adapter, *files, *{f.parent for f in files}],
    )

    base = None
    if adapter:
        from adaptsr.adapt.lora import load_adapter

        check_readable(adapter, "adapter file")
        base, model = model, load_model(model_spec)
        load_adapter(model, adapter)
    degrade = ev.make_degrade(degradation, scale, seed) if degradation else None

    fns, notes = metrics.perceptual_metrics(device=device) if perceptual else ({}, [])
    result = ev.evaluate(
        model,
        pairs,
        scale,
        base=base,
        degrade=degrade,
        device=device,
        tile=tile,
        baselines=baselines,
        perceptual=fns,
        save_dir=Path(save_dir) if save_dir else None,
        force=force,
        strict=strict,
        compare_rows=ev.COMPARE_ROWS if compare else 0,
        progress=not quiet,
    )
    result.notes[:0] = notes
    result.info = {
        "model": model_spec,
        "adapter": adapter,
        "artifact": getattr(model, "kind", "pytorch"),  # onnx / tensorrt: the deployed file
        "scale": scale,
        "hr": str(hr_dir),
        "lr": None if degradation else str(lr_dir),
        "degradation": degradation,
        "seed": seed if degradation else None,
        "metrics": metrics.CONVENTIONS,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        **result.info,
    }
    if report:
        ev.write_report(result, Path(report), force)
    if csv_path:
        ev.write_text(Path(csv_path), result.csv_text(), force)
    if compare:
        ev.write_compare(result, Path(compare), force)

    click.echo(f"{len(result.rows)} image(s), x{scale}, border {scale} px cropped")
    click.echo(result.table())
    if result.skipped:
        n = len(result.skipped)
        first = result.skipped[0]["reason"]
        click.echo(f"skipped {n} image(s), e.g. {first} (--strict makes that fatal)", err=True)
    for note in result.notes:
        click.echo(f"note: {note}", err=True)
