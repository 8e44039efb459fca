"""An exponential moving average of the trained weights (`--ema 0.999`): after every optimizer
step, shadow = decay * shadow + (1 - decay) * weight. Validation and the saved adapter use the
average; the optimizer keeps training the live weights. Its state is in checkpoint.pt."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch
from torch import nn

from adaptsr.core.errors import UserError


class WeightEMA:
    def __init__(self, params: Sequence[nn.Parameter], decay: float):
        self.params = list(params)
        self.decay = float(decay)
        self.shadow = [p.detach().clone() for p in self.params]

    @torch.no_grad()
    def update(self) -> None:
        for s, p in zip(self.shadow, self.params, strict=True):
            s.lerp_(p.detach(), 1.0 - self.decay)

    @contextlib.contextmanager
    def swapped(self) -> Iterator[None]:
        """The averaged weights in the model for the block, the live ones again after it.
        Not inside a step: an autograd graph would see its weights change."""
        live = [p.detach().clone() for p in self.params]
        with torch.no_grad():
            for p, s in zip(self.params, self.shadow, strict=True):
                p.copy_(s)
        try:
            yield
        finally:
            with torch.no_grad():
                for p, w in zip(self.params, live, strict=True):
                    p.copy_(w)

    def state_dict(self) -> dict:
        return {"decay": self.decay, "shadow": [s.detach().cpu().clone() for s in self.shadow]}

    def load_state_dict(self, state: dict) -> None:
        shadow = state["shadow"]
        if len(shadow) != len(self.params) or any(
            s.shape != p.shape for s, p in zip(shadow, self.params, strict=True)
        ):
            raise UserError("the checkpoint's weight average does not match this run's weights")
        with torch.no_grad():
            for s, saved in zip(self.shadow, shadow, strict=True):
                s.copy_(saved)
