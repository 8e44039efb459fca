import sys
from pathlib import Path

import click

from adaptsr.adapt.choices import SEED_MAX
from adaptsr.cli.commands._options import (
    allocation_options,
    allow_random_base_option,
    degradation_option,
    max_pixels_option,
    scaling_option,
    targets_option,
)
from adaptsr.core.lazy import lazy_import

training = lazy_import("adaptsr.adapt.train")  # torch: only when the command runs
bench_report = lazy_import("adaptsr.adapt.train.bench_report")


@click.command()
@click.option("--model", "model_spec", help="Base model: checkpoint or built-in name.")
@click.option(
    "--data",
    multiple=True,
    type=click.Path(file_okay=False),
    help="Training folder (repeatable): HR-only, or pairs in any layout of docs/training.md; "
    "DIR:WEIGHT, DIR:DEGRADATION or DIR:WEIGHT:DEGRADATION mix sources.",
)
@click.option("--lr-dir", type=click.Path(file_okay=False), help="LR folder of paired data.")
@click.option("--hr-dir", type=click.Path(file_okay=False), help="HR folder of paired data.")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Run folder.")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), help="JSON/TOML file.")
@click.option(
    "--mode", help="lora (default), difffit, full or pretrain; with --bench a list: lora,full."
)
@click.option("--rank", type=int, help="Uniform LoRA rank (default 8).")
@click.option(
    "--rank-map",
    type=click.Path(dir_okay=False),
    help='Rank map JSON: `adapt allocate`\'s, or {"ranks": {site: rank}}.',
)
@click.option(
    "--rank-aware",
    is_flag=True,
    default=None,
    help="Ranks from site scores under --budget, as `adapt allocate` gives them.",
)
@click.option("--budget", help="Rank-aware budget: parameters (886k), percent (8%) or r8.")
@allocation_options
@click.option("--alpha", type=float, help="LoRA alpha (default 1).")
@scaling_option
@targets_option
@click.option("--iters", type=int, help="Training iterations (default 100000).")
@click.option("--batch", type=int, help="Global batch size (default 8).")
@click.option("--patch", type=int, help="HR crop size (default 256).")
@click.option("--lr", type=float, help="Start learning rate (lora 1e-3, full 1e-4, pretrain 2e-4).")
@click.option("--seed", type=click.IntRange(0, SEED_MAX), help="Random seed (default 0).")
@click.option("--device", help="auto (default), cpu, cuda, cuda:N.")
@click.option("--save-every", type=int, help="Checkpoint interval (default 1000).")
@click.option("--val-every", type=int, help="Validation interval (default 5000).")
@click.option("--log-every", type=int, help="Log interval (default 10).")
@click.option("--val", type=click.Path(file_okay=False), help="Validation folder.")
@click.option("--val-split", type=int, help="Hold out the last N training images instead.")
@degradation_option("For HR-only data (default realesrgan; bicubic for pretrain).")
@click.option("--workers", type=int, help="Data loading processes (default 4).")
@click.option(
    "--kernels",
    type=click.Choice(["auto", "reference", "triton"]),
    help="LoRA kernels: auto (fused on CUDA), reference (plain PyTorch), triton.",
)
@click.option(
    "--precision", type=click.Choice(["auto", "bf16", "fp32"]), help="auto: bf16 on CUDA."
)
@click.option(
    "--compile/--no-compile",
    default=None,
    help="torch.compile the model (inductor, default mode); falls back to eager with a note.",
)
@click.option(
    "--cuda-graphs/--no-cuda-graphs",
    default=None,
    help="Compile and replay the model as CUDA graphs (reduce-overhead; CUDA only).",
)
@click.option("--strict/--no-strict", default=None, help="Unreadable or small images: error.")
@click.option("--flips/--no-flips", default=None, help="Random flips and rotations (default on).")
@click.option(
    "--loss",
    help="Weighted loss terms: l1, perceptual, ldl, ff, gan, dists, joined by ',' or '+', e.g. "
    "l1:1+perceptual:1+gan:0.1 (default l1:1).",
)
@click.option(
    "--dists-weights",
    type=click.Path(file_okay=False),
    help="Folder with vgg16-397923af.pth and dists_weights.pt for the dists term (default: "
    "adaptsr's weights folder, then torch's cache).",
)
@click.option(
    "--vgg-weights",
    type=click.Path(dir_okay=False),
    help="VGG19 ImageNet weights for the perceptual term (default: torchvision's cached file).",
)
@click.option("--gan-start", type=int, help="Iterations before the gan term starts (default 0).")
@click.option("--ema", type=float, help="Moving average of the weights, e.g. 0.999 (default off).")
@click.option("--accumulate", type=int, help="Micro-batches of --batch per step (default 1).")
@click.option("--val-save-images", type=int, help="LR|SR|HR pictures of N images per validation.")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its checkpoint.")
@click.option(
    "--resume-changed-data",
    is_flag=True,
    help="With --resume: continue although the training images changed since the run started.",
)
@click.option("--force", is_flag=True, help="Start over in a --out that holds a run.")
@allow_random_base_option(default=None)
@click.option("--quiet", is_flag=True, help="No progress bar.")
@max_pixels_option
@click.option("--bench", is_flag=True, help="Measure it/s and peak memory instead of training.")
def train(out, config_file, resume, resume_changed_data, force, quiet, bench, **options) -> None:
    """Train LoRA adapters (default), fine-tune all weights, or pretrain on bicubic data.

    Writes RUN_DIR (--out): config.json, log.jsonl, checkpoint.pt and adapter.safetensors (lora)
    or model.safetensors (full, pretrain). Run under `torchrun --nproc_per_node N` for several
    GPUs or processes. With --bench, --model and --mode take comma-separated lists.
    """
    given = {k: v for k, v in options.items() if v is not None and v != ()}
    given = {"model" if k == "model_spec" else k: v for k, v in given.items()}
    if "data" in given:
        given["data"] = list(given["data"])
    if bench:
        report = bench_report.bench_to_file(given, out, force)
        click.echo(report.text)
        click.echo(f"wrote {report.path}")
        return
    config = training.command_config(given, Path(out), config_file, resume)
    result = training.train(
        config, out, resume=resume, force=force, progress=not quiet,
        resume_changed_data=resume_changed_data,
    )  # fmt: skip
    if result.best:
        click.echo(
            f"best validation: {result.best['psnr_y']:.4f} dB PSNR-Y, "
            f"{result.best['ssim_y']:.4f} SSIM-Y (iteration {result.best['iter']})"
        )
    click.echo(result.message)
    if result.status == "interrupted":
        sys.exit(130)
