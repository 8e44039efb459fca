import json

import click

from adaptsr.cli.commands._options import device_option, provider_option
from adaptsr.core.errors import UserError
from adaptsr.core.lazy import lazy_import

ab_check = lazy_import("adaptsr.export.ab_check")
bench_run = lazy_import("adaptsr.serve.bench_run")
opening = lazy_import("adaptsr.adapt.open")  # torch only for a PyTorch model


@click.command()
@click.argument("artifacts", nargs=-1)
@click.option("--base", help="Artifact A of an overhead check (with --candidate).")
@click.option("--candidate", help="Artifact B of an overhead check (with --base).")
@click.option(
    "--size",
    nargs=2,
    type=int,
    default=(256, 256),
    show_default=True,
    metavar="H W",
    help="Input height and width.",
)
@click.option("--runs", type=int, default=10, show_default=True, help="Timed runs per artifact.")
@click.option("--warmup", type=int, default=2, show_default=True, help="Untimed runs first.")
@click.option("--rounds", type=int, default=30, show_default=True, help="A/B rounds (--base).")
@click.option(
    "--max-rounds",
    type=click.IntRange(6),
    default=200,
    show_default=True,
    help="An inconclusive A/B check runs on to the rounds it needs, at most this many.",
)
@click.option(
    "--tile",
    type=int,
    default=None,
    help="Time the tiled path with this tile side (0 = tiled path, one tile). "
    "[default: the backend on the whole input]",
)
@click.option("--overlap", type=int, default=None, help="Tile overlap in input pixels [tile/32].")
@click.option("--batch", type=int, default=1, show_default=True, help="Tiles per model call.")
@click.option(
    "--vs-untiled",
    is_flag=True,
    help="With --tile: alternate tiled and untiled runs, report the throughput ratio.",
)
@click.option(
    "--cuda-graph",
    is_flag=True,
    help="Engines: replay the inference as a CUDA graph in the H2D/compute/D2H timing.",
)
@device_option
@provider_option
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
def bench(artifacts, base, candidate, size, runs, warmup, rounds, max_rounds, tile, overlap,
          batch, vs_untiled, cuda_graph, device, provider, as_json) -> None:  # fmt: skip
    """Latency, throughput and peak memory of ARTIFACTs, or a zero-overhead A/B check.

    An artifact is typed by its suffix: .onnx runs in ONNX Runtime, .engine/.plan/.trt in
    TensorRT, anything else is a PyTorch model (built-in name or checkpoint), with an adapter
    written MODEL+ADAPTER.safetensors. `--base A --candidate B` first compares two ONNX graphs
    node by node (weights aside), then runs A and B alternately on the same input: PASS when the
    95% interval of the median latency ratio B/A lies within 2% of 1, FAIL when it lies wholly
    outside, INCONCLUSIVE otherwise. Exits 1 unless both halves pass.
    """
    if (base is None) != (candidate is None):
        raise UserError("--base and --candidate go together")
    if base and artifacts:
        raise UserError("give either ARTIFACTs or --base/--candidate, not both")
    if not base and not artifacts:
        raise UserError("nothing to benchmark: give ARTIFACTs or --base A --candidate B")
    size = (int(size[0]), int(size[1]))

    def open_backend(spec: str):
        return opening.open_model(spec, device=device, provider=provider)

    if base:
        check = ab_check.check_overhead(
            base, candidate, open_backend, size, rounds, max_rounds, warmup
        )
        click.echo(json.dumps(check.to_json(), indent=2) if as_json else check.text())
        if not check.passed:
            raise SystemExit(1)
        return
    settings = bench_run.BenchSettings(
        size, runs, warmup, tile, overlap, batch, vs_untiled, cuda_graph
    )
    rows = bench_run.bench_artifacts(list(artifacts), open_backend, settings)
    if as_json:
        click.echo(json.dumps([row.to_json() for row in rows], indent=2))
    else:
        click.echo(bench_run.bench_table(rows))
