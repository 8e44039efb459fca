"""Training settings: TrainConfig, config files, the resume rules and the run folder's files.

This module itself needs no torch (its settings are plain data); the package's __init__ loads
the loop, and with it torch.
"""

from __future__ import annotations

import copy
import json
import math
import os
import shutil
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

from adaptsr.adapt.allocation_settings import AllocationSettings
from adaptsr.adapt.choices import SEED_MAX
from adaptsr.adapt.losses import spec as loss_spec
from adaptsr.core.errors import UserError
from adaptsr.core.fileio import check_outputs_not_inputs, loads_toml
from adaptsr.core.lazy import lazy_import

kernels = lazy_import("adaptsr.kernels")  # imports torch: only when a config is resolved
degradation_file = lazy_import("adaptsr.adapt.degradation_file")  # torch, likewise
models = lazy_import("adaptsr.adapt.models")  # torch, likewise

MODES = ("lora", "difffit", "full", "pretrain")
ADAPTER_MODES = ("lora", "difffit")  # a frozen base with adapters: saved as adapter files
DEFAULT_LR = {"lora": 1e-3, "difffit": 1e-3, "full": 1e-4, "pretrain": 2e-4}
SCALINGS = ("alpha/r", "alpha/sqrt(r)")  # adaptsr.core.adapter_meta.SCALINGS
# fractions of the run at which the lr is multiplied by gamma
SCHEDULES = {
    "lora": ((0.5, 0.75, 0.9), 0.75),
    "difffit": ((0.5, 0.75, 0.9), 0.75),
    "full": ((0.5, 0.8, 0.9, 0.95), 0.5),
    "pretrain": ((0.5, 0.8, 0.9, 0.95), 0.5),
}
RUN_FILES = (
    "config.json",
    "log.jsonl",
    "checkpoint.pt",
    "adapter.safetensors",
    "adapter-best.safetensors",
    "model.safetensors",
    "model-best.safetensors",
    "rank_map.json",
    "data.json",  # data_record.DATA_RECORD
)
# settings a resumed run may change: they do not alter the numbers it computes
RESUMABLE = ("device", "workers", "save_every", "val_every", "log_every", "kernels", "strict")
RESUMABLE += ("compile", "cuda_graphs")  # speed only (like kernels: the last bits may differ)
RESUMABLE += ("val_save_images",)  # what a validation writes besides its scores
RESUMABLE += ("allow_random_base",)  # a permission: the base itself is checked on resume
# what a run's config.json records about the run, not settings: never read back as one
RUN_FACTS = ("run_id", "random_base", "data_degradations")
# the allocation settings a run without --rank-aware refuses when changed (score_batches
# predates the others and was always accepted without --rank-aware)
RANK_AWARE_OPTIONS = ("score", "normalise", "allocator", "r_min", "r_max", "score_batch")
RANK_AWARE_OPTIONS += ("score_patch", "score_warmup")

# upper bounds on sizes: far beyond any real run, low enough that nothing tries to build a
# plan of 10^12 crops or allocate a terabyte before failing
LIMITS = {
    "batch": 2**16,
    "patch": 2**15,
    "rank": 2**12,
    "workers": 1024,
    "iters": 10**12,
    "accumulate": 2**16,
}


@dataclass
class TrainConfig:
    model: str = ""
    data: list[str] = field(default_factory=list)
    lr_dir: str | None = None
    hr_dir: str | None = None
    val: str | None = None  # validation folder (any layout)
    val_split: int = 0  # or: hold out the last N training images
    val_every: int = 5000
    mode: str = "lora"
    rank: int = 8
    rank_map: str | None = None
    rank_aware: bool = False  # ranks from site scores under allocation.budget
    # --rank-aware: `adapt allocate`'s settings, with its defaults
    allocation: AllocationSettings = field(default_factory=AllocationSettings)
    alpha: float = 1.0
    scaling: str = "alpha/r"  # of LoRA updates: alpha/r or alpha/sqrt(r) (rank-stabilised)
    targets: str = "all"  # site families adapters go on (lora, difffit): conv,attn,mlp,linear
    iters: int = 100_000
    batch: int = 8  # global batch (split across DDP processes)
    patch: int = 256  # HR crop size
    lr: float | None = None  # None: DEFAULT_LR[mode]
    seed: int = 0
    device: str = "auto"
    save_every: int = 1000
    log_every: int = 10
    # a preset name, or a file's settings as their table (adapt/degradation_file.py): the run
    # records the settings, not the path. None: realesrgan (lora, full) or bicubic (pretrain)
    degradation: str | dict | None = None
    workers: int = 4
    kernels: str = "auto"  # auto (fused on CUDA), reference, triton
    precision: str = "auto"  # auto (bf16 autocast on CUDA, fp32 elsewhere), bf16, fp32
    compile: bool = False  # torch.compile of the model (adapt/train/graphs.py)
    cuda_graphs: bool = False  # compiled and replayed as CUDA graphs (CUDA only)
    strict: bool = False  # unreadable or too small images are an error instead of skipped
    flips: bool = True
    loss: str = "l1:1"  # weighted terms (adaptsr.adapt.losses.spec): l1, perceptual, ldl, ff, gan
    vgg_weights: str | None = None  # VGG19 ImageNet weights for the perceptual term
    dists_weights: str | None = None  # folder of the dists term's VGG16 and DISTS weights
    gan_start: int = 0  # iterations without the gan term first (pixel-only warm-up)
    ema: float = 0.0  # decay of the weights' moving average (0: none); saved adapters use it
    accumulate: int = 1  # micro-batches of --batch per optimizer step (gradient accumulation)
    val_save_images: int = 0  # validation images written as LR | SR | HR at each validation
    # a base with random weights (a configuration without its weights fetched) is refused
    # unless allowed; pretraining starts from random weights and needs no permission
    allow_random_base: bool = False
    random_base: bool = False  # a fact `resolved` records: the base had random weights

    def resolved(self) -> TrainConfig:
        """Defaults filled in and every value checked."""
        c = replace(self, data=list(self.data))
        if c.mode not in MODES:
            raise UserError(f"unknown mode {c.mode!r} (choose {', '.join(MODES)})")
        if c.lr is None:
            c.lr = DEFAULT_LR[c.mode]
        if c.degradation is None:
            c.degradation = "bicubic" if c.mode == "pretrain" else "realesrgan"
        if not c.model:
            raise UserError("no model: give --model (a checkpoint or a built-in name)")
        allowed = c.allow_random_base or c.mode == "pretrain"
        c.random_base = models.check_base_weights(c.model, allowed)
        _check_numbers(c)
        c.allocation = c.allocation.checked()
        c.degradation = degradation_file.recorded(c.degradation)
        if c.kernels not in kernels.BACKENDS:
            raise UserError(f"unknown kernels {c.kernels!r} (choose {', '.join(kernels.BACKENDS)})")
        if c.precision not in ("auto", "bf16", "fp32"):
            raise UserError(f"unknown precision {c.precision!r} (choose auto, bf16, fp32)")
        _check_rank_options(c)
        if c.rank_aware:  # config.json records the steps, not "the default of the day"
            c.allocation = replace(c.allocation, score_warmup=c.allocation.warmup_steps())
        _check_loss_options(c)
        if c.val and c.val_split:
            raise UserError("give --val DIR or --val-split N, not both")
        if c.val_save_images and not (c.val or c.val_split):  # pictures of no validation
            raise UserError("--val-save-images needs validation: give --val DIR (or --val-split N)")
        return c

    def to_dict(self) -> dict:
        """The settings as config.json spells them: one flat table, the allocation settings in
        the place they always had."""
        out = {}
        for f in fields(self):
            if f.name == "allocation":
                out.update(asdict(self.allocation))
            else:
                out[f.name] = copy.copy(getattr(self, f.name))
        return out


def _check_numbers(c: TrainConfig) -> None:
    for name in ("iters", "batch", "patch", "rank", "accumulate"):
        if getattr(c, name) < 1:
            raise UserError(f"--{name} must be at least 1, got {getattr(c, name)}")
    for name, top in LIMITS.items():  # beyond any machine: refused before lists are built
        if getattr(c, name) > top:
            raise UserError(f"--{name} {getattr(c, name)} is absurd (at most {top})")
    if not 0 <= c.seed <= SEED_MAX:
        raise UserError(f"--seed must be in 0..{SEED_MAX}, got {c.seed}")
    for name in ("save_every", "val_every", "log_every", "workers", "val_split", "val_save_images"):
        if getattr(c, name) < 0:
            raise UserError(f"--{name.replace('_', '-')} must be >= 0")
    if not (c.lr > 0 and math.isfinite(c.lr)):
        raise UserError(f"--lr must be a positive number, got {c.lr}")


def _check_loss_options(c: TrainConfig) -> None:
    """--loss parses; --vgg-weights, --gan-start and --ema fit it (canonical spelling kept)."""
    terms = dict(loss_spec.parse_loss(c.loss))
    c.loss = loss_spec.loss_text(tuple(terms.items()))
    if c.vgg_weights and "perceptual" not in terms:
        raise UserError("--vgg-weights applies to a --loss with a perceptual term")
    if c.dists_weights and "dists" not in terms:
        raise UserError("--dists-weights applies to a --loss with a dists term")
    if c.gan_start < 0:
        raise UserError(f"--gan-start must be >= 0, got {c.gan_start}")
    if c.gan_start and "gan" not in terms:
        raise UserError("--gan-start applies to a --loss with a gan term")
    if c.gan_start and c.gan_start >= c.iters:  # the term starts after iteration gan_start
        raise UserError(
            f"--gan-start {c.gan_start} is not below --iters {c.iters}: the gan term would "
            "never train"
        )
    if not (0 <= c.ema < 1):
        raise UserError(f"--ema must be in [0, 1) (e.g. 0.999; 0 for none), got {c.ema}")
    if "ldl" in terms and not c.ema:
        raise UserError("the ldl term compares with the EMA model's output: add --ema 0.999")


def _check_rank_options(c: TrainConfig) -> None:
    """--rank-map, --rank-aware and the allocation settings fit the mode and each other."""
    if c.mode != "lora" and (c.rank_map or c.rank_aware):
        raise UserError("--rank-map and --rank-aware apply to --mode lora only")
    if c.scaling not in SCALINGS:
        raise UserError(f"unknown scaling {c.scaling!r} (choose {', '.join(SCALINGS)})")
    if c.mode != "lora" and c.scaling != SCALINGS[0]:
        raise UserError("--scaling applies to --mode lora only")
    if c.mode not in ADAPTER_MODES and c.targets != "all":
        raise UserError("--targets applies to --mode lora and difffit only")
    if c.rank_aware and c.rank_map:
        raise UserError("give --rank-map or --rank-aware, not both")
    if c.rank_aware and not c.allocation.budget:
        raise UserError("--rank-aware needs --budget (e.g. 886k, 8%, or r8)")
    if c.allocation.budget and not c.rank_aware:
        raise UserError("--budget applies to --rank-aware")
    changed = [n for n in c.allocation.changed() if n in RANK_AWARE_OPTIONS]
    if changed and not c.rank_aware:
        raise UserError(f"--{changed[0].replace('_', '-')} applies to --rank-aware")


def config_from_dict(values: dict, where: str = "config") -> TrainConfig:
    """A TrainConfig from a mapping with field names (dashes or underscores); the allocation
    settings as flat keys (as config.json writes them) or as an `allocation` table."""
    flat = {}
    for key, value in values.items():
        name = key.replace("-", "_")
        if name == "allocation" and isinstance(value, dict):
            flat.update({k.replace("-", "_"): v for k, v in value.items()})
        elif name not in RUN_FACTS:  # what config.json says about its run: not settings
            flat[name] = value
    defaults = TrainConfig().to_dict()
    for key in flat:
        if key not in defaults:
            raise UserError(f"{where}: unknown setting {key!r}")
    if isinstance(flat.get("data"), str):
        flat["data"] = [flat["data"]]
    for name, value in flat.items():
        _check_type(name, value, defaults[name], where)
    return with_values(TrainConfig(), flat)


def with_values(config: TrainConfig, values: dict) -> TrainConfig:
    """`config` with the settings of a flat table (config.json's names) replaced."""
    allocation = {k: v for k, v in values.items() if k in AllocationSettings.names()}
    rest = {k: v for k, v in values.items() if k not in allocation}
    return replace(config, **rest, allocation=replace(config.allocation, **allocation))


def _check_type(name: str, value, default, where: str) -> None:
    """A config file value must have the type of the setting (None only where allowed)."""
    if value is None:
        if default is None:
            return
        raise UserError(f"{where}: {name} cannot be empty")
    if isinstance(default, bool) or isinstance(value, bool):
        ok = isinstance(value, bool) and isinstance(default, bool)
    elif isinstance(default, int) or name == "score_warmup":  # its None: the score's default
        ok = isinstance(value, int)
    elif isinstance(default, float) or name == "lr":
        ok = isinstance(value, (int, float))
    elif isinstance(default, list):
        ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
    elif name == "degradation":  # a name or a file, or the settings table config.json holds
        ok = isinstance(value, (str, dict))
    else:  # strings, and settings whose default is None (paths, budget)
        ok = isinstance(value, str)
    if not ok:
        raise UserError(f"{where}: {name} has the wrong type ({value!r})")


def read_config_file(path: str | os.PathLike) -> dict:
    """Settings from a .json or .toml file (keys as the command-line flags, without dashes)."""
    path = Path(path)
    if path.exists() and not (path.is_file() or path.is_dir()):  # a pipe could block forever
        raise UserError(f"cannot read config {path}: not a regular file (a pipe or a device)")
    try:
        text = path.read_bytes()
    except OSError as e:
        raise UserError(f"cannot read config {path}: {e.strerror or e}") from e
    try:
        values = loads_toml(text.decode()) if path.suffix.lower() == ".toml" else json.loads(text)
    except (ValueError, UnicodeDecodeError) as e:
        raise UserError(f"cannot parse config {path}: {e}") from e
    except RecursionError:
        raise UserError(f"cannot parse config {path}: nested too deeply") from None
    if not isinstance(values, dict):
        raise UserError(f"config {path} must hold a table of settings")
    return values


def resume_config(run_dir: Path, overrides: dict) -> TrainConfig:
    """The saved config of a run, with only the RESUMABLE settings changed by `overrides`."""
    path = run_dir / "config.json"
    if not path.exists():
        raise UserError(f"nothing to resume in {run_dir}: no config.json")
    values = read_config_file(path)
    if values.get("rank_aware"):  # runs from before the warm-up scored at initialisation
        values.setdefault("score_warmup", 0)
    saved = config_from_dict(values, str(path))
    current = saved.to_dict()
    for key, value in overrides.items():
        if key == "degradation":  # a file given again: compared by the settings it holds
            value = degradation_file.recorded(value)
        if current[key] != value and key not in RESUMABLE:
            raise UserError(
                f"--{key.replace('_', '-')} differs from the run being resumed "
                f"({current[key]!r}); a resumed run keeps its settings"
            )
    return with_values(saved, overrides)


def prepare_run_dir(run_dir: Path, resume: bool, force: bool) -> None:
    if resume:
        if not (run_dir / "checkpoint.pt").exists():
            raise UserError(f"nothing to resume in {run_dir}: no checkpoint.pt")
        return
    existing = [n for n in RUN_FILES if (run_dir / n).exists()]
    if existing and not force:
        raise UserError(
            f"{run_dir} already holds a run ({existing[0]}): use --resume to continue it "
            "or --force to start over"
        )
    if run_dir.exists() and not run_dir.is_dir():
        raise UserError(f"{run_dir} is not a folder")
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot use {run_dir}: {e.strerror or e}") from e


def clear_previous_run(run_dir: Path) -> None:
    """Remove an old run's files (--force), once the new run's inputs have been checked: a
    typo in --data or --model must not cost the previous run."""
    try:
        for name in RUN_FILES:
            (run_dir / name).unlink(missing_ok=True)
        shutil.rmtree(run_dir / "tensorboard", ignore_errors=True)
        shutil.rmtree(run_dir / "val-images", ignore_errors=True)  # --val-save-images
    except OSError as e:
        raise UserError(f"cannot use {run_dir}: {e.strerror or e}") from e


def command_config(
    given: dict, run_dir: Path, config_file: str | None, resume: bool
) -> TrainConfig:
    """The config `adapt train` runs: the run's saved one on --resume (given settings may
    change only what RESUMABLE allows), else --config's settings under the given ones. A fresh
    start replaces the run folder's files, so none of them may be an input."""
    if resume:
        if config_file:
            raise UserError("--resume takes the run's saved config; drop --config")
        return resume_config(run_dir, given)
    values = read_config_file(config_file) if config_file else {}
    config = config_from_dict({**values, **given}, config_file or "options")
    outputs = {f"--out {run_dir} writes {name}:": run_dir / name for name in RUN_FILES}
    check_outputs_not_inputs(outputs, [config.model, config.rank_map, config_file])
    return config
