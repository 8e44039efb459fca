"""The model side of a run: the base model, its adapters (uniform, a rank map, or rank-aware
ranks from `adapt allocate`'s scoring), the optimizer's schedule, validation and the outputs.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from adaptsr.adapt import difffit, lora
from adaptsr.adapt.adapter_file import save_adapter
from adaptsr.adapt.allocate import allocate_ranks, entry_batches
from adaptsr.adapt.degradation_file import metadata_text
from adaptsr.adapt.lora import adapter_train_mode
from adaptsr.adapt.metrics import psnr_y, ssim_y
from adaptsr.adapt.models import (
    BUILTIN_MODELS,
    PRETRAINED,
    architecture_module,
    build_model,
    load_model,
    model_from_state_dict,
    model_info,
    save_model,
)
from adaptsr.adapt.rankmap import RankAllocation
from adaptsr.adapt.train.config import ADAPTER_MODES, SCHEDULES, TrainConfig
from adaptsr.adapt.train.data_record import source_degradations
from adaptsr.adapt.train.distributed import Dist, _mean
from adaptsr.core.errors import UserError
from adaptsr.core.tiling import tiled_upscale


def build_base(cfg: TrainConfig) -> nn.Module:
    """The base model on the CPU; re-initialised for pretraining."""
    torch.manual_seed(cfg.seed)
    if cfg.mode == "pretrain" and (cfg.model in BUILTIN_MODELS or cfg.model in PRETRAINED):
        return build_model(cfg.model, seed=cfg.seed)  # the architecture's own initialisation
    model = load_model(cfg.model)
    if cfg.mode == "pretrain":
        # A fresh instance with the checkpoint's settings: the architecture's own
        # initialisation of every parameter (position-bias tables and custom norms included).
        net = architecture_module(model)
        hyper = getattr(net, "hyperparameters", None)
        if not hyper:
            raise UserError(
                f"cannot re-initialise {model_info(model).arch} from a checkpoint (its "
                "constructor settings are unknown): pretrain from a built-in name instead"
            )
        fresh = type(net)(**hyper)
        model = model_from_state_dict(fresh.state_dict(), name=str(cfg.model))
    return model


def make_trainable(model: nn.Module, cfg: TrainConfig, ranks=None) -> list[nn.Parameter]:
    """Inject adapters (lora: `ranks`, else the rank map or uniform rank; difffit: scales and
    shifts) on the --targets families, or unfreeze all."""

    if cfg.mode == "difffit":
        difffit.inject_difffit(model, cfg.targets)
        return difffit.difffit_parameters(model)
    if cfg.mode != "lora":
        model.requires_grad_(True)
        return [p for p in model.parameters() if p.requires_grad]
    if ranks is None:
        ranks = cfg.rank
    torch.manual_seed(cfg.seed)  # adapter initialisation independent of what ran before
    lora.inject_lora(model, ranks, cfg.alpha, cfg.scaling, cfg.targets)
    return lora.adapter_parameters(model)


def build_trainable(cfg: TrainConfig, device: torch.device) -> tuple[nn.Module, list]:
    """The model ready to train and its trainable parameters."""
    model = build_base(cfg).to(device)
    params = make_trainable(model, cfg)
    return train_mode(model, cfg), params


def train_mode(model: nn.Module, cfg: TrainConfig) -> nn.Module:
    """LoRA: the frozen base keeps its running statistics and runs no dropout or drop-path
    (docs/training.md); full fine-tuning and pretraining: plain train mode."""

    return adapter_train_mode(model) if cfg.mode in ADAPTER_MODES else model.train()


def training_ranks(
    model,
    cfg: TrainConfig,
    entries,
    paired: bool,
    run_dir: Path,
    resume: bool,
    d: Dist,
    device,
    progress: bool,
) -> RankAllocation | None:
    """The rank map of a --rank-map or --rank-aware run (None: uniform --rank). The loop keeps
    it in RUN_DIR/rank_map.json in the schema of `adapt allocate` (no heatmap): a resume reads
    that copy back and never rereads --rank-map or rescores."""
    if cfg.mode != "lora" or not (cfg.rank_aware or cfg.rank_map):
        return None
    rank_file = run_dir / "rank_map.json"
    if resume:
        return RankAllocation.read(rank_file)
    if cfg.rank_map:
        return replace(RankAllocation.read(cfg.rank_map), source=str(cfg.rank_map))
    return rank_aware_allocation(model, cfg, entries, paired, d, device, progress)


def rank_aware_allocation(
    model, cfg: TrainConfig, entries, paired: bool, d: Dist, device, progress: bool
) -> RankAllocation:
    """`adapt allocate`'s scores and allocation, with its seeds and the run's options, on the
    training images (validation images held out). Under DDP each process scores its slice of
    every batch and the scores are averaged, so every process injects the same adapters."""
    info = model_info(model)
    a = cfg.allocation
    if a.score_batch % d.world:
        raise UserError(f"--score-batch {a.score_batch} is not divisible by {d.world} processes")
    batches = None
    if a.score != "random":  # random scores read no data, as in `adapt allocate`
        batches = entry_batches(
            entries,
            paired,
            info.scale,
            count=a.score_batches,
            batch=a.score_batch,
            patch=a.score_patch,
            degradation=cfg.degradation,
            seed=cfg.seed,
            device=device,
            lr_multiple=max(1, info.multiple_of),
            lr_min=info.min_size,
            flips=cfg.flips,
            dist=d,
        )
    data = list(cfg.data) if cfg.data else None
    if cfg.lr_dir:
        data = {"data": data, "lr_dir": cfg.lr_dir, "hr_dir": cfg.hr_dir}
    settings = {
        "model": cfg.model,
        "data": data,
        "degradation": cfg.degradation,
        "batches": a.score_batches if batches is not None else 0,
        "batch": a.score_batch,
        "patch": a.score_patch,
        "processes": d.world,
    }
    return allocate_ranks(
        model,
        batches,
        a.budget,
        score=a.score,
        allocator=a.allocator,
        r_min=a.r_min,
        r_max=a.r_max,
        normalise=a.normalise,
        targets=cfg.targets,
        seed=cfg.seed,
        progress=progress and d.main,
        total=a.score_batches,
        settings=settings,
        reduce=lambda scores: _mean(scores, d, device),
        score_warmup=a.score_warmup,  # under DDP each process warms up on its slice
    )


def make_scheduler(optimizer, cfg: TrainConfig):
    fractions, gamma = SCHEDULES[cfg.mode]
    milestones = sorted({max(1, round(f * cfg.iters)) for f in fractions})
    return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones, gamma=gamma)


def _degradation_record(cfg: TrainConfig) -> str:
    """The adapter's record of the training degradation ("" for a run on LR/HR pairs)."""
    if cfg.lr_dir and not cfg.data:
        return ""
    return metadata_text(cfg.degradation, source_degradations(cfg.data))


def save_outputs(model: nn.Module, cfg: TrainConfig, run_dir: Path, suffix: str = "") -> Path:
    """adapter[-best].safetensors (lora, difffit) or model[-best].safetensors (full, pretrain)."""

    if cfg.mode in ADAPTER_MODES:
        path = run_dir / f"adapter{suffix}.safetensors"
        return save_adapter(model, path, force=True, degradation=_degradation_record(cfg))
    return save_model(model, run_dir / f"model{suffix}.safetensors", force=True)


@torch.no_grad()
def validate(
    model: nn.Module, pairs: list, device: torch.device, autocast: bool, on_output=None
) -> dict:
    """Mean Y-channel PSNR/SSIM (border of `scale` pixels cropped) over the validation pairs;
    `on_output(index, sr)`, when given, sees each output ((1, 3, H, W) in [0, 1], on the CPU)."""

    info = model_info(model)
    rule = info.size_rule()

    def run(batch: np.ndarray) -> np.ndarray:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            out = model(torch.from_numpy(batch).to(device))
        return out.float().cpu().numpy()

    modes = [(m, m.training) for m in model.modules()]  # restored layer by layer
    model.eval()
    psnrs, ssims = [], []
    for index, (_, lr, hr) in enumerate(pairs):
        # whole images, padded as `adapt eval` and `adapt upscale` pad them: the same numbers
        sr = tiled_upscale(run, lr[0].numpy(), info.scale, rule, tile=0)
        sr = torch.from_numpy(sr)[None].clamp(0, 1)
        if on_output is not None:
            on_output(index, sr)
        psnrs.append(float(psnr_y(sr, hr, crop=info.scale)))
        ssims.append(float(ssim_y(sr, hr, crop=info.scale)))
    for m, training in modes:
        m.train(training)
    return {"psnr_y": float(np.mean(psnrs)), "ssim_y": float(np.mean(ssims))}
