"""Options shared by several commands: one definition, one meaning."""

import click

from adaptsr.adapt.allocation_settings import AllocationSettings
from adaptsr.adapt.choices import ALLOCATORS, DEGRADATIONS, NORMALISATIONS, SCORES
from adaptsr.core.images import set_max_pixels

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


def degradation_option(help: str, **kwargs):
    """--degradation, spelled one way by every command that makes LR from HR: a preset name
    or a degradation file (checked where it is read: adapt/degradation_file.py)."""
    presets = ", ".join(DEGRADATIONS)
    return click.option(
        "--degradation",
        metavar="NAME|FILE",
        help=f"{help} A preset ({presets}) or a .toml/.json file (docs/degradations.md).",
        **kwargs,
    )


def model_options(
    model: str = "Built-in model name or checkpoint (PyTorch).",
    adapter: str = "LoRA adapter file for --model.",
    onnx: str = "ONNX file (ONNX Runtime).",
    engine: str = "TensorRT engine file (.engine/.plan).",
):
    """--model, --adapter, --onnx, --engine (which model runs: adaptsr.adapt.open.ModelSpec),
    each command saying in its own words what the model is for."""
    return _group(
        click.option("--model", help=model),
        click.option("--adapter", type=click.Path(), help=adapter),
        click.option("--onnx", type=click.Path(), help=onnx),
        click.option("--engine", type=click.Path(), help=engine),
    )


def allow_random_base_option(default: bool | None = False):
    """--allow-random-base (adaptsr.adapt.models.check_base_weights); `adapt train`'s default
    None is "not given": --config or the resumed run's config.json decides."""
    return click.option(
        "--allow-random-base", is_flag=True, default=default,
        help="Accept a built-in configuration with random weights as the base (no official "
        "weights fetched: `adapt models`, `adapt fetch NAME`), e.g. for timing.",
    )  # fmt: skip


# Where adapters go and how LoRA updates are scaled: `adapt train`, `adapt allocate` (targets)
# and `adapt study` spell them the same (None: not given, the default applies).
targets_option = click.option(
    "--targets",
    help="Site families adapters go on: conv, attn (q/k/v/o), mlp (fc1/fc2), linear (other "
    "linear layers), comma-separated [default: all].",
)
scaling_option = click.option(
    "--scaling",
    type=click.Choice(["alpha/r", "alpha/sqrt(r)"]),
    help="LoRA update scale: alpha/r, or alpha/sqrt(r) (rank-stabilised) [default: alpha/r].",
)


# The allocation settings (adaptsr.adapt.allocation_settings.AllocationSettings), spelled the
# same by `adapt allocate`, `adapt train` and `adapt study`. Each defaults to None, "not given":
# AllocationSettings fills in its default (train first reads --config, study scores on its own
# --batch and --patch crops). `adapt allocate` also takes its older spellings --batches, --batch
# and --patch, hidden; --score-batches, --score-batch and --score-patch are canonical.
ALLOCATION_DEFAULTS = AllocationSettings()


def _group(*options):
    """One decorator applying `options` in the order given (as they show in --help)."""

    def apply(command):
        for option in reversed(options):
            command = option(command)
        return command

    return apply


allocation_options = _group(
    click.option(
        "--score-batches",
        type=click.IntRange(1),
        help="Rank-aware: mini-batches the site scores are averaged over "
        f"[default: {ALLOCATION_DEFAULTS.score_batches}].",
    ),
    click.option(
        "--score-batch",
        type=click.IntRange(1),
        help=f"Rank-aware: crops per scoring batch [default: {ALLOCATION_DEFAULTS.score_batch}].",
    ),
    click.option(
        "--score-patch",
        type=click.IntRange(1),
        help=f"Rank-aware: HR crop size of the scoring batches "
        f"[default: {ALLOCATION_DEFAULTS.score_patch}].",
    ),
    click.option(
        "--score",
        type=click.Choice(SCORES),
        help="Rank-aware: site importance: gradient norm (the paper), Fisher, input activation "
        f"norm, random [default: {ALLOCATION_DEFAULTS.score}].",
    ),
    click.option(
        "--normalise",
        type=click.Choice(NORMALISATIONS),
        help="Rank-aware: size: per-element scores (RMS), not favouring large layers "
        f"[default: {ALLOCATION_DEFAULTS.normalise}].",
    ),
    click.option(
        "--allocator",
        type=click.Choice(ALLOCATORS),
        help="Rank-aware: paper: fill the top sites to r-max; marginal: best gain per parameter "
        f"first [default: {ALLOCATION_DEFAULTS.allocator}].",
    ),
    click.option(
        "--r-min",
        type=click.IntRange(0),
        help="Rank-aware: lowest rank of a site (0: a site may get no adapter) "
        f"[default: {ALLOCATION_DEFAULTS.r_min}].",
    ),
    click.option(
        "--r-max",
        type=click.IntRange(1),
        help="Rank-aware: highest rank of a site (also capped at its useful rank) "
        f"[default: {ALLOCATION_DEFAULTS.r_max}].",
    ),
    click.option(
        "--score-warmup",
        type=click.IntRange(0),
        help="Rank-aware: Adam steps of uniform LoRA before scoring (0: at initialisation, the "
        f"paper's) [default: {ALLOCATION_DEFAULTS.warmup_steps()}; none for random scores].",
    ),
)
# `adapt allocate`'s first spellings of three of them (hidden; the canonical names above win)
ALLOCATE_ALIASES = {"batches": "score_batches", "batch": "score_batch", "patch": "score_patch"}
allocate_aliases = _group(
    *(
        click.option(f"--{old}", f"alias_{old}", type=click.IntRange(1), hidden=True)
        for old in ALLOCATE_ALIASES
    )
)


def allocation_settings(options: dict, **given) -> AllocationSettings:
    """The AllocationSettings among a command's parsed `options` (removed from it, the hidden
    old spellings included), with `given` for settings the command names itself (--budget)."""
    for old, new in ALLOCATE_ALIASES.items():
        value = options.pop(f"alias_{old}", None)
        if value is not None and options.get(new) is None:
            options[new] = value
    values = {name: options.pop(name) for name in AllocationSettings.names() if name in options}
    return AllocationSettings.from_values({**values, **given})
