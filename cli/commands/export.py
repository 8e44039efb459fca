"""`adapt export onnx` and `adapt export trt` (torch is imported only by `onnx`)."""

import click


@click.group()
def export() -> None:
    """Export merged models to ONNX (fp32 or fp16) and build TensorRT engines."""


@export.command("onnx")
@click.option("--model", "model_spec", required=True, help="Base model: built-in name or file.")
@click.option("--adapter", type=click.Path(dir_okay=False), help="Adapter (.safetensors) to merge.")
@click.option("--merged", is_flag=True, help="Merge --adapter into the weights.")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Output .onnx file.")
@click.option("--dynamic", is_flag=True, help="Dynamic input height and width.")
@click.option("--tile", nargs=2, type=int, metavar="H W", help="Static input height and width.")
@click.option(
    "--dynamic-batch", is_flag=True, help="Dynamic batch dimension (tiles batched on an engine)."
)
@click.option("--fp16", is_flag=True, help="Write an fp16 graph (fp32 islands) for TensorRT.")
@click.option("--opset", default=18, show_default=True, type=int, help="ONNX opset (18 or newer).")
@click.option(
    "--latency-rounds",
    default=30,
    show_default=True,
    type=click.IntRange(6),
    help="Alternating ORT rounds of the merged-vs-base latency check.",
)
@click.option(
    "--latency-max-rounds",
    default=200,
    show_default=True,
    type=click.IntRange(6),
    help="An inconclusive latency check runs on to the rounds it needs, at most this many.",
)
@click.option("--force", is_flag=True, help="Overwrite existing outputs.")
def onnx_cmd(
    model_spec, adapter, merged, out, dynamic, tile, dynamic_batch, fp16, opset, latency_rounds,
    latency_max_rounds, force,
):  # fmt: skip
    """Export a base model, or a base with its adapter merged, to ONNX.

    Checks parity with PyTorch in ONNX Runtime (fails above 1e-4), and for a merged model proves
    zero overhead against the base export (graph structure and latency) in OUT's .report.json.
    """
    from adaptsr.adapt.models import load_model
    from adaptsr.export.onnx import export_onnx, load_merged, plan, report_path
    from adaptsr.core.fileio import check_outputs_not_inputs, check_writable

    if merged != bool(adapter):  # adapters only ever export merged: say so on the command line
        raise click.UsageError(
            "--merged needs --adapter A.safetensors"
            if merged
            else "an adapter exports merged into the weights: add --merged"
        )
    check_outputs_not_inputs({"--out": out, "the report": report_path(out)}, [model_spec, adapter])
    check_writable(out, force)
    check_writable(report_path(out), force)
    base = load_model(model_spec)
    tile_hw = tuple(tile) if tile else None
    plan(base, dynamic, tile_hw, opset)  # shape errors before the slow part
    model, info = load_merged(model_spec, adapter) if adapter else (base, None)
    report = export_onnx(
        model,
        out,
        dynamic=dynamic,
        tile=tile_hw,
        opset=opset,
        fp16=fp16,
        dynamic_batch=dynamic_batch,
        adapter=info,
        base=base if adapter else None,
        latency_rounds=latency_rounds,
        latency_max_rounds=latency_max_rounds,
        force=force,
        progress=True,
    )
    p = report.parity
    click.echo(f"wrote {out} ({report.metadata['precision']}, {report.architecture})")
    click.echo(
        f"parity vs PyTorch: max abs {p.max_abs:.2e}, mean abs {p.mean_abs:.2e} "
        f"over {len(p.checks)} checks: PASS"
    )
    if report.fp16 is not None:
        f16 = report.fp16
        click.echo(
            f"fp16 vs fp32: min PSNR {f16.min_psnr_db:.1f} dB in ONNX Runtime, "
            f"{f16.arithmetic.min_psnr_db:.1f} dB in fp16 arithmetic, no overflow: PASS"
        )
    if report.zero_overhead is not None:
        s, lat = report.zero_overhead.structure, report.zero_overhead.latency
        click.echo(
            f"zero overhead, structure: {s.nodes[0]} nodes, {s.params[0]:,} parameters, "
            f"the base graph node for node: {s.verdict}"
        )
        more = f"; about {lat.rounds_needed} rounds would decide" if lat.rounds_needed else ""
        click.echo(
            f"zero overhead, latency: merged/base {lat.ratio:.3f} "
            f"(95% CI {lat.ci_low:.3f}-{lat.ci_high:.3f}, {lat.rounds} rounds, "
            f"tolerance {lat.tolerance:.0%}): {lat.verdict}{more}"
        )
        if lat.verdict != "PASS":
            click.echo(
                "  (the graphs are identical, so a latency difference is timing noise: rerun "
                "on an idle machine or with more --latency-rounds)"
            )
    click.echo(f"report: {report_path(out)}")


@export.command("trt")
@click.option(
    "--onnx",
    "onnx_path",
    required=True,
    type=click.Path(dir_okay=False),
    help="ONNX from `adapt export onnx` (the --fp16 one for a strongly typed fp16 engine).",
)
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Output .engine file.")
@click.option("--fp16", is_flag=True, help="Build an fp16 engine (see --route).")
@click.option(
    "--route",
    type=click.Choice(["strongly-typed", "fp16-flag"]),
    default="strongly-typed",
    show_default=True,
    help="strongly-typed: layers in the ONNX's own types (fp16 from the fp16 ONNX); fp16-flag "
    "(TensorRT 10 only): fp32 ONNX + FP16 builder flag, normalisation/softmax pinned to fp32.",
)
@click.option("--min-shape", help="Smallest HxW for a dynamic model, e.g. 64x64.")
@click.option("--opt-shape", help="HxW TensorRT optimizes for, e.g. 256x256.")
@click.option("--max-shape", help="Largest HxW for a dynamic model, e.g. 1024x1024.")
@click.option(
    "--batch-range",
    nargs=3,
    type=int,
    metavar="MIN OPT MAX",
    help="Batch range of the profile (ONNX exported with --dynamic-batch) [1 1 1].",
)
@click.option("--workspace", default=4.0, show_default=True, type=float, help="Workspace, GiB.")
@click.option("--timing-cache", type=click.Path(dir_okay=False), help="Timing cache file.")
@click.option("--refittable", is_flag=True, help="Build an engine whose weights can be swapped.")
@click.option(
    "--refit-from",
    type=click.Path(dir_okay=False),
    help="A --refittable engine: copy it with the weights of --onnx (no build).",
)
@click.option(
    "--base-onnx",
    type=click.Path(dir_okay=False),
    help="The base model's export: build it too (one timing cache) and compare the layers.",
)
@click.option(
    "--verify/--no-verify",
    default=True,
    show_default=True,
    help="Run the engine against ONNX Runtime fp32 at the profile's min/opt/max shapes.",
)
@click.option(
    "--reference",
    type=click.Path(dir_okay=False),
    help="The fp32 ONNX that --verify compares with (needed when --onnx is the fp16 one).",
)
@click.option(
    "--min-psnr", default=45.0, show_default=True, type=float, help="--verify fails below, dB."
)
@click.option("--force", is_flag=True, help="Overwrite existing outputs.")
def trt_cmd(
    onnx_path, out, fp16, route, min_shape, opt_shape, max_shape, batch_range, workspace,
    timing_cache, refittable, refit_from, base_onnx, verify, reference, min_psnr, force,
):  # fmt: skip
    """Build a TensorRT engine from an exported ONNX, check it, write its sidecar (no torch).

    The sidecar OUT.engine.json records TensorRT version, GPU, ONNX checksum, profile, precision
    route and the verification PSNR; engines are refused on another TensorRT or GPU.
    """
    from adaptsr.core.artifacts import engine_info_path
    from adaptsr.core.errors import UserError
    from adaptsr.export.tensorrt import build_engine, parse_batch, parse_hw, refit_engine
    from adaptsr.core.fileio import check_outputs_not_inputs

    inputs = [p for p in (onnx_path, refit_from, base_onnx, reference) if p]
    check_outputs_not_inputs({"--out": out, "the info file": engine_info_path(out)}, inputs)

    if refit_from:
        given = [
            flag
            for flag, v in (
                ("--fp16", fp16), ("--min-shape", min_shape), ("--opt-shape", opt_shape),
                ("--max-shape", max_shape), ("--batch-range", batch_range),
                ("--refittable", refittable), ("--base-onnx", base_onnx),
                ("--timing-cache", timing_cache),
            )
            if v
        ]  # fmt: skip
        if given or route != "strongly-typed":
            drop = ", ".join(given or ["--route"])
            raise UserError(f"--refit-from keeps the engine's build settings: drop {drop}")
        info = refit_engine(
            refit_from, onnx_path, out, verify=verify, reference=reference, min_psnr=min_psnr,
            force=force,
        )  # fmt: skip
        click.echo(f"wrote {out}: {refit_from} refitted with the weights of {onnx_path} "
                   f"in {info.refit_seconds:.2f} s")  # fmt: skip
    else:
        info = build_engine(
            onnx_path,
            out,
            fp16=fp16,
            route=route,
            min_hw=parse_hw(min_shape),
            opt_hw=parse_hw(opt_shape),
            max_hw=parse_hw(max_shape),
            batch=parse_batch(batch_range),
            workspace_gib=workspace,
            timing_cache=timing_cache,
            refittable=refittable,
            verify=verify,
            reference=reference,
            min_psnr=min_psnr,
            base_onnx=base_onnx,
            force=force,
        )
        prof = info.profile
        click.echo(
            f"wrote {out} (TensorRT {info.tensorrt_version}, {info.gpu}, "
            f"{info.precision}, {info.route}, profile min {list(prof.min)} opt {list(prof.opt)} "
            f"max {list(prof.max)}, built in {info.build_seconds:.1f} s)"
        )
    v = info.verify
    if v is None:
        click.echo("verify: skipped (--no-verify)")
    else:
        worst = min(v.checks, key=lambda r: r.psnr_db)
        click.echo(
            f"verify vs ONNX Runtime fp32: min PSNR {v.min_psnr_db:.1f} dB "
            f"(at {worst.shape}), max abs {v.max_abs:.2e} "
            f"over {len(v.checks)} shape(s): PASS"
        )
    if info.zero_overhead is not None:
        z = info.zero_overhead
        tactics = "same tactics" if z.tactics_identical else "tactics differ"
        click.echo(
            f"zero overhead, engine layers: {z.layers[1]} layers, the base engine's layer for "
            f"layer ({tactics}): {z.verdict}"
        )
    click.echo(f"info: {engine_info_path(out)}")
