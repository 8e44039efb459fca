import json

import click


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
def models(as_json: bool) -> None:
    """List the built-in models: pretrained ones (weights ship with adaptsr) and
    configurations (official hyper-parameters, random weights)."""
    from adaptsr.adapt.models import BUILTIN_MODELS, PRETRAINED

    rows = []
    for name, build in BUILTIN_MODELS.items():
        model = build()  # the bare constructor: counting needs no checkpoint round trip
        params = sum(p.numel() for p in model.parameters())
        scale = int(name.rsplit("-x", 1)[1])
        row = {"name": name, "arch": type(model).__name__, "scale": scale, "params": params}
        rows.append({**row, "weights": "random"})
        for pre_name, pre in PRETRAINED.items():
            if pre.architecture == name:
                rows.append({**row, "name": pre_name, "weights": "pretrained"})
    rows.sort(key=lambda r: r["weights"] != "pretrained")  # the ready-to-use ones first
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    click.echo(f"{'name':<18} {'arch':<7} {'scale':>5} {'params':>12}  weights")
    for r in rows:
        click.echo(
            f"{r['name']:<18} {r['arch']:<7} {r['scale']:>5} {r['params']:>12,}  {r['weights']}"
        )
