import sys
from pathlib import Path

import click

from adaptsr.adapt.choices import (
    ALLOCATORS,
    DEFAULT_ALLOCATOR,
    DEFAULT_BATCH,
    DEFAULT_BATCHES,
    DEFAULT_NORMALISE,
    DEFAULT_PATCH,
    DEFAULT_R_MAX,
    DEFAULT_R_MIN,
    DEFAULT_SCORE,
    DEGRADATIONS,
    NORMALISATIONS,
    SCORES,
    SEED_MAX,
)
from adaptsr.cli.commands._options import max_pixels_option

# option name -> TrainConfig field; options left unset fall back to --config, then the defaults
_SETTINGS = {
    "model_spec": "model",
    "data": "data",
    "lr_dir": "lr_dir",
    "hr_dir": "hr_dir",
    "val": "val",
    "val_split": "val_split",
    "val_every": "val_every",
    "mode": "mode",
    "rank": "rank",
    "rank_map": "rank_map",
    "rank_aware": "rank_aware",
    "budget": "budget",
    "score_batches": "score_batches",
    "score_batch": "score_batch",
    "score_patch": "score_patch",
    "score": "score",
    "normalise": "normalise",
    "allocator": "allocator",
    "r_min": "r_min",
    "r_max": "r_max",
    "alpha": "alpha",
    "iters": "iters",
    "batch": "batch",
    "patch": "patch",
    "lr": "lr",
    "seed": "seed",
    "device": "device",
    "save_every": "save_every",
    "log_every": "log_every",
    "degradation": "degradation",
    "workers": "workers",
    "kernels": "kernels",
    "precision": "precision",
    "compile": "compile",
    "cuda_graphs": "cuda_graphs",
    "strict": "strict",
    "flips": "flips",
}


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
@click.option("--mode", help="lora (default), full or pretrain; with --bench a list: lora,full.")
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
@click.option(
    "--score-batches",
    type=int,
    help=f"--rank-aware: batches the scores are averaged over (default {DEFAULT_BATCHES}).",
)
@click.option(
    "--score-batch", type=int, help=f"--rank-aware: crops per batch (default {DEFAULT_BATCH})."
)
@click.option(
    "--score-patch", type=int, help=f"--rank-aware: HR crop size (default {DEFAULT_PATCH})."
)
@click.option(
    "--score",
    type=click.Choice(SCORES),
    help=f"--rank-aware: site importance (default {DEFAULT_SCORE}).",
)
@click.option(
    "--normalise",
    type=click.Choice(NORMALISATIONS),
    help=f"--rank-aware: size for per-element scores (default {DEFAULT_NORMALISE}).",
)
@click.option(
    "--allocator",
    type=click.Choice(ALLOCATORS),
    help=f"--rank-aware: how the budget is shared (default {DEFAULT_ALLOCATOR}).",
)
@click.option("--r-min", type=int, help=f"--rank-aware: lowest rank (default {DEFAULT_R_MIN}).")
@click.option("--r-max", type=int, help=f"--rank-aware: highest rank (default {DEFAULT_R_MAX}).")
@click.option("--alpha", type=float, help="LoRA alpha (default 1).")
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
@click.option(
    "--degradation",
    type=click.Choice(DEGRADATIONS),
    help="For HR-only data (default realesrgan; bicubic for pretrain).",
)
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
@click.option("--resume", is_flag=True, help="Continue the run in --out from its checkpoint.")
@click.option("--force", is_flag=True, help="Start over in a --out that holds a run.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@max_pixels_option
@click.option("--bench", is_flag=True, help="Measure it/s and peak memory instead of training.")
def train(out, config_file, resume, force, quiet, bench, **options) -> None:
    """Train LoRA adapters (default), fine-tune all weights, or pretrain on bicubic data.

    Writes RUN_DIR (--out): config.json, log.jsonl, checkpoint.pt and adapter.safetensors (lora)
    or model.safetensors (full, pretrain). Run under `torchrun --nproc_per_node N` for several
    GPUs or processes. With --bench, --model and --mode take comma-separated lists.
    """
    from adaptsr.adapt import train as training

    given = {_SETTINGS[k]: v for k, v in options.items() if v is not None and v != ()}
    if "data" in given:
        given["data"] = list(given["data"])
    if bench:
        _bench(given, out, force)
        return
    if resume:
        if config_file:
            raise click.UsageError("--resume takes the run's saved config; drop --config")
        config = training.resume_config(Path(out), given)
    else:
        values = training.read_config_file(config_file) if config_file else {}
        config = training.config_from_dict({**values, **given}, config_file or "options")
        _refuse_inputs_in_run_dir(Path(out), [config.model, config.rank_map, config_file])
    result = training.train(config, out, resume=resume, force=force, progress=not quiet)
    if result.best:
        click.echo(
            f"best validation: {result.best['psnr_y']:.4f} dB PSNR-Y, "
            f"{result.best['ssim_y']:.4f} SSIM-Y (iteration {result.best['iter']})"
        )
    click.echo(result.message)
    if result.status == "interrupted":
        sys.exit(130)


def _refuse_inputs_in_run_dir(run_dir: Path, inputs: list) -> None:
    """A fresh start (or --force) replaces the run folder's files: none may be an input."""
    from adaptsr.adapt.train.config import RUN_FILES
    from adaptsr.core.fileio import check_outputs_not_inputs

    outputs = {f"--out {run_dir} writes {name}:": run_dir / name for name in RUN_FILES}
    check_outputs_not_inputs(outputs, inputs)


def _bench(given: dict, out: str, force: bool) -> None:
    import torch

    from adaptsr.adapt import train as training
    from adaptsr.adapt.degradations import degradations_per_second
    from adaptsr.core.errors import UserError
    from adaptsr.core.fileio import atomic_output, check_writable

    path = check_writable(Path(out) / "bench.md", force)  # before minutes of timing

    device = given.get("device", "auto")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    settings = {**training.bench_defaults(device), **given}
    models = settings.get("model", "safmn-x4,swinir-light-x4").split(",")
    modes = settings.get("mode", "lora,full").split(",")
    unknown = [m for m in modes if m not in training.MODES]
    if unknown:
        raise UserError(f"unknown mode {unknown[0]!r} (choose from {', '.join(training.MODES)})")
    rows = training.benchmark(
        models,
        modes,
        settings["batch"],
        settings["patch"],
        settings["iters"],
        device,
        settings.get("rank", 8),
        kernels=settings.get("kernels", "auto"),
        compile=settings.get("compile", False),
        cuda_graphs=settings.get("cuda_graphs", False),
    )
    lines = [training.bench_table(rows), ""]
    for kind in ("bicubic", "realesrgan"):
        rate = degradations_per_second(kind, settings["batch"], settings["patch"], device=device)
        lines.append(
            f"{kind} degradation: {rate:.1f} HR crops/s "
            f"({settings['patch']}x{settings['patch']}, batch {settings['batch']})"
        )
    text = "\n".join(lines)
    click.echo(text)
    with atomic_output(path, force=force) as tmp:
        tmp.write_text(text + "\n")
    click.echo(f"wrote {path}")
