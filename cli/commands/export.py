"""`adapt export onnx` and `adapt export trt`: parse, plan (every check, once), run, print.
Torch is imported only by `onnx`."""

import click

from adaptsr.cli.commands._options import allow_random_base_option, max_pixels_option
from adaptsr.core.contracts import EngineSidecar, ExportReport
from adaptsr.core.lazy import lazy_import
from adaptsr.export.fp16_proof import proof_lines
from adaptsr.export.plan import plan_export
from adaptsr.export.trt_plan import plan_engine
from adaptsr.serve.timing import overhead_lines

onnx_export = lazy_import("adaptsr.export.onnx")  # torch
engines = lazy_import("adaptsr.export.tensorrt")


@click.group()
def export() -> None:
    """Export merged models to ONNX (fp32 or fp16) and build TensorRT engines."""


@export.command("onnx")
@click.option("--model", "model_spec", required=True, help="Base model: built-in name or file.")
@click.option("--adapter", type=click.Path(dir_okay=False), help="Adapter (.safetensors) to merge.")
@click.option("--merged", is_flag=True, help="Merge --adapter into the weights.")
@click.option(
    "--strength",
    type=float,
    default=None,
    help="Weight of the merged adapter's update (0: the base, 1: as trained). [default: 1]",
)
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Output .onnx file.")
@click.option("--dynamic", is_flag=True, help="Dynamic input height and width.")
@click.option("--tile", nargs=2, type=int, metavar="H W", help="Static input height and width.")
@click.option(
    "--dynamic-batch", is_flag=True, help="Dynamic batch dimension (tiles batched on an engine)."
)
@click.option("--fp16", is_flag=True, help="Write an fp16 graph (fp32 islands) for TensorRT.")
@click.option("--fp16-io", is_flag=True, help="--fp16 with fp16 inputs and outputs.")
@click.option("--bf16", is_flag=True, help="Write a bf16 graph (fp32 islands; needs --opset 22).")
@click.option(
    "--check-images", type=click.Path(file_okay=False), help="Also check fp16/bf16 on its images."
)
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
@allow_random_base_option()
@max_pixels_option
def onnx_cmd(
    model_spec, adapter, merged, strength, out, dynamic, tile, dynamic_batch, fp16, opset,
    latency_rounds, latency_max_rounds, force, allow_random_base, fp16_io, bf16, check_images,
):  # fmt: skip
    """Export a base model, or a base with its adapter merged, to ONNX.

    Checks parity with PyTorch in ONNX Runtime (fails above 1e-4), and for a merged model proves
    zero overhead against the base export (graph identity; the latency is measured beside it)
    in OUT's .report.json.
    """
    if merged != bool(adapter):  # adapters only ever export merged: say so on the command line
        raise click.UsageError(
            "--merged needs --adapter A.safetensors"
            if merged
            else "an adapter exports merged into the weights: add --merged"
        )
    plan = plan_export(
        out, model=model_spec, adapter=adapter, dynamic=dynamic, tile=tile, opset=opset,
        fp16=fp16, dynamic_batch=dynamic_batch, latency_rounds=latency_rounds,
        latency_max_rounds=latency_max_rounds, force=force, strength=strength,
        allow_random_base=allow_random_base, fp16_io=fp16_io, bf16=bf16,
        check_images=check_images,
    )  # fmt: skip
    report = onnx_export.run_export(plan, progress=True)
    for line in export_lines(report):
        click.echo(line)
    click.echo(f"report: {plan.report}\nmodel card: {plan.card}")


def export_lines(report: ExportReport) -> list[str]:
    """What `adapt export onnx` says about the model it wrote."""
    p = report.parity
    lines = [
        f"wrote {report.onnx} ({report.metadata['precision']}, {report.architecture})",
        f"parity vs PyTorch: max abs {p.max_abs:.2e}, mean abs {p.mean_abs:.2e} "
        f"over {len(p.checks)} checks: PASS",
    ]
    if report.fp16 is not None:
        lines += proof_lines(report.fp16)
    if report.zero_overhead is not None:
        s, lat = report.zero_overhead.structure, report.zero_overhead.latency
        graph = f"{s.nodes[0]} nodes, {s.params[0]:,} parameters, the base graph node for node"
        lines += overhead_lines(graph, s.identical, lat, "merged/base")
    return lines


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
    "--min-psnr",
    type=float,
    help="--verify fails below, dB. [default: 45; 35 for a bf16 ONNX]",
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
    plan = plan_engine(
        onnx_path, out, refit_from=refit_from, fp16=fp16, route=route, min_shape=min_shape,
        opt_shape=opt_shape, max_shape=max_shape, batch_range=batch_range,
        workspace_gib=workspace, timing_cache=timing_cache, refittable=refittable,
        base_onnx=base_onnx, verify=verify, reference=reference, min_psnr=min_psnr, force=force,
    )  # fmt: skip
    info = engines.run_engine(plan)
    for line in engine_lines(info, out, onnx_path, refit_from):
        click.echo(line)
    click.echo(f"info: {plan.info}")


def engine_lines(info: EngineSidecar, out, onnx_path, refit_from) -> list[str]:
    """What `adapt export trt` says about the engine it wrote."""
    if refit_from:
        lines = [
            f"wrote {out}: {refit_from} refitted with the weights of {onnx_path} "
            f"in {info.refit_seconds:.2f} s"
        ]
    else:
        prof = info.profile
        lines = [
            f"wrote {out} (TensorRT {info.tensorrt_version}, {info.gpu}, "
            f"{info.precision}, {info.route}, profile min {list(prof.min)} opt {list(prof.opt)} "
            f"max {list(prof.max)}, built in {info.build_seconds:.1f} s)"
        ]
    v = info.verify
    if v is None:
        lines.append("verify: skipped (--no-verify)")
    else:
        worst = min(v.checks, key=lambda r: r.psnr_db)
        lines.append(
            f"verify vs ONNX Runtime fp32: min PSNR {v.min_psnr_db:.1f} dB "
            f"(at {worst.shape}), max abs {v.max_abs:.2e} "
            f"over {len(v.checks)} shape(s): PASS"
        )
    if info.zero_overhead is not None:
        z = info.zero_overhead
        tactics = "same tactics" if z.tactics_identical else "tactics differ"
        lines.append(
            f"zero overhead, engine layers: {z.layers[1]} layers, the base engine's layer for "
            f"layer ({tactics}): {z.verdict}"
        )
    return lines
