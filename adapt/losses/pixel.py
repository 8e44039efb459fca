"""The pixel term `l1`: mean absolute error against the ground truth."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def l1_loss(sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
    return F.l1_loss(sr, hr)
