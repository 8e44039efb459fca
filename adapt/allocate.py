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
"""

from __future__ import annotations

import heapq
import json
import math
import os
import random
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from adaptsr.adapt.choices import (
    ALLOCATORS,
    DEFAULT_BATCH,
    DEFAULT_BATCHES,
    DEFAULT_PATCH,
    DEFAULT_R_MAX,
    DEFAULT_R_MIN,
    DEGRADATIONS,
    NORMALISATIONS,
    SCORES,
)
from adaptsr.adapt.lora import LoRALayer, Site, base_parameter_count, lora_sites, resolve_ranks
from adaptsr.errors import UserError

RHO_WARN = 0.5  # below this the ranking of the sites changes a lot from batch to batch
RANK_MAP_FORMAT = "adaptsr-rank-map-1"
COLUMNS = ("conv", "q", "k", "v", "o", "fc1", "fc2", "mlp", "linear")


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
    was_training = model.training
    saved = [(p, p.requires_grad) for p in model.parameters()]
    try:
        model.eval()  # the frozen base as it will be trained: no dropout or stochastic depth
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
        model.train(was_training)
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


_BUDGET = re.compile(r"^(?:r(\d+)|(\d+(?:\.\d*)?|\.\d+)\s*([kKmM%]?))$")


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


@dataclass
class RankAllocation:
    """An allocation with what produced it; `to_dict()` is the rank map file's content."""

    ranks: dict[str, int]  # every site; 0 = no adapter
    scores: dict[str, float]
    budget: int
    budget_spec: str
    used: int
    base_params: int
    sites: list[Site]
    rho: float | None
    settings: dict
    warnings: list[str] = field(default_factory=list)

    @property
    def adapted(self) -> dict[str, int]:
        """The rank map to inject: sites with rank > 0."""
        return {k: v for k, v in self.ranks.items() if v > 0}

    def to_dict(self) -> dict:
        return {
            "format": RANK_MAP_FORMAT,
            "ranks": dict(self.ranks),
            "scores": dict(self.scores),
            "budget": {"params": self.budget, "spec": self.budget_spec},
            "used_params": self.used,
            "budget_used_percent": round(100.0 * self.used / self.budget, 4),
            "base_params": self.base_params,
            "spearman_rho": self.rho,
            "settings": dict(self.settings),
            "sites": {
                s.name: {
                    "kind": s.kind,
                    "module": s.module,
                    "cost_per_rank": s.cost_per_rank,
                    "max_rank": s.max_rank,
                }
                for s in self.sites
            },
        }


def allocate_ranks(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]] | None,
    budget: int | str,
    *,
    score: str = "grad",
    allocator: str = "paper",
    r_min: int = DEFAULT_R_MIN,
    r_max: int = DEFAULT_R_MAX,
    normalise: str = "none",
    seed: int = 0,
    progress: bool = False,
    total: int | None = None,
    settings: dict | None = None,
) -> RankAllocation:
    """Score the sites of a base model on `batches` and share `budget` among them.

    `budget`: parameters (int) or a spec for parse_budget ("886k", "8%", "r8"). The model is
    left as it was. Problems worth a user's attention (unstable scores) are in `.warnings`.
    """
    params, how = parse_budget(budget, model)
    sites = lora_sites(model)
    # Check the budget and bounds before spending time on gradients.
    allocate(sites, dict.fromkeys((s.name for s in sites), 0.0), params, r_min, r_max, allocator)
    result = score_sites(model, batches, score, normalise, seed, progress, total)
    ranks = allocate(sites, result.scores, params, r_min, r_max, allocator, seed)
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
        scores=result.scores,
        budget=params,
        budget_spec=f"{budget} ({how})" if isinstance(budget, str) else f"{params} (parameters)",
        used=used,
        base_params=base_parameter_count(model),
        sites=sites,
        rho=result.rho,
        settings=full,
        warnings=warnings,
    )


# ---------------------------------------------------------------------------------------------
# files


def heatmap_path(path: str | os.PathLike) -> Path:
    """The heatmap PNG beside a rank map: same folder, same stem."""
    return Path(path).with_suffix(".png")


def write_rank_map(
    allocation: RankAllocation,
    path: str | os.PathLike,
    force: bool = False,
    heatmap: bool = True,
    title: str | None = None,
) -> tuple[Path, Path | None]:
    """Write the rank map JSON and (by default) its heatmap PNG; returns both paths."""
    from adaptsr.fileio import atomic_output, check_writable

    path = Path(path)
    if path.suffix.lower() != ".json":
        raise UserError(f"{path}: a rank map is a .json file")
    png = heatmap_path(path) if heatmap else None
    check_writable(path, force)
    if png is not None:
        check_writable(png, force)
    with atomic_output(path, force) as tmp:
        tmp.write_text(json.dumps(allocation.to_dict(), indent=2) + "\n")
    if png is not None:
        save_heatmap(allocation, png, force, title)
    return path, png


def read_rank_map(path: str | os.PathLike) -> dict[str, int]:
    """The {site: rank} map of a rank map JSON (as written by write_rank_map, or by hand)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"no such rank map: {path}")
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"cannot read rank map {path}: {e}") from e
    ranks = data.get("ranks") if isinstance(data, dict) else None
    if not isinstance(ranks, dict) or not ranks:
        raise UserError(f"{path} has no rank map under the key 'ranks'")
    for site, r in ranks.items():
        if isinstance(r, bool) or not isinstance(r, int) or r < 0:
            raise UserError(f"{path}: rank of {site} must be a whole number >= 0, got {r!r}")
    return ranks


# ---------------------------------------------------------------------------------------------
# heatmap and summary


def site_column(site: Site) -> str:
    """The heatmap column (module kind) of a site: conv, q, k, v, o, fc1, fc2, mlp or linear."""
    if site.kind == "conv":
        return "conv"
    if site.kind.startswith("attn-"):
        return site.kind[len("attn-") :]
    leaf = site.module.rsplit(".", 1)[-1]
    if site.kind == "mlp":
        return leaf if leaf in ("fc1", "fc2") else "mlp"
    return "linear"


def site_row(site: Site) -> str:
    """The heatmap row (block) of a site: its module path up to the last block index before the
    layer itself (`layers.0.residual_group.blocks.3.attn.qkv` -> `...blocks.3`); a layer
    outside any numbered block is a row of its own."""
    parts = site.module.split(".")
    for i in range(len(parts) - 1, 0, -1):
        if parts[i - 1].isdigit():
            return ".".join(parts[:i])
    return site.module


def rank_grid(sites: list[Site], ranks: dict[str, int]):
    """(row labels, column labels, {(row, column): (site, rank)}) in model order.

    A row with several sites of one kind (the convs of a residual block) gets columns
    `conv`, `conv#2`, ...
    """
    rows: list[str] = []
    cells: dict[tuple[str, str], tuple[str, int]] = {}
    for s in sites:
        row, base = site_row(s), site_column(s)
        if row not in rows:
            rows.append(row)
        col, n = base, 1
        while (row, col) in cells:
            n += 1
            col = f"{base}#{n}"
        cells[(row, col)] = (s.name, ranks.get(s.name, 0))
    used = {c for _, c in cells}

    def key(col):
        base, _, n = col.partition("#")
        return (COLUMNS.index(base), int(n or 1))

    return rows, sorted(used, key=key), cells


def save_heatmap(
    allocation: RankAllocation, path: str | os.PathLike, force: bool = False, title=None
) -> Path:
    """Ranks as a blocks x module-kinds heatmap PNG (the paper's Figure 5 layout)."""
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from adaptsr.fileio import atomic_output

    rows, cols, cells = rank_grid(allocation.sites, allocation.ranks)
    grid = np.full((len(rows), len(cols)), np.nan)
    for (row, col), (_, rank) in cells.items():
        grid[rows.index(row), cols.index(col)] = rank
    fig = Figure(figsize=(1.6 + 0.55 * len(cols), 1.6 + 0.22 * len(rows)), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.set_facecolor("#e8e8e8")  # cells without a site
    top = max(1, int(np.nanmax(grid)))
    image = ax.imshow(np.ma.masked_invalid(grid), cmap="viridis", vmin=0, vmax=top, aspect="auto")
    if grid.size <= 800:
        for (row, col), (_, rank) in cells.items():
            i, j = rows.index(row), cols.index(col)
            dark = rank < 0.6 * top
            ax.text(
                j,
                i,
                str(rank),
                ha="center",
                va="center",
                fontsize=6,
                color="white" if dark else "black",
            )
    ax.set_xticks(range(len(cols)), cols, fontsize=8)
    ax.set_yticks(range(len(rows)), rows, fontsize=6)
    ax.set_xlabel("module kind")
    ax.set_ylabel("block")
    fig.colorbar(image, ax=ax, label="LoRA rank", fraction=0.05)
    s = allocation.settings
    ax.set_title(
        title
        or f"{s.get('model', 'model')}: {s['allocator']} allocation, {s['score']} scores\n"
        f"{allocation.used:,} of {allocation.budget:,} parameters",
        fontsize=8,
    )
    fig.tight_layout()
    with atomic_output(path, force) as tmp:
        fig.savefig(tmp, format="png")
    return Path(path)


def summary_table(allocation: RankAllocation) -> str:
    """A per-kind summary of an allocation, for the terminal."""
    groups: dict[str, list[tuple[Site, int]]] = {}
    for s in allocation.sites:
        groups.setdefault(site_column(s), []).append((s, allocation.ranks[s.name]))
    lines = [f"{'kind':<7}{'sites':>6}{'adapted':>9}{'min':>5}{'mean':>7}{'max':>5}{'params':>12}"]
    for kind in COLUMNS:
        if kind not in groups:
            continue
        items = groups[kind]
        rs = [r for _, r in items]
        params = sum(r * s.cost_per_rank for s, r in items)
        lines.append(
            f"{kind:<7}{len(items):>6}{sum(r > 0 for r in rs):>9}{min(rs):>5}"
            f"{sum(rs) / len(rs):>7.1f}{max(rs):>5}{params:>12,}"
        )
    a = allocation
    lines.append(
        f"total: {a.used:,} of a {a.budget:,}-parameter budget ({100 * a.used / a.budget:.2f}%), "
        f"{100 * a.used / a.base_params:.2f}% of the base model's {a.base_params:,}"
    )
    if a.rho is not None:
        lines.append(f"score stability: Spearman rho {a.rho:.3f} (even vs odd batches)")
    top = sorted(a.sites, key=lambda s: -a.scores[s.name])[:5]
    lines.append("top sites: " + ", ".join(f"{s.name} (r={a.ranks[s.name]})" for s in top))
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# data for scoring


def image_batches(
    data: str | os.PathLike | None,
    scale: int,
    count: int = DEFAULT_BATCHES,
    batch: int = DEFAULT_BATCH,
    patch: int = DEFAULT_PATCH,
    degradation: str = "realesrgan",
    seed: int = 0,
    device: str | torch.device = "cpu",
    lr_multiple: int = 1,
    lr_min: int = 0,
    lr_dir: str | os.PathLike | None = None,
    hr_dir: str | os.PathLike | None = None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """`count` (LR, HR) batches of `patch` x `patch` HR crops, drawn as training draws them.

    The data layouts of `adapt train` (adaptsr.adapt.data): an HR-only folder (LR made on the
    fly by `degradation`), a DIV2K- or RealSR-style folder of pairs, or `lr_dir` + `hr_dir`.
    Folders are checked now; images are read as batches are drawn.
    """
    from adaptsr.adapt.data import BatchPlan, CropDataset, degraded_batches, make_degrader, scan

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
    found = scan([data] if data is not None else None, scale, patch, lr_dir, hr_dir)
    dataset = CropDataset(found.entries, patch, scale)
    plan = BatchPlan(len(found.entries), batch, seed, 0, count)
    degrade = None if found.paired else make_degrader(degradation, scale, seed, device)
    return degraded_batches(dataset, plan, degrade, device)
