import click

from adaptsr.core.lazy import lazy_import

weights = lazy_import("adaptsr.adapt.fetch")


@click.command()
@click.argument("name")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def fetch(name: str, quiet: bool) -> None:
    """Download the official weights of built-in configuration NAME (`adapt models` lists
    them) into the user cache ($ADAPTSR_CACHE, else ~/.cache/adaptsr/weights), checked by
    sha256; `--model NAME` then uses them."""
    path = weights.fetch(name, progress=not quiet)
    click.echo(f"{name}: {path}")
