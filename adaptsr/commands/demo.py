import click


@click.command()
@click.option(
    "--out",
    default="demo-out",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Folder for everything the demo writes.",
)
@click.option("--model", default="safmn-x4", show_default=True, help="Built-in model to adapt.")
@click.option(
    "--iters",
    default=40,
    show_default=True,
    type=click.IntRange(1),
    help="LoRA training iterations.",
)
@click.option("--force", is_flag=True, help="Reuse a non-empty --out folder.")
def demo(out: str, model: str, iters: int, force: bool) -> None:
    """Run the pipeline end to end on synthetic data and a built-in model (no downloads)."""
    from adaptsr.demo import run_demo

    run_demo(out, model=model, iters=iters, force=force, say=click.echo)
