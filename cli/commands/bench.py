import json

import click

from adaptsr.cli.commands._options import device_option, provider_option


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
def bench(
    artifacts,
    base,
    candidate,
    size,
    runs,
    warmup,
    rounds,
    max_rounds,
    tile,
    overlap,
    batch,
    vs_untiled,
    cuda_graph,
    device,
    provider,
    as_json,
) -> None:
    """Latency, throughput and peak memory of ARTIFACTs, or a zero-overhead A/B check.

    An artifact is typed by its suffix: .onnx runs in ONNX Runtime, .engine/.plan/.trt in
    TensorRT, anything else is a PyTorch model (built-in name or checkpoint), with an adapter
    written MODEL+ADAPTER.safetensors. `--base A --candidate B` first compares two ONNX graphs
    node by node (weights aside), then runs A and B alternately on the same input: PASS when the
    95% interval of the median latency ratio B/A lies within 2% of 1, FAIL when it lies wholly
    outside, INCONCLUSIVE otherwise. Exits 1 unless both halves pass.
    """
    from adaptsr.cli.commands._backends import open_artifact
    from adaptsr.core.errors import UserError

    if (base is None) != (candidate is None):
        raise UserError("--base and --candidate go together")
    if base and artifacts:
        raise UserError("give either ARTIFACTs or --base/--candidate, not both")
    if not base and not artifacts:
        raise UserError("nothing to benchmark: give ARTIFACTs or --base A --candidate B")
    size = (int(size[0]), int(size[1]))
    if base:
        _ab(base, candidate, size, rounds, max_rounds, warmup, device, provider, as_json)
        return

    from adaptsr.serve.backend_bench import bench_backend

    rows, engine_rows = [], {}
    for spec in artifacts:
        backend = open_artifact(spec, device=device, provider=provider)
        rows.append(
            bench_backend(
                backend,
                size,
                runs=runs,
                warmup=warmup,
                tile=tile,
                overlap=overlap,
                batch=batch,
                vs_untiled=vs_untiled,
            )
        )
        if backend.kind == "tensorrt":  # trtexec's split: copies and GPU compute apart
            from adaptsr.serve.engine_timing import time_engine

            shape = (backend.fixed_batch or batch, 3, *size)
            timing = time_engine(backend, shape, runs, warmup, cuda_graph=cuda_graph)
            engine_rows[len(rows) - 1] = timing
    if as_json:
        out = [r.to_dict() for r in rows]
        for i, timing in engine_rows.items():
            out[i]["engine_timing"] = timing.to_dict()
        click.echo(json.dumps(out, indent=2))
        return
    click.echo(
        f"{'artifact':<28} {'backend':<9} {'device':<6} {'size':>9} {'tiles':>5} "
        f"{'median ms':>10} {'p90 ms':>9} {'out MP/s':>9} {'RSS MB':>8} {'GPU MB':>8}"
    )
    for r in rows:
        gpu = "-" if r.peak_gpu_mb is None else f"{r.peak_gpu_mb:.0f}"
        click.echo(
            f"{_short(r.artifact):<28} {r.kind:<9} {r.device:<6} {r.size[0]:>4}x{r.size[1]:<4} "
            f"{r.tiles:>5} {r.latency.median_ms:>10.2f} {r.latency.p90_ms:>9.2f} "
            f"{r.out_mp_per_s:>9.3f} {r.peak_rss_mb:>8.0f} {gpu:>8}"
        )
        if r.tiling_efficiency:
            e = r.tiling_efficiency
            click.echo(
                f"  tiled/untiled throughput {e['ratio']:.3f} (95% CI {e['ci_low']:.3f} - "
                f"{e['ci_high']:.3f}, {e['rounds']} alternating rounds, untiled "
                f"{e['untiled_median_ms']:.2f} ms median)"
            )
    for i, t in engine_rows.items():
        graph = ", CUDA graph" if t.cuda_graph else ""
        click.echo(
            f"  {_short(rows[i].artifact)} at {t.shape}: GPU compute {t.compute.median_ms:.3f} ms, "
            f"H2D {t.h2d.median_ms:.3f} ms, D2H {t.d2h.median_ms:.3f} ms "
            f"(medians, CUDA events, pinned buffers{graph})"
        )


def _short(name: str, width: int = 28) -> str:
    return name if len(name) <= width else "..." + name[-(width - 3) :]


def _ab(base, candidate, size, rounds, max_rounds, warmup, device, provider, as_json) -> None:
    """`--base A --candidate B`: graph comparison (ONNX), then alternating latency."""
    from adaptsr.core.artifacts import artifact_kind
    from adaptsr.cli.commands._backends import open_artifact
    from adaptsr.core.errors import UserError
    from adaptsr.serve.backend_bench import compare_backends

    kinds = artifact_kind(base), artifact_kind(candidate)
    if kinds[0] != kinds[1]:  # fail before loading anything
        raise UserError(
            f"--base is a {kinds[0]} artifact but --candidate is {kinds[1]}: "
            "compare two artifacts of the same backend"
        )
    structure = _onnx_structure(base, candidate) if kinds[0] == "onnx" else None
    a = open_artifact(base, device=device, provider=provider)
    b = open_artifact(candidate, device=device, provider=provider)
    layers = None
    if a.kind == "tensorrt":  # engines: their IEngineInspector layers instead of a graph
        from adaptsr.export.trt_inspect import compare_layers, engine_layers

        layers = compare_layers(engine_layers(a.engine), engine_layers(b.engine))
    result = compare_backends(a, b, size, rounds, warmup, max_rounds=max_rounds)
    d = {
        "base": base,
        "candidate": candidate,
        "kind": a.kind,
        "device": a.device,
        "size": list(size),
        **result.to_dict(),
        "structure": structure,
        **({"layers": layers} if layers is not None else {}),
    }
    if as_json:
        click.echo(json.dumps(d, indent=2))
    else:
        if layers is not None:
            graph = (
                f"engine layers identical ({layers['layers'][0]} layers): PASS"
                if layers["structure_identical"]
                else f"engine layers differ, {layers['first_difference']}: FAIL"
            )
        elif structure is None:
            graph = f"not compared ({a.kind} artifacts hold no ONNX graph)"
        elif structure["identical"]:
            graph = (
                f"identical ({structure['nodes'][0]} nodes, "
                f"{structure['params'][0]:,} parameters): PASS"
            )
        else:
            graph = f"{structure['first_difference']}: FAIL"
        more = f"; about {result.rounds_needed} rounds would decide" if result.rounds_needed else ""
        if a.kind == "tensorrt":
            click.echo("timed: GPU compute time (CUDA events around execute_async_v3)")
        click.echo(
            f"{a.kind} on {a.device}, {size[0]}x{size[1]}, {result.rounds} alternating rounds\n"
            f"base       {result.base.median_ms:10.2f} ms median  {base}\n"
            f"candidate  {result.candidate.median_ms:10.2f} ms median  {candidate}\n"
            f"graph: {graph}\n"
            f"latency: ratio {result.ratio:.4f} (95% CI {result.ci_low:.4f} - "
            f"{result.ci_high:.4f}), tolerance {result.tolerance:.0%}: {result.verdict}{more}"
        )
    graph_failed = structure is not None and not structure["identical"]
    layers_failed = layers is not None and not layers["structure_identical"]
    if graph_failed or layers_failed or not result.passed:
        raise SystemExit(1)


def _onnx_structure(base: str, candidate: str) -> dict:
    import onnx

    from adaptsr.core.errors import UserError
    from adaptsr.export.structure import compare_structure
    from adaptsr.core.fileio import check_readable

    graphs = []
    for path in (candidate, base):
        try:
            graphs.append(
                onnx.load(str(check_readable(path, "ONNX file")), load_external_data=False)
            )
        except UserError:
            raise
        except Exception as e:  # protobuf raises its own DecodeError
            raise UserError(f"cannot read {path}: not an ONNX model ({type(e).__name__})") from e
    return compare_structure(*graphs)
