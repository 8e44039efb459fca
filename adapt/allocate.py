"""Rank-aware allocation: score every LoRA site, then share a parameter budget among them.

1. Scores (adapt/site_scores.py), one per site, on the frozen base model and the adaptation
   data; `image_batches` and `entry_batches` draw that data as training draws it.
2. Allocation of a budget in trainable parameters (a rank at a site costs C_in + C_out k^2 or
   d_in + d_out), every site within [r_min, r_max] (capped at its useful rank):
   - paper (Algorithm 1): every site starts at r_min; walking down the sites by score, each is
     raised to r_max, or as far as the budget left allows, then the walk goes on (a cheaper
     site further down may still fit);
   - marginal: greedy by gain per parameter, the gain of rank r -> r+1 at a site being
     score * (sqrt(r + 1) - sqrt(r)) (diminishing returns), taken from a heap.
   Both never exceed the budget and stop only when no site below its cap can afford one more
   rank. Equal scores are ordered by a seeded shuffle, so a seed gives one allocation.
3. The result is a `RankAllocation` (adapt/rankmap.py: the one schema of rank map files, its
   heatmap and summary). `run_allocation` is `adapt allocate`: a model, its data and an
   AllocationSettings in, a rank map and heatmap out.
"""

from __future__ import annotations

import heapq
import math
import os
import random
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import torch
from torch import nn

from adaptsr.adapt.allocation_settings import AllocationSettings, score_warmup_steps
from adaptsr.adapt.choices import (
    ALLOCATORS,
    DEFAULT_ALLOCATOR,
    DEFAULT_BATCH,
    DEFAULT_BATCHES,
    DEFAULT_DEGRADATION,
    DEFAULT_NORMALISE,
    DEFAULT_PATCH,
    DEFAULT_R_MAX,
    DEFAULT_R_MIN,
    DEFAULT_SCORE,
)
from adaptsr.adapt.data import BatchPlan, CropDataset, derive_seed, scan
from adaptsr.adapt.degradation_file import recorded as recorded_degradation
from adaptsr.adapt.degradation_file import settings_of
from adaptsr.adapt.devices import pick_device
from adaptsr.adapt.lora import ALL_TARGETS, Site, base_parameter_count, resolve_ranks
from adaptsr.adapt.lr_batches import degraded_batches, make_degrader
from adaptsr.adapt.models import check_base_weights, load_model, model_info
from adaptsr.adapt.rankmap import RankAllocation, SiteInfo, heatmap_path, write_rank_map
from adaptsr.adapt.score_warmup import warmed_copy, warmup_rank
from adaptsr.adapt.site_scores import SiteScores, score_sites
from adaptsr.adapt.sites import parse_targets, target_sites
from adaptsr.core.errors import UserError
from adaptsr.core.fileio import check_outputs_not_inputs, check_outside_inputs, check_writable

RHO_WARN = 0.5  # below this the ranking of the sites changes a lot from batch to batch


# ---------------------------------------------------------------------------------------------
# budget


# Digits are bounded: a rank past 10^6 or a count past 10^15 parameters is a typo, and longer
# numbers would overflow the float arithmetic of the allocators.
_BUDGET = re.compile(r"^(?:r(\d{1,6})|(\d{1,15}(?:\.\d{0,9})?|\.\d{1,9})\s*([kKmM%]?))$")


def parse_budget(spec: str | int, model: nn.Module, targets: str = ALL_TARGETS) -> tuple[int, str]:
    """A budget in trainable parameters, and how it was given.

    `886000`, `886k`, `1.2M` (parameters), `8%` (of the base model's parameters) or `r8` (what
    uniform rank 8 costs on the `targets` sites, capped at each site's useful rank as
    inject_lora does). Fractions round down: the budget is a ceiling.
    """
    text = str(spec).strip()
    m = _BUDGET.match(text)
    if not m:
        raise UserError(
            f"budget {text!r} not understood: give parameters (886000, 886k, 1.2M), "
            "a share of the base model (8%) or a uniform rank (r8)"
        )
    if m.group(1) is not None:
        r = int(m.group(1))
        if r < 1:
            raise UserError(f"budget {text}: the uniform rank must be at least 1")
        chosen, _ = resolve_ranks(model, r, targets)
        costs = {s.name: s.cost_per_rank for s in target_sites(model, targets)}
        return sum(rank * costs[n] for n, rank in chosen.items()), f"uniform rank {r}"
    number = Decimal(m.group(2))  # the pattern admits only valid decimals
    unit = m.group(3).lower()
    if unit == "%":
        if not 0 < number <= 100:
            raise UserError(f"budget {text}: a share of the base model must be in (0, 100]%")
        params = int(number * base_parameter_count(model) / 100)
        how = f"{number}% of the base model"
    else:
        params = int(number * {"": 1, "k": 1000, "m": 1_000_000}[unit])
        how = "parameters"
    if params < 1:
        raise UserError(f"budget {text} is less than one parameter")
    return params, how


# ---------------------------------------------------------------------------------------------
# allocation


def _bounds(sites: list[Site], r_min: int, r_max: int) -> tuple[dict, dict]:
    for name, v in (("r_min", r_min), ("r_max", r_max)):
        if isinstance(v, bool) or not isinstance(v, int):
            raise UserError(f"{name} must be a whole number, got {v!r}")
    if r_min < 0:
        raise UserError(f"r_min must be >= 0, got {r_min}")
    if r_max < 1 or r_max < r_min:
        raise UserError(f"r_max must be >= max(1, r_min={r_min}), got {r_max}")
    lo = {s.name: min(r_min, s.max_rank) for s in sites}
    hi = {s.name: min(r_max, s.max_rank) for s in sites}
    return lo, hi


def _order(sites: list[Site], scores: dict[str, float], seed: int) -> list[Site]:
    """Sites by score, descending; equal scores in a seeded random order."""
    tie = list(range(len(sites)))
    random.Random(seed).shuffle(tie)
    keyed = sorted(range(len(sites)), key=lambda i: (-scores[sites[i].name], tie[i]))
    return [sites[i] for i in keyed]


def allocate(
    sites: list[Site],
    scores: dict[str, float],
    budget: int,
    r_min: int = DEFAULT_R_MIN,
    r_max: int = DEFAULT_R_MAX,
    method: str = "paper",
    seed: int = 0,
) -> dict[str, int]:
    """{site: rank} for every site (0: no adapter), using at most `budget` parameters."""
    if method not in ALLOCATORS:
        raise UserError(f"unknown allocator {method!r}; choose one of {', '.join(ALLOCATORS)}")
    if not sites:
        raise UserError("this model has no conv or linear layer that LoRA can adapt")
    missing = [s.name for s in sites if s.name not in scores]
    if missing:
        raise UserError(f"no score for {len(missing)} site(s), e.g. {missing[0]}")
    bad = [n for n in (s.name for s in sites) if not (math.isfinite(scores[n]) and scores[n] >= 0)]
    if bad:
        raise UserError(f"score of {bad[0]} is {scores[bad[0]]}: scores must be finite and >= 0")
    if isinstance(budget, bool) or not isinstance(budget, int) or budget < 1:
        raise UserError(f"budget must be a positive number of parameters, got {budget!r}")
    lo, hi = _bounds(sites, r_min, r_max)
    cost = {s.name: s.cost_per_rank for s in sites}
    floor = sum(lo[n] * cost[n] for n in lo)
    if floor > budget:
        raise UserError(
            f"budget {budget:,} parameters is below the {floor:,} that r_min={r_min} at every "
            "site costs; raise the budget or lower r_min (0 lets sites go without an adapter)"
        )
    cheapest = min(cost[n] for n in lo if hi[n] > lo[n]) if any(hi[n] > lo[n] for n in lo) else 0
    if floor == 0 and budget < cheapest:
        raise UserError(
            f"budget {budget:,} parameters is below one rank at the cheapest site "
            f"({cheapest:,}): nothing would be adapted"
        )
    ranks = dict(lo)
    left = budget - floor
    order = _order(sites, scores, seed)
    if method == "paper":
        for s in order:
            extra = min(hi[s.name] - ranks[s.name], left // cost[s.name])
            ranks[s.name] += extra
            left -= extra * cost[s.name]
        return {s.name: ranks[s.name] for s in sites}
    # marginal gain per parameter; the heap holds each site's next step.
    position = {s.name: i for i, s in enumerate(order)}

    def entry(name: str) -> tuple:
        r = ranks[name]
        gain = scores[name] * (math.sqrt(r + 1) - math.sqrt(r))
        return (-gain / cost[name], -scores[name], position[name], name)

    heap = [entry(s.name) for s in sites if ranks[s.name] < hi[s.name]]
    heapq.heapify(heap)
    while heap:
        name = heapq.heappop(heap)[-1]
        if cost[name] > left:
            continue  # never affordable again: what is left only shrinks
        ranks[name] += 1
        left -= cost[name]
        if ranks[name] < hi[name]:
            heapq.heappush(heap, entry(name))
    return {s.name: ranks[s.name] for s in sites}


def _check_informative(scores: dict[str, float], method: str) -> None:
    """Refuse scores that cannot rank the sites: with most of them zero or not finite, an
    allocation would be a seeded tie-break that only looks data-driven."""
    dead = [n for n, v in scores.items() if not (math.isfinite(v) and v > 0)]
    if len(dead) * 2 > len(scores):
        raise UserError(
            f"{len(dead)} of {len(scores)} site scores are zero or not finite (e.g. {dead[0]}: "
            f"{scores[dead[0]]}): {method} scores cannot rank this model's sites; try "
            "--score activation, or a uniform --rank"
        )


def allocate_ranks(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]] | None,
    budget: int | str,
    *,
    score: str = DEFAULT_SCORE,
    allocator: str = DEFAULT_ALLOCATOR,
    r_min: int = DEFAULT_R_MIN,
    r_max: int = DEFAULT_R_MAX,
    normalise: str = DEFAULT_NORMALISE,
    targets: str = ALL_TARGETS,
    seed: int = 0,
    progress: bool = False,
    total: int | None = None,
    settings: dict | None = None,
    reduce: Callable[[dict[str, float]], dict[str, float]] | None = None,
    score_warmup: int | None = None,
) -> RankAllocation:
    """Score the sites of a base model on `batches` and share `budget` among them.

    `budget`: parameters (int) or a spec for parse_budget ("886k", "8%", "r8"); only the sites
    of the `targets` families are scored and given ranks. The model is left as it was.
    Problems worth a user's attention (unstable scores) are in `.warnings`.
    `reduce` maps the mean scores to the ones allocated: `adapt train` averages them over its
    DDP processes so that every process allocates the same ranks (rho stays this process's).
    `score_warmup` > 0: the scores are taken on a copy of the model that first trained a
    uniform LoRA for that many steps on `batches` (adapt/score_warmup.py); 0: at initialisation
    (the paper's); None: DEFAULT_SCORE_WARMUP steps (none for random scores).
    """
    targets = parse_targets(targets)
    score_warmup = score_warmup_steps(score_warmup, score)
    params, how = parse_budget(budget, model, targets)
    sites = target_sites(model, targets)
    # Check the budget and bounds before spending time on gradients.
    allocate(sites, dict.fromkeys((s.name for s in sites), 0.0), params, r_min, r_max, allocator)
    scored = model
    if score_warmup and batches is not None:
        batches = list(batches)  # drawn once: the warm-up cycles them, the scores read them
        rank = warmup_rank(budget)
        scored = warmed_copy(model, batches, score_warmup, rank, targets, seed, progress)
    result: SiteScores = score_sites(scored, batches, score, normalise, seed, progress, total)
    scores = reduce(result.scores) if reduce is not None else result.scores
    scores = {s.name: scores[s.name] for s in sites}  # the targets' sites only
    _check_informative(scores, score)
    ranks = allocate(sites, scores, params, r_min, r_max, allocator, seed)
    cost = {s.name: s.cost_per_rank for s in sites}
    used = sum(r * cost[n] for n, r in ranks.items())
    warnings = []
    if result.rho is not None and result.rho < RHO_WARN:
        warnings.append(
            f"site scores are unstable across batches (Spearman rho {result.rho:.2f} between "
            f"even and odd batches, below {RHO_WARN}); score more batches"
        )
    full = {
        "score": score,
        "normalise": normalise,
        "allocator": allocator,
        "r_min": r_min,
        "r_max": r_max,
        "targets": targets,
        "seed": seed,
        "batches": len(result.per_batch),
        "score_warmup": score_warmup,
        **(settings or {}),
    }
    return RankAllocation(
        ranks=ranks,
        scores=dict(scores),
        budget=params,
        budget_spec=f"{budget} ({how})" if isinstance(budget, str) else f"{params} (parameters)",
        used=used,
        base_params=base_parameter_count(model),
        sites=[SiteInfo.of(s) for s in sites],
        rho=result.rho,
        settings=full,
        warnings=warnings,
        targets=targets,
    )


# ---------------------------------------------------------------------------------------------
# data for scoring


def image_batches(
    data: str | os.PathLike | list[str | os.PathLike] | None,
    scale: int,
    count: int = DEFAULT_BATCHES,
    batch: int = DEFAULT_BATCH,
    patch: int = DEFAULT_PATCH,
    degradation: str = DEFAULT_DEGRADATION,
    seed: int = 0,
    device: str | torch.device = "cpu",
    lr_multiple: int = 1,
    lr_min: int = 0,
    lr_dir: str | os.PathLike | None = None,
    hr_dir: str | os.PathLike | None = None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """`count` (LR, HR) batches of `patch` x `patch` HR crops, drawn as training draws them.

    The data layouts of `adapt train` (adaptsr.adapt.layouts): HR-only folders (LR made on the
    fly by `degradation`), DIV2K- or RealSR-style folders of pairs, or `lr_dir` + `hr_dir`.
    Folders are checked now; images are read as batches are drawn.
    """
    _check_crops(scale, count, batch, patch, degradation, lr_multiple, lr_min)  # before a scan
    folders = [data] if isinstance(data, (str, os.PathLike)) else data
    found = scan(folders, scale, patch, lr_dir, hr_dir)
    if found.mixed:
        raise UserError(
            "scores are computed on one kind of data: give HR-only folders or LR/HR pairs, "
            "not both (nor a degradation per folder)"
        )
    return entry_batches(
        found.entries,
        found.paired,
        scale,
        count,
        batch,
        patch,
        degradation,
        seed,
        device,
        lr_multiple=lr_multiple,
        lr_min=lr_min,
    )


def entry_batches(
    entries: list,
    paired: bool,
    scale: int,
    count: int,
    batch: int,
    patch: int,
    degradation: str,
    seed: int,
    device: str | torch.device,
    lr_multiple: int = 1,
    lr_min: int = 0,
    flips: bool = True,
    dist=None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The batches of image_batches from scanned entries (adaptsr.adapt.data.Entry): `adapt
    train --rank-aware` scores its training images (validation images held out) this way.
    Images smaller than `patch` are skipped, as the scan of image_batches skips them.

    `dist` (an object with rank and world): this process's slice of each batch. Rank 0 draws
    what a single process draws; the other ranks degrade with streams of their own.
    """
    _check_crops(scale, count, batch, patch, degradation, lr_multiple, lr_min)
    entries = [e for e in entries if min(e.hr_size) >= patch]  # as scan skips them
    if not entries:
        raise UserError(f"no image is large enough for {patch}x{patch} scoring crops")
    dataset = CropDataset(entries, patch, scale, flips)
    plan = BatchPlan(len(entries), batch, seed, 0, count, dist)
    degrade = None
    if not paired:
        rank = dist.rank if dist is not None else 0
        if rank:
            seed = derive_seed(seed, rank)
        degrade = make_degrader(degradation, scale, seed, device)
    return degraded_batches(dataset, plan, degrade, device)


def _check_crops(scale, count, batch, patch, degradation, lr_multiple, lr_min) -> None:
    for name, v in (("batches", count), ("batch", batch), ("patch", patch)):
        if v < 1:
            raise UserError(f"{name} must be at least 1, got {v}")
    if patch % scale:
        raise UserError(f"patch {patch} is not a multiple of the model's scale {scale}")
    lr_patch = patch // scale
    if lr_patch % lr_multiple or lr_patch < lr_min:
        raise UserError(
            f"LR patches of {lr_patch} pixels do not suit this model (it needs a multiple of "
            f"{lr_multiple}, at least {lr_min}); choose another patch size"
        )
    settings_of(degradation)  # a preset name, a degradation file or a run's recorded table


# ---------------------------------------------------------------------------------------------
# `adapt allocate`


@dataclass(frozen=True)
class AllocationJob:
    """What `adapt allocate` is asked: a base model, its adaptation data (a folder, or paired
    LR and HR folders; none for random scores) and where the rank map goes."""

    model: str
    out: str
    settings: AllocationSettings = field(default_factory=AllocationSettings)
    data: str | None = None
    lr_dir: str | None = None
    hr_dir: str | None = None
    degradation: str = DEFAULT_DEGRADATION
    seed: int = 0
    device: str | None = None  # None: cuda if present
    force: bool = False
    targets: str = ALL_TARGETS  # site families to allocate over (adaptsr.adapt.sites)
    allow_random_base: bool = False  # a configuration with random weights as the base

    def check(self) -> bool:
        """Every check that needs no model, before one is loaded; True when the base has
        random weights (allowed)."""
        random_base = check_base_weights(self.model, self.allow_random_base)
        if not self.out.lower().endswith(".json"):
            raise UserError(f"{self.out}: the rank map is a .json file")
        inputs = [self.model, self.data, self.lr_dir, self.hr_dir]
        outputs = {"--out": self.out, "the heatmap": heatmap_path(self.out)}
        check_outputs_not_inputs(outputs, inputs)
        # an image among the images would be read as data by the next run
        check_outside_inputs(outputs["the heatmap"], inputs, "the heatmap")
        for path in outputs.values():
            check_writable(path, self.force)
        score = self.settings.score
        if self.data is None and self.lr_dir is None and self.hr_dir is None and score != "random":
            raise UserError(
                f"--data (or --lr-dir and --hr-dir) is needed for {score} scores "
                "(only random scores need no data)"
            )
        self.settings.checked()
        if not self.settings.budget:
            raise UserError("no budget: give --budget (e.g. 886k, 8%, or r8)")
        return random_base


@dataclass(frozen=True)
class AllocationOutput:
    allocation: RankAllocation
    rank_map: Path
    heatmap: Path


def run_allocation(job: AllocationJob, progress: bool = True) -> AllocationOutput:
    """Score the sites of job.model on its data, share the budget, write the rank map (.json)
    and its heatmap (.png beside it)."""
    random_base = job.check()
    s = job.settings
    device = torch.device(pick_device(job.device))
    model = load_model(job.model, device=device)
    info = model_info(model)
    pairs = None
    if s.score != "random":
        pairs = image_batches(
            job.data,
            info.scale,
            s.score_batches,
            s.score_batch,
            s.score_patch,
            job.degradation,
            job.seed,
            device,
            lr_multiple=max(1, info.multiple_of),
            lr_min=info.min_size,
            lr_dir=job.lr_dir,
            hr_dir=job.hr_dir,
        )
    data = job.data if job.data is not None else {"lr_dir": job.lr_dir, "hr_dir": job.hr_dir}
    recorded = {
        "model": job.model,
        "data": data,
        "degradation": recorded_degradation(job.degradation),
        "batches": s.score_batches if pairs is not None else 0,
        "batch": s.score_batch,
        "patch": s.score_patch,
        "random_base": random_base,
    }
    result = allocate_ranks(
        model,
        pairs,
        s.budget,
        score=s.score,
        allocator=s.allocator,
        r_min=s.r_min,
        r_max=s.r_max,
        normalise=s.normalise,
        targets=job.targets,
        seed=job.seed,
        progress=progress,
        total=s.score_batches,
        settings=recorded,
        score_warmup=s.score_warmup,
    )
    json_path, png_path = write_rank_map(result, job.out, force=job.force)
    return AllocationOutput(result, json_path, png_path)
