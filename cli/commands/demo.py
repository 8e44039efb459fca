import click

from adaptsr.adapt.choices import DEFAULT_MODEL
from adaptsr.core.lazy import lazy_import

pipeline = lazy_import("adaptsr.cli.demo_pipeline")  # torch: only when the demo runs


@click.command()
@click.option(
    "--out",
    default="demo-out",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Folder for everything the demo writes.",
)
@click.option("--model", default=DEFAULT_MODEL, show_default=True, help="Model to adapt.")
@click.option(
    "--iters",
    type=click.IntRange(1),
    help="LoRA training iterations. [default: 300 on a CPU, 2000 on a GPU]",
)
@click.option(
    "--device",
    type=click.Choice(["auto", "cpu", "cuda"]),
    default="auto",
    show_default=True,
    help="auto: the GPU when there is one.",
)
@click.option("--force", is_flag=True, help="Replace an earlier demo in --out.")
def demo(out: str, model: str, iters: int | None, device: str, force: bool) -> None:
    """Adapt the bundled backbone to a camera it has never seen, and show what it gained.

    Calibration from the camera's photos alone, rank-aware LoRA on the calibrated degradation,
    merge, ONNX export with the zero-overhead proof, evaluation on the camera's photos; nothing
    is downloaded. Writes camera.toml, report.md, report.json, compare.png, rank_map.png."""
    pipeline.run_demo(out, model=model, iters=iters, force=force, device=device, say=click.echo)
