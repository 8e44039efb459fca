"""Options shared by the inference commands (upscale, bench): one definition, one meaning."""

import click

device_option = click.option(
    "--device",
    type=click.Choice(["auto", "cpu", "cuda"]),
    default="auto",
    show_default=True,
    help="Where a PyTorch model runs.",
)
provider_option = click.option(
    "--provider",
    type=click.Choice(["auto", "cpu", "cuda", "tensorrt"]),
    default="auto",
    show_default=True,
    help="ONNX Runtime execution provider for ONNX files.",
)


def _set_max_pixels(ctx, param, value):
    if value is not None:
        from adaptsr.core.images import set_max_pixels

        set_max_pixels(value)


max_pixels_option = click.option(
    "--max-pixels",
    type=int,
    default=None,
    expose_value=False,
    callback=_set_max_pixels,
    help="Refuse images above this many pixels, read from the file header before decoding "
    "[default: 67108864, 8192x8192].",
)
