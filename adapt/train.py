"""The training loop: LoRA or full fine-tuning, and pretraining from scratch.

`train(config, run_dir)` trains with Adam and an L1 loss under a step schedule:

- lora: lr 1e-3, times 0.75 at 50%, 75% and 90% of the iterations (the paper's setting);
- full: lr 1e-4, halved at 50%, 80%, 90% and 95% (the paper's milestones; it gives no start lr,
  1e-4 is the usual fine-tuning rate for SwinIR-class models, half their from-scratch 2e-4);
- pretrain: re-initialised weights, bicubic data, lr 2e-4 on the full schedule.

RUN_DIR holds config.json (the resolved configuration), log.jsonl (one JSON object per line),
checkpoint.pt (trainable weights, optimizer, scheduler, RNG and degrader states, iteration;
replaced atomically) and the outputs: adapter.safetensors or model.safetensors, and the best one
by validation PSNR as adapter-best.safetensors / model-best.safetensors.

A resumed run replays exactly: the data order is a function of (seed, iteration) (see data.py)
and every random state is in the checkpoint, so on the CPU its losses equal an uninterrupted
run's bit for bit. Under torchrun (WORLD_SIZE > 1) each process trains on its slice of the
global batch with DistributedDataParallel (gloo on CPU, nccl on CUDA); rank 0 writes the files.
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import random
import shutil
import signal
import sys
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from adaptsr.adapt.allocate import read_rank_map
from adaptsr.errors import UserError

MODES = ("lora", "full", "pretrain")
DEFAULT_LR = {"lora": 1e-3, "full": 1e-4, "pretrain": 2e-4}
# fractions of the run at which the lr is multiplied by gamma
SCHEDULES = {
    "lora": ((0.5, 0.75, 0.9), 0.75),
    "full": ((0.5, 0.8, 0.9, 0.95), 0.5),
    "pretrain": ((0.5, 0.8, 0.9, 0.95), 0.5),
}
CHECKPOINT_FORMAT = "adaptsr-train-1"
RUN_FILES = (
    "config.json",
    "log.jsonl",
    "checkpoint.pt",
    "adapter.safetensors",
    "adapter-best.safetensors",
    "model.safetensors",
    "model-best.safetensors",
    "rank_map.json",
)
# settings a resumed run may change: they do not alter the numbers it computes
RESUMABLE = ("device", "workers", "save_every", "val_every", "log_every", "kernels", "strict")


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
    rank_aware: bool = False  # ranks from gradient scores under --budget (adapt.allocate)
    budget: str | None = None  # parameters ("886k"), percent of the base ("8%") or "r8"
    score_batches: int = 16
    alpha: float = 1.0
    iters: int = 100_000
    batch: int = 8  # global batch (split across DDP processes)
    patch: int = 256  # HR crop size
    lr: float | None = None  # None: DEFAULT_LR[mode]
    seed: int = 0
    device: str = "auto"
    save_every: int = 1000
    log_every: int = 10
    degradation: str | None = None  # None: realesrgan (lora, full) or bicubic (pretrain)
    workers: int = 4
    kernels: str = "auto"  # auto (fused on CUDA), reference, triton
    precision: str = "auto"  # auto (bf16 autocast on CUDA, fp32 elsewhere), bf16, fp32
    strict: bool = False  # unreadable or too small images are an error instead of skipped
    flips: bool = True

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
        for name in ("iters", "batch", "patch", "rank"):
            if getattr(c, name) < 1:
                raise UserError(f"--{name} must be at least 1, got {getattr(c, name)}")
        for name in ("save_every", "val_every", "log_every", "workers", "val_split"):
            if getattr(c, name) < 0:
                raise UserError(f"--{name.replace('_', '-')} must be >= 0")
        if not (c.lr > 0 and math.isfinite(c.lr)):
            raise UserError(f"--lr must be a positive number, got {c.lr}")
        from adaptsr.adapt.choices import DEGRADATIONS
        from adaptsr.kernels import BACKENDS

        if c.degradation not in DEGRADATIONS:
            raise UserError(f"unknown degradation {c.degradation!r} ({', '.join(DEGRADATIONS)})")
        if c.kernels not in BACKENDS:
            raise UserError(f"unknown kernels {c.kernels!r} (choose {', '.join(BACKENDS)})")
        if c.precision not in ("auto", "bf16", "fp32"):
            raise UserError(f"unknown precision {c.precision!r} (choose auto, bf16, fp32)")
        if c.mode != "lora" and (c.rank_map or c.rank_aware):
            raise UserError("--rank-map and --rank-aware apply to --mode lora only")
        if c.rank_aware and c.rank_map:
            raise UserError("give --rank-map or --rank-aware, not both")
        if c.rank_aware and not c.budget:
            raise UserError("--rank-aware needs --budget (e.g. 886k, 8%, or r8)")
        if c.budget and not c.rank_aware:
            raise UserError("--budget applies to --rank-aware")
        if c.val and c.val_split:
            raise UserError("give --val DIR or --val-split N, not both")
        if c.score_batches < 1:
            raise UserError("--score-batches must be at least 1")
        return c

    def to_dict(self) -> dict:
        return asdict(self)


def config_from_dict(values: dict, where: str = "config") -> TrainConfig:
    """A TrainConfig from a mapping with field names (dashes or underscores)."""
    known = {f.name for f in fields(TrainConfig)}
    clean = {}
    for key, value in values.items():
        name = key.replace("-", "_")
        if name not in known:
            raise UserError(f"{where}: unknown setting {key!r}")
        clean[name] = value
    if isinstance(clean.get("data"), str):
        clean["data"] = [clean["data"]]
    defaults = TrainConfig()
    for name, value in clean.items():
        _check_type(name, value, getattr(defaults, name), where)
    return TrainConfig(**clean)


def _check_type(name: str, value, default, where: str) -> None:
    """A config file value must have the type of the setting (None only where allowed)."""
    if value is None:
        if default is None:
            return
        raise UserError(f"{where}: {name} cannot be empty")
    if isinstance(default, bool) or isinstance(value, bool):
        ok = isinstance(value, bool) and isinstance(default, bool)
    elif isinstance(default, int):
        ok = isinstance(value, int)
    elif isinstance(default, float) or name == "lr":
        ok = isinstance(value, (int, float))
    elif isinstance(default, list):
        ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
    else:  # strings, and settings whose default is None (paths, budget)
        ok = isinstance(value, str)
    if not ok:
        raise UserError(f"{where}: {name} has the wrong type ({value!r})")


def read_config_file(path: str | os.PathLike) -> dict:
    """Settings from a .json or .toml file (keys as the command-line flags, without dashes)."""
    path = Path(path)
    try:
        text = path.read_bytes()
    except OSError as e:
        raise UserError(f"cannot read config {path}: {e.strerror or e}") from e
    try:
        if path.suffix.lower() == ".toml":
            values = _toml().loads(text.decode())
        else:
            values = json.loads(text)
    except (ValueError, UnicodeDecodeError) as e:
        raise UserError(f"cannot parse config {path}: {e}") from e
    if not isinstance(values, dict):
        raise UserError(f"config {path} must hold a table of settings")
    return values


def _toml():
    try:
        import tomllib  # Python >= 3.11
    except ImportError as e:
        raise UserError("TOML config files need Python 3.11 or newer; use JSON") from e
    return tomllib


def resume_config(run_dir: Path, overrides: dict) -> TrainConfig:
    """The saved config of a run, with only the RESUMABLE settings changed by `overrides`."""
    path = run_dir / "config.json"
    if not path.exists():
        raise UserError(f"nothing to resume in {run_dir}: no config.json")
    saved = config_from_dict(read_config_file(path), str(path))
    for key, value in overrides.items():
        if getattr(saved, key) == value:
            continue
        if key not in RESUMABLE:
            raise UserError(
                f"--{key.replace('_', '-')} differs from the run being resumed "
                f"({getattr(saved, key)!r}); a resumed run keeps its settings"
            )
        setattr(saved, key, value)
    return saved


# ---------------------------------------------------------------------------------------------
# processes and devices


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def dist_from_env() -> Dist:
    """torchrun's RANK, WORLD_SIZE and LOCAL_RANK (a single process when absent)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return Dist(int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0")))


def resolve_device(name: str, d: Dist) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"unknown device {name!r} (use auto, cpu, cuda or cuda:N)") from None
    if device.type not in ("cpu", "cuda"):
        raise UserError(f"unsupported device {name!r} (use auto, cpu, cuda or cuda:N)")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError("--device cuda: no CUDA device is available")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UserError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s)")
        if device.index is None:
            device = torch.device("cuda", d.local_rank % torch.cuda.device_count())
        torch.cuda.set_device(device)
    return device


# ---------------------------------------------------------------------------------------------
# model and optimisation


def build_base(cfg: TrainConfig) -> nn.Module:
    """The base model on the CPU; re-initialised for pretraining."""
    from adaptsr.adapt.models import (
        BUILTIN_MODELS,
        build_model,
        load_model,
        model_from_state_dict,
        model_info,
    )

    torch.manual_seed(cfg.seed)
    if cfg.mode == "pretrain" and cfg.model in BUILTIN_MODELS:
        return build_model(cfg.model, seed=cfg.seed)  # the architecture's own initialisation
    model = load_model(cfg.model)
    if cfg.mode == "pretrain":
        # A fresh instance with the checkpoint's settings: the architecture's own
        # initialisation of every parameter (position-bias tables and custom norms included).
        hyper = getattr(model, "hyperparameters", None)
        if not hyper:
            raise UserError(
                f"cannot re-initialise {model_info(model).arch} from a checkpoint (its "
                "constructor settings are unknown): pretrain from a built-in name instead"
            )
        fresh = type(model)(**hyper)
        model = model_from_state_dict(fresh.state_dict(), name=str(cfg.model))
    return model


def make_trainable(model: nn.Module, cfg: TrainConfig, ranks=None) -> list[nn.Parameter]:
    """Inject adapters (lora: `ranks`, else the rank map or uniform rank) or unfreeze all."""
    from adaptsr.adapt import lora

    if cfg.mode != "lora":
        model.requires_grad_(True)
        return [p for p in model.parameters() if p.requires_grad]
    if ranks is None:
        ranks = read_rank_map(cfg.rank_map) if cfg.rank_map else cfg.rank
    torch.manual_seed(cfg.seed)  # adapter initialisation independent of what ran before
    lora.inject_lora(model, ranks, alpha=cfg.alpha)
    return lora.adapter_parameters(model)


def build_trainable(cfg: TrainConfig, device: torch.device) -> tuple[nn.Module, list]:
    """The model ready to train and its trainable parameters."""
    model = build_base(cfg).to(device)
    params = make_trainable(model, cfg)
    return model.train(), params


def rank_aware_ranks(model, cfg, batches, d: Dist) -> tuple[dict[str, int], dict]:
    """Rank map from gradient scores of the base model (the paper's Algorithm 1), with the
    scores averaged over all processes so that every process injects the same adapters."""
    from adaptsr.adapt import allocate as alloc
    from adaptsr.adapt.lora import lora_sites

    budget, how = alloc.parse_budget(cfg.budget, model)
    scored = alloc.score_sites(model, batches, "grad", seed=cfg.seed)
    names = sorted(scored.scores)
    if d.world > 1:
        import torch.distributed as dist

        t = torch.tensor([scored.scores[n] for n in names], dtype=torch.float64)
        dist.all_reduce(t)
        scores = dict(zip(names, (t / d.world).tolist(), strict=True))
    else:
        scores = dict(scored.scores)
    ranks = alloc.allocate(lora_sites(model), scores, budget, seed=cfg.seed)
    info = {
        "format": alloc.RANK_MAP_FORMAT,
        "ranks": ranks,
        "scores": scores,
        "budget": {"params": budget, "spec": f"{cfg.budget} ({how})"},
        "settings": {"score": "grad", "batches": cfg.score_batches, "processes": d.world},
    }
    return {k: v for k, v in ranks.items() if v > 0}, info


def make_scheduler(optimizer, cfg: TrainConfig):
    fractions, gamma = SCHEDULES[cfg.mode]
    milestones = sorted({max(1, round(f * cfg.iters)) for f in fractions})
    return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones, gamma=gamma)


def trainable_state(model: nn.Module, mode: str) -> dict[str, torch.Tensor]:
    if mode == "lora":
        items = ((n, p) for n, p in model.named_parameters() if p.requires_grad)
    else:
        items = model.state_dict().items()
    return {n: t.detach().cpu().clone() for n, t in items}


def load_trainable_state(model: nn.Module, state: dict[str, torch.Tensor], mode: str) -> None:
    if mode != "lora":
        model.load_state_dict(state)
        return
    params = dict(model.named_parameters())
    if set(state) != {n for n, p in params.items() if p.requires_grad}:
        raise UserError("checkpoint adapters do not match this model's adapters")
    with torch.no_grad():
        for name, tensor in state.items():
            params[name].copy_(tensor)


def save_outputs(model: nn.Module, cfg: TrainConfig, run_dir: Path, suffix: str = "") -> Path:
    """adapter[-best].safetensors (lora) or model[-best].safetensors (full, pretrain)."""
    from adaptsr.adapt.lora import save_adapter
    from adaptsr.adapt.models import save_model

    if cfg.mode == "lora":
        return save_adapter(model, run_dir / f"adapter{suffix}.safetensors", force=True)
    return save_model(model, run_dir / f"model{suffix}.safetensors", force=True)


# ---------------------------------------------------------------------------------------------
# random states and checkpoints


def rng_state() -> dict:
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "python": list(random.getstate()[1]),
    }


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    keys = n["keys"].numpy().astype(np.uint32)
    np.random.set_state(("MT19937", keys, n["pos"], n["has_gauss"], n["cached_gaussian"]))
    random.setstate((3, tuple(state["python"]), None))


def write_checkpoint(state: dict, path: Path) -> None:
    """torch.save to a temporary file, fsync, rename: a crash or a full disk at any point leaves
    the previous checkpoint intact."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        with contextlib.suppress(OSError):
            tmp.unlink()
        reason = "the disk is full" if e.errno == errno.ENOSPC else (e.strerror or str(e))
        kept = "the previous checkpoint is intact" if path.exists() else "no checkpoint kept"
        raise UserError(f"cannot write checkpoint {path}: {reason}; {kept}") from e


def read_checkpoint(path: Path) -> dict:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise UserError(f"cannot read checkpoint {path}: corrupt ({type(e).__name__})") from e
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise UserError(f"{path} is not an adaptsr training checkpoint")
    return state


def _trim_log(path: Path, iteration: int) -> None:
    """Drop log lines written after the checkpoint (and a line cut short by a kill)."""
    if not path.exists():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if record.get("iter", 0) <= iteration:
            keep.append(line)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("".join(f"{line}\n" for line in keep))
    os.replace(tmp, path)


# ---------------------------------------------------------------------------------------------
# validation


@torch.no_grad()
def validate(model: nn.Module, pairs: list, device: torch.device, autocast: bool) -> dict:
    """Mean Y-channel PSNR/SSIM (border of `scale` pixels cropped) over the validation pairs."""
    from adaptsr.adapt.metrics import psnr_y, ssim_y
    from adaptsr.adapt.models import model_info
    from adaptsr.tiling import SizeRule, tiled_upscale

    info = model_info(model)
    rule = SizeRule(max(1, info.min_size), max(1, info.multiple_of))

    def run(batch: np.ndarray) -> np.ndarray:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            out = model(torch.from_numpy(batch).to(device))
        return out.float().cpu().numpy()

    was_training = model.training
    model.eval()
    psnrs, ssims = [], []
    for _, lr, hr in pairs:
        # whole images, padded as `adapt eval` and `adapt upscale` pad them: the same numbers
        sr = tiled_upscale(run, lr[0].numpy(), info.scale, rule, tile=0)
        sr = torch.from_numpy(sr)[None].clamp(0, 1)
        psnrs.append(float(psnr_y(sr, hr, crop=info.scale)))
        ssims.append(float(ssim_y(sr, hr, crop=info.scale)))
    model.train(was_training)
    return {"psnr_y": float(np.mean(psnrs)), "ssim_y": float(np.mean(ssims))}


# ---------------------------------------------------------------------------------------------
# the loop


class _StopFlag:
    """Set by Ctrl-C (SIGINT); a second Ctrl-C interrupts at once."""

    def __init__(self):
        self.set = False
        self._previous = None

    def __enter__(self):
        import threading

        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.set:
            raise KeyboardInterrupt
        self.set = True

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


@dataclass
class Result:
    iteration: int
    status: str  # finished, interrupted
    output: Path | None
    best: dict | None
    message: str


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
    except OSError as e:
        raise UserError(f"cannot use {run_dir}: {e.strerror or e}") from e


def _seed(*parts: int) -> int:
    return int(np.random.SeedSequence(list(parts)).generate_state(1)[0])


def _seed_all(seed: int) -> None:
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed)


def train(
    config: TrainConfig,
    run_dir: str | os.PathLike,
    resume: bool = False,
    force: bool = False,
    progress: bool = True,
) -> Result:
    """Train as configured, writing into run_dir; resume continues from its checkpoint."""
    import torch.distributed as dist

    cfg = config.resolved()
    run_dir = Path(run_dir)
    d = dist_from_env()
    device = resolve_device(cfg.device, d)
    own_group = d.world > 1 and not dist.is_initialized()
    if own_group:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    try:
        if d.main:
            prepare_run_dir(run_dir, resume, force)
        if d.world > 1:
            dist.barrier()
        return _train(cfg, run_dir, resume, progress, d, device)
    finally:
        if own_group:
            dist.destroy_process_group()


def _train(cfg: TrainConfig, run_dir: Path, resume: bool, progress: bool, d: Dist, device):
    import torch.distributed as dist

    from adaptsr import kernels
    from adaptsr.adapt import data
    from adaptsr.adapt.models import model_info

    model = build_base(cfg).to(device)
    info = model_info(model)
    lr_patch = cfg.patch // info.scale
    if cfg.patch % info.scale or lr_patch < info.min_size or lr_patch % max(1, info.multiple_of):
        raise UserError(
            f"--patch {cfg.patch} gives LR crops of {cfg.patch / info.scale:g} px; {info.arch} "
            f"x{info.scale} needs a multiple of {info.multiple_of} (at least {info.min_size})"
        )

    found = data.scan(cfg.data, info.scale, cfg.patch, cfg.lr_dir, cfg.hr_dir, cfg.strict)
    train_entries, val_entries = data.split_validation(found, cfg.val_split)
    if cfg.val:
        val_entries = data.validation_entries(cfg.val, info.scale, cfg.strict)
    say = _printer(d, progress)
    held = f", {len(val_entries)} for validation" if val_entries else ""
    say(f"data: {found.summary()}{held}")
    dataset = data.CropDataset(train_entries, cfg.patch, info.scale, cfg.flips)

    if d.main and not resume:
        clear_previous_run(run_dir)
    ranks = None
    rank_file = run_dir / "rank_map.json"  # the run's own copy: a resume never rereads --rank-map
    if cfg.mode == "lora" and (cfg.rank_aware or cfg.rank_map):
        if resume:
            ranks = {k: v for k, v in read_rank_map(rank_file).items() if v > 0}
        elif cfg.rank_map:
            ranks = read_rank_map(cfg.rank_map)
            if d.main:
                _write_json(rank_file, {"ranks": ranks, "source": str(cfg.rank_map)})
        else:
            batches = _score_batches(dataset, found.paired, cfg, info.scale, device, d)
            ranks, allocation = rank_aware_ranks(model, cfg, batches, d)
            if d.main:
                _write_json(rank_file, allocation)
            say(f"rank-aware: {len(ranks)} adapted sites, rank map in {rank_file}")
    params = make_trainable(model, cfg, ranks)
    model.train()

    optimizer = torch.optim.Adam(params, lr=cfg.lr)
    scheduler = make_scheduler(optimizer, cfg)
    degrader = None
    if not found.paired:
        degrader = data.make_degrader(
            cfg.degradation, info.scale, _seed(cfg.seed, 2, d.rank), device
        )
    start, best = 0, None
    ckpt_path = run_dir / "checkpoint.pt"
    if resume:
        state = read_checkpoint(ckpt_path)
        load_trainable_state(model, state["trainable"], cfg.mode)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start, best = state["iteration"], state["best"]
        same_world = state["world"] == d.world
        if same_world:
            set_rng_state(state["rng"][d.rank])
            if degrader is not None:
                degrader.load_state_dict(state["degraders"][d.rank])
        else:
            say(f"note: resumed on {d.world} processes (was {state['world']}): not bit-exact")
            _seed_all(_seed(cfg.seed, start, d.rank))
        if start >= cfg.iters:
            return Result(start, "finished", None, best, f"{run_dir} already finished")
    else:
        _seed_all(_seed(cfg.seed, 1, d.rank))

    if d.main:
        if not resume:
            _write_json(run_dir / "config.json", {**cfg.to_dict()})
        _trim_log(run_dir / "log.jsonl", start)

    val_pairs = []
    if val_entries and d.main:
        val_pairs = data.validation_pairs(
            val_entries, info.scale, cfg.degradation, _seed(cfg.seed, 5), device
        )

    net = model
    if d.world > 1:
        net = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    plan = data.BatchPlan(len(train_entries), cfg.batch, cfg.seed, start, cfg.iters, d)
    batches = iter(data.loader(dataset, plan, cfg.workers, device.type == "cuda"))
    autocast = cfg.precision == "bf16" or (cfg.precision == "auto" and device.type == "cuda")
    autocast = autocast and info.supports_bfloat16

    log = _Log(run_dir / "log.jsonl", d.main)
    log.write(
        {
            "event": "resume" if resume else "start",
            "iter": start,
            "world": d.world,
            "device": str(device),
            "trainable": sum(p.numel() for p in params),
            "images": len(train_entries),
            "val_images": len(val_entries),
            "skipped_corrupt": len(found.corrupt),
            "skipped_small": len(found.too_small),
        }
    )
    bar = None
    if d.main and progress:
        from tqdm import tqdm

        bar = tqdm(total=cfg.iters, initial=start, unit="it", dynamic_ncols=True, file=sys.stderr)

    last_saved = start if resume else None
    stats = _Stats()

    def checkpoint(iteration: int) -> None:
        nonlocal last_saved
        if not all(bool(torch.isfinite(p).all()) for p in params):
            raise _non_finite("weights", iteration, last_saved, ckpt_path)
        rngs = _gather(rng_state(), d)
        degs = _gather(degrader.state_dict() if degrader else None, d)
        if d.main:
            state = {
                "format": CHECKPOINT_FORMAT,
                "iteration": iteration,
                "mode": cfg.mode,
                "world": d.world,
                "trainable": trainable_state(model, cfg.mode),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "rng": rngs,
                "degraders": degs,
                "best": best,
            }
            write_checkpoint(state, ckpt_path)
            save_outputs(model, cfg, run_dir)
        last_saved = iteration

    it = start
    status = "finished"
    try:
        with _StopFlag() as stop, kernels.use_backend(cfg.kernels):
            while it < cfg.iters:
                t0 = time.perf_counter()
                try:
                    batch = next(batches)
                except UserError as e:  # from a loader worker: keep the original last line
                    last = str(e).strip().splitlines()[-1]
                    raise UserError(last.removeprefix("adaptsr.errors.UserError: ")) from None
                t1 = time.perf_counter()
                hr = batch["hr"].to(device, non_blocking=True)
                if "lr" in batch:
                    lr = batch["lr"].to(device, non_blocking=True)
                else:
                    with torch.no_grad():
                        lr = degrader(hr)
                    if device.type == "cuda":
                        torch.cuda.synchronize(device)
                t2 = time.perf_counter()
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
                    sr = net(lr)
                loss = F.l1_loss(sr.float(), hr)
                value = loss.detach().clone()
                if d.world > 1:
                    dist.all_reduce(value)
                    value /= d.world
                value = float(value)
                it += 1
                if not math.isfinite(value):
                    raise _non_finite(f"loss ({value})", it, last_saved, ckpt_path)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()
                stats.add(value, t1 - t0, t2 - t1, hr.shape[0] if "lr" not in batch else 0)
                if bar is not None:
                    bar.update(1)
                if it % max(1, cfg.log_every) == 0 or it == cfg.iters:
                    record = {"iter": it, **stats.flush(), "lr": optimizer.param_groups[0]["lr"]}
                    log.write(record)
                    if bar is not None:
                        bar.set_postfix(loss=f"{record['loss']:.4f}", lr=f"{record['lr']:.2e}")
                due = cfg.val_every and it % cfg.val_every == 0
                if val_pairs and (due or it == cfg.iters):
                    best = _validate_and_keep(
                        model, val_pairs, device, autocast, cfg, run_dir, it, best, log
                    )
                if (cfg.save_every and it % cfg.save_every == 0) or it == cfg.iters:
                    checkpoint(it)
                if _any(stop.set, d) and it < cfg.iters:
                    if last_saved != it:
                        checkpoint(it)
                    status = "interrupted"
                    break
    finally:
        if bar is not None:
            bar.close()
    if status == "interrupted":
        message = (
            f"interrupted at iteration {it}: checkpoint saved; continue with "
            f"`adapt train --out {run_dir} --resume`"
        )
        log.write({"event": "interrupted", "iter": it})
        return Result(it, status, None, best, message)
    log.write({"event": "done", "iter": it})
    name = "adapter.safetensors" if cfg.mode == "lora" else "model.safetensors"
    return Result(it, status, run_dir / name, best, f"wrote {run_dir / name}")


def _score_batches(dataset, paired: bool, cfg: TrainConfig, scale: int, device, d: Dist):
    """(LR, HR) batches for the importance scores: this process's slices of `score_batches`
    global batches, drawn with their own seeds (the training data order is not disturbed)."""
    from adaptsr.adapt import data

    plan = data.BatchPlan(len(dataset), cfg.batch, _seed(cfg.seed, 6), 0, cfg.score_batches, d)
    degrader = None
    if not paired:
        degrader = data.make_degrader(cfg.degradation, scale, _seed(cfg.seed, 7, d.rank), device)
    yield from data.degraded_batches(dataset, plan, degrader, device)


def _validate_and_keep(model, pairs, device, autocast, cfg, run_dir, it, best, log):
    scores = validate(model, pairs, device, autocast)
    improved = best is None or scores["psnr_y"] > best["psnr_y"]
    if improved:
        best = {"iter": it, **scores}
        save_outputs(model, cfg, run_dir, suffix="-best")
    log.write({"event": "val", "iter": it, **scores, "best": improved})
    return best


def _non_finite(what: str, it: int, last_saved: int | None, path: Path) -> UserError:
    kept = (
        f"the last good checkpoint (iteration {last_saved}) is kept in {path}"
        if last_saved is not None
        else "no checkpoint had been written yet"
    )
    return UserError(
        f"{what} is not finite at iteration {it}: training stopped; {kept} (try a lower --lr)"
    )


def _gather(obj, d: Dist) -> list:
    if d.world == 1:
        return [obj]
    import torch.distributed as dist

    out = [None] * d.world
    dist.all_gather_object(out, obj)
    return out


def _any(flag: bool, d: Dist) -> bool:
    """True on every process when any process saw Ctrl-C, so all stop at the same iteration."""
    if d.world == 1:
        return flag
    import torch.distributed as dist

    t = torch.tensor([int(flag)])
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


class _Stats:
    """Loss and data-path timings over one logging interval."""

    def __init__(self):
        self.reset()

    def reset(self):
        self.losses, self.wait, self.degrade, self.degraded = [], 0.0, 0.0, 0
        self.t0 = time.perf_counter()

    def add(self, loss: float, wait: float, degrade: float, degraded: int):
        self.losses.append(loss)
        self.wait += wait
        self.degrade += degrade
        self.degraded += degraded

    def flush(self) -> dict:
        n = len(self.losses)
        elapsed = time.perf_counter() - self.t0
        record = {
            "loss": sum(self.losses) / n,
            "it_s": n / elapsed if elapsed > 0 else None,
            "data_wait_s": self.wait / n,
        }
        if self.degraded and self.degrade > 0:
            record["degrade_per_s"] = self.degraded / self.degrade
        self.reset()
        return record


class _Log:
    """The JSONL log; TensorBoard event files beside it when tensorboard is installed."""

    def __init__(self, path: Path, enabled: bool):
        self.path, self.enabled = path, enabled
        self.board = None
        if enabled:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # tensorboard is optional
                pass
            else:
                self.board = SummaryWriter(str(path.parent / "tensorboard"))

    def write(self, record: dict) -> None:
        if not self.enabled:
            return
        record = {**record, "time": round(time.time(), 3)}
        try:
            with open(self.path, "a") as f:
                f.write(json.dumps(record) + "\n")
        except OSError as e:
            raise UserError(f"cannot write {self.path}: {e.strerror or e}") from e
        if self.board is not None and "iter" in record:
            group = "val" if record.get("event") == "val" else "train"
            for key, value in record.items():
                if key not in ("iter", "time") and type(value) in (int, float):
                    self.board.add_scalar(f"{group}/{key}", value, record["iter"])
            self.board.flush()


def _write_json(path: Path, values: dict) -> None:
    from adaptsr.fileio import atomic_output

    with atomic_output(path, force=True) as tmp:
        tmp.write_text(json.dumps(values, indent=2) + "\n")


def _printer(d: Dist, enabled: bool):
    def say(text: str) -> None:
        if d.main and enabled:
            print(text, file=sys.stderr)

    return say


# ---------------------------------------------------------------------------------------------
# benchmark


def bench_defaults(device: str) -> dict:
    """Batch, HR crop and timed steps: the paper's batch 8 and LR 64x64 on a GPU; a batch and
    crop that a 2-core CPU gets through in seconds elsewhere."""
    cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    if cuda:
        return {"batch": 8, "patch": 256, "iters": 30}
    return {"batch": 2, "patch": 128, "iters": 10}


def benchmark(
    models: list[str],
    modes: list[str],
    batch: int,
    patch: int,
    iters: int,
    device: str = "auto",
    rank: int = 8,
    warmup: int = 2,
    kernels: str = "auto",
) -> list[dict]:
    """Training steps per second and peak memory for each (model, mode), with the LoRA kernels
    of `kernels` (auto, reference, triton: see `adaptsr.kernels`).

    Each configuration runs in a fresh process, so its peak RSS is its own. A step is what the
    training loop does per iteration on a pre-degraded batch: forward (bf16 autocast on CUDA),
    L1 loss, backward, Adam step.
    """
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    rows = []
    for model in models:
        for mode in modes:
            if mode not in ("lora", "full"):
                raise UserError(f"benchmark modes are lora and full, got {mode!r}")
            with ProcessPoolExecutor(1, mp_context=mp.get_context("spawn")) as pool:
                job = pool.submit(
                    _bench_one, model, mode, batch, patch, iters, warmup, device, rank, kernels
                )
                rows.append(job.result())
    return rows


def _rss_mb() -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _bench_one(spec, mode, batch, patch, iters, warmup, device_name, rank, kernel_backend) -> dict:
    import resource
    import warnings

    warnings.filterwarnings("ignore", category=UserWarning)  # architectures' deprecation notes

    from adaptsr import kernels
    from adaptsr.adapt.degradations import Degrader
    from adaptsr.adapt.models import model_info

    cfg = TrainConfig(
        model=spec, mode=mode, rank=rank, batch=batch, patch=patch, kernels=kernel_backend
    ).resolved()
    device = resolve_device(device_name, Dist())
    model, params = build_trainable(cfg, device)
    scale = model_info(model).scale
    optimizer = torch.optim.Adam(params, lr=cfg.lr)
    g = torch.Generator(device).manual_seed(0)
    hr = torch.rand(batch, 3, patch, patch, generator=g, device=device)
    lr = Degrader("bicubic", scale, 0, device)(hr)
    cuda = device.type == "cuda"
    rss_before = _rss_mb()
    if cuda:
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for i in range(warmup + iters):
        t0 = time.perf_counter()
        with (
            kernels.use_backend(cfg.kernels),
            torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda),
        ):
            sr = model(lr)
            loss = F.l1_loss(sr.float(), hr)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
        optimizer.step()
        if cuda:
            torch.cuda.synchronize(device)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    times.sort()
    row = {
        "model": spec,
        "mode": mode,
        "kernels": cfg.kernels,
        "trainable": sum(p.numel() for p in params),
        "batch": batch,
        "lr_size": patch // scale,
        "it_s": 1.0 / times[len(times) // 2],
        "device": str(device) if not cuda else torch.cuda.get_device_name(device),
        "threads": torch.get_num_threads(),
        # the kernel's high-water mark is updated lazily: it can trail the current RSS
        "peak_rss_mb": max(
            resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, _rss_mb() or 0.0
        ),
        "rss_before_mb": rss_before,
    }
    if cuda:
        row["gpu_peak_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    return row


def bench_table(rows: list[dict]) -> str:
    """A markdown table of benchmark rows."""
    gpu = any("gpu_peak_mb" in r for r in rows)
    head = "| model | mode | kernels | trainable params | batch | LR crop | it/s | "
    head += "peak GPU memory (MiB) |" if gpu else "peak RSS (MiB) | RSS before training (MiB) |"
    lines = [head, "|" + "---|" * (9 if not gpu else 8)]
    for r in rows:
        cells = [
            r["model"],
            r["mode"],
            r["kernels"] if r["mode"] == "lora" else "-",
            f"{r['trainable']:,}",
            str(r["batch"]),
            f"{r['lr_size']}x{r['lr_size']}",
            f"{r['it_s']:.2f}",
        ]
        if gpu:
            cells.append(f"{r['gpu_peak_mb']:.0f}")
        else:
            cells += [f"{r['peak_rss_mb']:.0f}", f"{r['rss_before_mb'] or 0:.0f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
