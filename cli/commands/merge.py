import click


@click.command()
@click.option("--model", "model_spec", required=True, help="Base model: checkpoint or built-in.")
@click.option("--adapter", required=True, type=click.Path(dir_okay=False), help="Adapter file.")
@click.option(
    "--out",
    required=True,
    type=click.Path(dir_okay=False),
    help="Merged checkpoint (.safetensors or .pth).",
)
@click.option("--force", is_flag=True, help="Overwrite --out if it exists.")
def merge(model_spec: str, adapter: str, out: str, force: bool) -> None:
    """Fold an adapter into its base model: a plain checkpoint of the base architecture."""
    import adaptsr
    from adaptsr.adapt.models import CHECKPOINT_SUFFIXES
    from adaptsr.core.fileio import check_not_input, check_writable

    check_not_input(out, [model_spec, adapter], "--out")
    check_writable(out, force)
    if not out.lower().endswith(CHECKPOINT_SUFFIXES):  # checked before any work
        raise adaptsr.UserError(f"{out}: choose a {' or '.join(CHECKPOINT_SUFFIXES)} file name")
    model = adaptsr.load_model(model_spec)
    adaptsr.load_adapter(model, adapter)
    report = adaptsr.lora_report(model)
    adaptsr.merge_lora(model)
    adaptsr.save_model(model, out, force=force)
    click.echo(
        f"merged {len(report['sites'])} adapters ({report['total']:,} parameters, "
        f"{report['percent']:.2f}% of the base) into {out}"
    )
