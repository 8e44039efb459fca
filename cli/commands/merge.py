import click

from adaptsr.core.lazy import lazy_import

merging = lazy_import("adaptsr.adapt.merge_adapter")  # torch


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
    click.echo(merging.merge_adapter_file(model_spec, adapter, out, force).text())
