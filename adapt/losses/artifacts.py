"""The `ldl` term: the artifact map loss of locally discriminative learning (Liang et al.,
CVPR 2022).

The residual |HR - SR| (summed over channels) is large and erratic where a GAN paints
artifacts, and large but smooth over true texture. Its local variance (7x7 windows) marks the
artifacts; the variance over the whole image to the power 1/5 scales the map per image. Pixels
where the current model is already closer to the ground truth than the EMA model's output keep
weight 0 (the reference says where the model is getting worse). The loss is L1 between the map
times SR and the map times HR, the map carrying no gradient.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

WINDOW = 7
GLOBAL_POWER = 1 / 5


def local_variance(x: torch.Tensor, window: int = WINDOW) -> torch.Tensor:
    """Variance over each window x window neighbourhood (unbiased, as torch.var), same size."""
    pad = window // 2
    patches = F.unfold(F.pad(x, (pad, pad, pad, pad), mode="reflect"), window)
    n, _, length = patches.shape
    return patches.var(dim=1, keepdim=True).view(n, 1, *x.shape[-2:])


def artifact_map(sr: torch.Tensor, hr: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """The refined artifact map M (n, 1, h, w), without gradient."""
    with torch.no_grad():
        residual = (hr - sr).abs().sum(dim=1, keepdim=True)
        residual_ref = (hr - reference).abs().sum(dim=1, keepdim=True)
        per_image = residual.flatten(1).var(dim=1).pow(GLOBAL_POWER).view(-1, 1, 1, 1)
        weight = per_image * local_variance(residual)
        return torch.where(residual < residual_ref, torch.zeros_like(weight), weight)


def ldl_loss(sr: torch.Tensor, hr: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    m = artifact_map(sr, hr, reference)
    return F.l1_loss(m * sr, m * hr)
