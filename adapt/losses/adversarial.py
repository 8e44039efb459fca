"""The `gan` term: the vanilla (binary cross-entropy) adversarial losses of Real-ESRGAN, on
the discriminator's per-pixel logits."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _bce(logits: torch.Tensor, real: bool) -> torch.Tensor:
    target = torch.ones_like(logits) if real else torch.zeros_like(logits)
    return F.binary_cross_entropy_with_logits(logits, target)


def generator_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """The generator wants its output judged real."""
    return _bce(fake_logits, True)


def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """HR judged real, the (detached) SR judged fake."""
    return _bce(real_logits, True) + _bce(fake_logits, False)
