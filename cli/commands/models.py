import json
from dataclasses import asdict

import click

from adaptsr.core.lazy import lazy_import

catalog = lazy_import("adaptsr.adapt.catalog")  # torch


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
def models(as_json: bool) -> None:
    """List the built-in models: pretrained ones (weights ship with adaptsr) and
    configurations (official hyper-parameters; random weights until `adapt fetch NAME`
    downloads the official release listed beside them)."""
    rows = catalog.builtin_catalog()
    if as_json:
        click.echo(json.dumps([asdict(r) for r in rows], indent=2))
    else:
        click.echo(catalog.catalog_table(rows))
