"""The score warm-up of a rank-aware allocation (`--score-warmup N`): a copy of the base model
after N Adam steps of a uniform LoRA, merged, for the site scores to be taken on.

The paper scores the sites at initialisation, where every adapter is zero; a short uniform
warm-up measures the gradients where training actually goes. The base model is never modified
and training still starts from it: the warm-up only informs the scores.
"""

from __future__ import annotations

import copy
import re

import torch
import torch.nn.functional as F
from torch import nn

from adaptsr.adapt.lora import adapter_parameters, adapter_train_mode, inject_lora, merge_lora
from adaptsr.core.errors import UserError
from adaptsr.core.progress import progress_bar

WARMUP_LR = 1e-3  # the paper's LoRA learning rate
WARMUP_RANK = 8  # when the budget is no uniform rank (a parameter count or a share)


def warmup_rank(budget: int | str) -> int:
    """The uniform rank of the warm-up: K for a budget "rK", else WARMUP_RANK."""
    m = re.fullmatch(r"r(\d+)", str(budget).strip())
    return int(m.group(1)) if m else WARMUP_RANK


def warmed_copy(
    model: nn.Module,
    batches: list[tuple[torch.Tensor, torch.Tensor]],
    steps: int,
    rank: int,
    targets: str,
    seed: int = 0,
    progress: bool = False,
) -> nn.Module:
    """A copy of `model` after `steps` Adam steps (L1 loss, learning rate WARMUP_LR) of a
    uniform rank-`rank` LoRA (alpha 1, alpha/r) on the `targets` sites, cycling through
    `batches`, with the adapters merged. `model` is left as it was; the adapters' initial
    values come from `seed`, and the caller's random streams are left where they were."""
    if not batches:
        raise UserError("no batches to score: the data gave no (LR, HR) pair")
    warm = copy.deepcopy(model)
    device = next(warm.parameters()).device
    cuda = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        torch.manual_seed(seed)
        inject_lora(warm, rank, targets=targets)
    adapter_train_mode(warm)
    optimizer = torch.optim.Adam(adapter_parameters(warm), lr=WARMUP_LR)
    bar = progress_bar(total=steps, desc="score warm-up", unit="step", enabled=progress)
    for step in range(steps):
        lr, hr = batches[step % len(batches)]
        out = warm(lr)
        if out.shape != hr.shape:
            raise UserError(
                f"model output {tuple(out.shape)} does not match the HR batch {tuple(hr.shape)}"
            )
        loss = F.l1_loss(out, hr)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        bar.update(1)
    bar.close()
    return merge_lora(warm)
