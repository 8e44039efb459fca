import click

from adaptsr.cli.commands._options import allow_random_base_option
from adaptsr.core.errors import UserError
from adaptsr.core.fileio import check_distinct_outputs
from adaptsr.core.lazy import lazy_import

merging = lazy_import("adaptsr.adapt.merge_adapter")  # torch
blend_file = lazy_import("adaptsr.adapt.blend_file")


@click.command()
@click.option("--model", "model_spec", required=True, help="Base model: checkpoint or built-in.")
@click.option(
    "--adapter",
    "adapters",
    required=True,
    multiple=True,
    help="Adapter file, or FILE:WEIGHT; repeat to blend adapters of one base "
    "(base + sum of WEIGHT * update).",
)
@click.option(
    "--strength",
    type=float,
    default=None,
    help="Weight of a single --adapter (0: the base, 1: the adapter as trained). [default: 1]",
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False),
    help="Merged checkpoint (.safetensors or .pth).",
)
@click.option(
    "--blend-out",
    type=click.Path(dir_okay=False),
    help="Write the blend as one adapter file of the base (ranks concatenated, exact).",
)
@click.option("--force", is_flag=True, help="Overwrite --out (--blend-out) if it exists.")
@allow_random_base_option()
def merge(model_spec: str, adapters, strength, out, blend_out, force, allow_random_base) -> None:
    """Fold adapters into their base model: a plain checkpoint of the base architecture.

    `--adapter a.safetensors:0.7 --adapter b.safetensors:0.3` blends two adapters of one base
    (e.g. a fidelity and a GAN adapter: a fidelity-perception dial at no inference cost).
    """
    if not out and not blend_out:
        raise UserError("give --out (the merged checkpoint), --blend-out (an adapter file) or both")
    check_distinct_outputs({"--out": out, "--blend-out": blend_out})
    blend = blend_spec(adapters, strength)
    ok = allow_random_base
    merging.check_merge_out(model_spec, [p for p, _ in blend], out, force)  # before --blend-out
    if blend_out:
        click.echo(blend_file.write_blend_file(model_spec, blend, blend_out, force, ok).text())
    if out:
        click.echo(merging.merge_adapter_files(model_spec, blend, out, force, ok).text())


def blend_spec(adapters, strength: float | None) -> list[tuple[str, float]]:
    """(path, weight) pairs from `--adapter FILE[:WEIGHT]` (repeatable) and `--strength`."""
    parsed = [merging.parse_weighted(a) for a in adapters]
    if strength is not None:
        if len(parsed) > 1:
            raise UserError("--strength goes with one --adapter; give FILE:WEIGHT to blend several")
        if parsed[0][1] is not None:
            raise UserError(f"{adapters[0]} carries a weight: drop it or --strength")
        return [(parsed[0][0], strength)]
    return [(path, 1.0 if weight is None else weight) for path, weight in parsed]
