"""Site scores: how much each LoRA site of a frozen base model matters to the adaptation loss
(L1 between SR(LR) and HR), one value per site, averaged over mini-batches; step 1 of the
rank-aware allocation (adapt/allocate.py shares a budget by these scores).

- grad: ||dL/dW||_F (the paper's importance; a split qkv projection is scored per Q/K/V row
  block of the fused weight);
- fisher: mean over batches of ||dL/dW||_F^2 (the diagonal empirical Fisher, summed over the
  site's weights, with mini-batch gradients);
- activation: the norm of the site's input activations per image, ||X||_F / sqrt(images);
- random: uniform in [0, 1), seeded (the ablation's control).

With `normalise="size"` each score becomes a per-element value (RMS gradient, mean Fisher, RMS
activation), so large layers are not favoured for their size alone. The Spearman correlation
between the scores of the even and the odd batches says how stable the ranking is (the paper
reports 0.91).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from adaptsr.adapt.choices import NORMALISATIONS, SCORES
from adaptsr.adapt.lora import LoRALayer, Site, adapter_train_mode, lora_sites
from adaptsr.core.errors import UserError
from adaptsr.core.progress import progress_bar

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

    bar = progress_bar(total=total, desc=f"{method} scores", unit="batch", enabled=progress)
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
