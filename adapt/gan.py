"""Adversarial training beside the step loop: the U-Net discriminator (trained fully, with its
own Adam) judges the generator's output; the generator side keeps training only what the run
trains (the adapters in --mode lora). Its weights and optimizer state are in checkpoint.pt."""

from __future__ import annotations

import torch
from torch import nn

from adaptsr.adapt.losses.adversarial import discriminator_loss, generator_loss
from adaptsr.adapt.losses.discriminator import UNetDiscriminatorSN

# Real-ESRGAN's discriminator settings: lr 1e-4, Adam betas (0.9, 0.99), constant
LR = 1e-4
BETAS = (0.9, 0.99)


class GanTraining:
    def __init__(self, device: torch.device, seed: int, world: int = 1):
        with torch.random.fork_rng(devices=[]):  # its own init: the run's streams untouched
            torch.manual_seed(seed)
            self.discriminator = UNetDiscriminatorSN().to(device).train()
        self.optimizer = torch.optim.Adam(self.discriminator.parameters(), lr=LR, betas=BETAS)
        self.net: nn.Module = self.discriminator
        if world > 1:  # averaged gradients, as the generator's
            ids = [device.index] if device.type == "cuda" else None
            self.net = nn.parallel.DistributedDataParallel(self.discriminator, device_ids=ids)

    def generator_term(self, sr: torch.Tensor) -> torch.Tensor:
        """The adversarial loss of SR; gradients reach SR (and what made it), not the
        discriminator."""
        self.discriminator.requires_grad_(False)
        return generator_loss(self.net(sr))

    def step(self, sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
        """One discriminator step on HR (real) and the detached SR (fake); returns its loss."""
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.backward(sr, hr)
        self.apply()
        return loss

    def backward(self, sr: torch.Tensor, hr: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
        """The discriminator's gradients on one batch, times `scale`, added to those since the
        last `apply` (gradient accumulation: micro-batches of one step); returns its loss."""
        self.discriminator.requires_grad_(True)
        loss = discriminator_loss(self.net(hr), self.net(sr.detach()))
        (loss * scale if scale != 1 else loss).backward()
        return loss.detach()

    def apply(self) -> None:
        """The optimizer step on the gradients gathered since the last one."""
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def state_dict(self) -> dict:
        return {
            "discriminator": {
                k: v.detach().cpu().clone() for k, v in self.discriminator.state_dict().items()
            },
            "optimizer": self.optimizer.state_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        self.discriminator.load_state_dict(state["discriminator"])
        self.optimizer.load_state_dict(state["optimizer"])
