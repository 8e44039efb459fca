# ~550 lines: scores, budgets and the two allocators are one algorithm (the paper's Algorithm 1)
# with its inputs; the file schema and pictures are in adapt/rankmap.py.
"""Rank-aware allocation: score every LoRA site, then share a parameter budget among them.

1. Scores, on the frozen base model with the adaptation loss (L1 between SR(LR) and HR), one
   value per site, averaged over K mini-batches:
   - grad: ||dL/dW||_F (the paper's importance; a split qkv projection is scored per Q/K/V row
     block of the fused weight);
   - fisher: mean over batches of ||dL/dW||_F^2 (the diagonal empirical Fisher, summed over the
     site's weights, with mini-batch gradients);
   - activation: the norm of the site's input activations per image, ||X||_F / sqrt(images);
   - random: uniform in [0, 1), seeded (the ablation's control).
   With `normalise="size"` each score becomes a per-element value (RMS gradient, mean Fisher,
   RMS activation), so large layers are not favoured for their size alone.
   The Spearman correlation between the scores of the even and the odd batches says how stable
   the ranking is (the paper reports 0.91).
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
   heatmap and summary).
"""

from __future__ import annotations

import heapq
import math
import os
import random
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from decimal import Decimal

import torch
import torch.nn.functional as F
from torch import nn

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
    DEGRADATIONS,
    NORMALISATIONS,
    SCORES,
)
from adaptsr.adapt.lora import (
    LoRALayer,
    Site,
    adapter_train_mode,
    base_parameter_count,
    lora_sites,
    resolve_ranks,
)
from adaptsr.adapt.rankmap import RankAllocation, SiteInfo
from adaptsr.core.errors import UserError

RHO_WARN = 0.5  # below this the ranking of the sites changes a lot from batch to batch


# ---------------------------------------------------------------------------------------------
# scoring


@dataclass
class SiteScores:
    scores: dict[str, float]  # site -> score (mean over batches)
    per_batch: list[dict[str, float]]  # one dict per batch (empty for random scores)
    rho: float | None  # Spearman correlation, even vs odd batches (None: not computable)


def _site_layers(model: nn.Module, sites: list[Site]) -> dict[str, nn.Module]:
    layers = {}
    for s in sites:
        layer = model.get_submodule(s.module)
        if isinstance(layer, LoRALayer):
            raise UserError("scores are computed on the base model: allocate before inject_lora")
        layers[s.module] = layer
    return layers


def _row_block(t: torch.Tensor, site: Site) -> torch.Tensor:
    """The part of a weight-shaped tensor that belongs to `site` (a q/k/v row block)."""
    if site.block is None:
        return t
    return t[site.block * site.d_out : (site.block + 1) * site.d_out]


def _check_batch(out: torch.Tensor, hr: torch.Tensor) -> None:
    if out.shape != hr.shape:
        raise UserError(
            f"model output {tuple(out.shape)} does not match the HR batch {tuple(hr.shape)} "
            "(wrong scale, or LR and HR patches that do not correspond)"
        )


def _gradient_rows(model, sites, batches, fisher: bool, normalise: bool, bar):
    layers = _site_layers(model, sites)
    names = list(layers)
    weights = [layers[n].weight for n in names]
    param = weights[0]
    for lr, hr in batches:
        lr = lr.to(param.device, param.dtype)
        hr = hr.to(param.device, param.dtype)
        out = model(lr)
        _check_batch(out, hr)
        loss = F.l1_loss(out, hr)
        grads = torch.autograd.grad(loss, weights, allow_unused=True)
        by_module = dict(zip(names, grads, strict=True))
        row = {}
        for s in sites:
            g = by_module[s.module]
            sq = 0.0 if g is None else float(_row_block(g, s).double().pow(2).sum())
            value = sq if fisher else math.sqrt(sq)
            if normalise:
                value /= s.base_params if fisher else math.sqrt(s.base_params)
            row[s.name] = value
        bar.update(1)
        yield row


def _activation_rows(model, sites, batches, normalise: bool, bar):
    layers = _site_layers(model, sites)
    param = next(iter(layers.values())).weight
    acc: dict[str, list[float]] = {}  # module -> [sum of squares, number of elements]

    def hook(name):
        def record(_module, inputs, _output):
            x = inputs[0].detach()
            acc[name][0] += float(x.double().pow(2).sum())
            acc[name][1] += x.numel()

        return record

    handles = [layer.register_forward_hook(hook(name)) for name, layer in layers.items()]
    try:
        for lr, hr in batches:
            lr = lr.to(param.device, param.dtype)
            acc.clear()
            acc.update({name: [0.0, 0] for name in layers})
            with torch.no_grad():
                _check_batch(model(lr), hr.to(param.device))
            row = {}
            for s in sites:
                sq, n = acc[s.module]
                # per element (RMS) or per image: independent of batch size and of how a
                # transformer folds images into windows.
                row[s.name] = math.sqrt(sq / n) if normalise and n else math.sqrt(sq / len(lr))
            bar.update(1)
            yield row
    finally:
        for h in handles:
            h.remove()


def spearman(a: list[float], b: list[float]) -> float | None:
    """Spearman rank correlation (ties get their average rank); None if a side is constant."""

    def ranks(v):
        order = sorted(range(len(v)), key=lambda i: v[i])
        r = [0.0] * len(v)
        i = 0
        while i < len(order):
            j = i
            while j + 1 < len(order) and v[order[j + 1]] == v[order[i]]:
                j += 1
            for k in range(i, j + 1):
                r[order[k]] = (i + j) / 2
            i = j + 1
        return r

    if len(a) != len(b) or len(a) < 2:
        return None
    ra, rb = ranks(a), ranks(b)
    ma, mb = sum(ra) / len(ra), sum(rb) / len(rb)
    cov = sum((x - ma) * (y - mb) for x, y in zip(ra, rb, strict=True))
    va = sum((x - ma) ** 2 for x in ra)
    vb = sum((y - mb) ** 2 for y in rb)
    if va == 0 or vb == 0:
        return None
    return cov / math.sqrt(va * vb)


def score_sites(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]] | None,
    method: str = "grad",
    normalise: str = "none",
    seed: int = 0,
    progress: bool = False,
    total: int | None = None,
) -> SiteScores:
    """Score every site of `model` (not modified: weights, requires_grad and mode are restored).

    `batches`: (LR, HR) pairs of (B, 3, h, w) / (B, 3, h*scale, w*scale) tensors in [0, 1];
    not read for `method="random"`.
    """
    if method not in SCORES:
        raise UserError(f"unknown score {method!r}; choose one of {', '.join(SCORES)}")
    if normalise not in NORMALISATIONS:
        choices = " or ".join(NORMALISATIONS)
        raise UserError(f"unknown normalisation {normalise!r}; choose {choices}")
    sites = lora_sites(model)
    if not sites:
        raise UserError("this model has no conv or linear layer that LoRA can adapt")
    if method == "random":
        g = torch.Generator().manual_seed(seed)
        values = torch.rand(len(sites), generator=g, dtype=torch.float64).tolist()
        return SiteScores(dict(zip((s.name for s in sites), values, strict=True)), [], None)
    if batches is None:
        raise UserError(f"{method} scores need data (LR, HR batches)")

    from tqdm import tqdm

    bar = tqdm(total=total, desc=f"{method} scores", unit="batch", disable=not progress)
    modes = [(m, m.training) for m in model.modules()]
    saved = [(p, p.requires_grad) for p in model.parameters()]
    try:
        # the mode the adapters will train in: re-parameterised blocks (SPAN) run the branches
        # that carry the sites; frozen statistics, no dropout or drop-path
        adapter_train_mode(model)
        if method == "activation":
            rows = list(_activation_rows(model, sites, batches, normalise == "size", bar))
        else:
            model.requires_grad_(False)
            for layer in _site_layers(model, sites).values():
                layer.weight.requires_grad_(True)
            fisher = method == "fisher"
            rows = list(_gradient_rows(model, sites, batches, fisher, normalise == "size", bar))
    finally:
        bar.close()
        for p, flag in saved:
            p.requires_grad_(flag)
        for m, training in modes:
            m.train(training)
    if not rows:
        raise UserError("no batches to score: the data gave no (LR, HR) pair")
    names = [s.name for s in sites]
    mean = {n: sum(r[n] for r in rows) / len(rows) for n in names}
    rho = None
    if len(rows) >= 2:
        even, odd = rows[0::2], rows[1::2]
        rho = spearman(
            [sum(r[n] for r in even) / len(even) for n in names],
            [sum(r[n] for r in odd) / len(odd) for n in names],
        )
    return SiteScores(mean, rows, rho)


# ---------------------------------------------------------------------------------------------
# budget


# Digits are bounded: a rank past 10^6 or a count past 10^15 parameters is a typo, and longer
# numbers would overflow the float arithmetic of the allocators.
_BUDGET = re.compile(r"^(?:r(\d{1,6})|(\d{1,15}(?:\.\d{0,9})?|\.\d{1,9})\s*([kKmM%]?))$")


def parse_budget(spec: str | int, model: nn.Module) -> tuple[int, str]:
    """A budget in trainable parameters, and how it was given.

    `886000`, `886k`, `1.2M` (parameters), `8%` (of the base model's parameters) or `r8` (what
    uniform rank 8 costs, capped at each site's useful rank as inject_lora does). Fractions
    round down: the budget is a ceiling.
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
        chosen, _ = resolve_ranks(model, r)
        costs = {s.name: s.cost_per_rank for s in lora_sites(model)}
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
    seed: int = 0,
    progress: bool = False,
    total: int | None = None,
    settings: dict | None = None,
    reduce: Callable[[dict[str, float]], dict[str, float]] | None = None,
) -> RankAllocation:
    """Score the sites of a base model on `batches` and share `budget` among them.

    `budget`: parameters (int) or a spec for parse_budget ("886k", "8%", "r8"). The model is
    left as it was. Problems worth a user's attention (unstable scores) are in `.warnings`.
    `reduce` maps the mean scores to the ones allocated: `adapt train` averages them over its
    DDP processes so that every process allocates the same ranks (rho stays this process's).
    """
    params, how = parse_budget(budget, model)
    sites = lora_sites(model)
    # Check the budget and bounds before spending time on gradients.
    allocate(sites, dict.fromkeys((s.name for s in sites), 0.0), params, r_min, r_max, allocator)
    result = score_sites(model, batches, score, normalise, seed, progress, total)
    scores = reduce(result.scores) if reduce is not None else result.scores
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
        "seed": seed,
        "batches": len(result.per_batch),
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
    from adaptsr.adapt.data import scan

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
    from adaptsr.adapt.data import (
        BatchPlan,
        CropDataset,
        degraded_batches,
        derive_seed,
        make_degrader,
    )

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
    if degradation not in DEGRADATIONS:
        raise UserError(f"unknown degradation {degradation!r}; choose {' or '.join(DEGRADATIONS)}")
