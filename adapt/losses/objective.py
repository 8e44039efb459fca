"""The training objective of `--loss`: the weighted sum of its terms."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from adaptsr.adapt.losses.artifacts import ldl_loss
from adaptsr.adapt.losses.dists import DistsLoss, find_weights, load_dists
from adaptsr.adapt.losses.focal_frequency import focal_frequency_loss
from adaptsr.adapt.losses.perceptual import PerceptualLoss, load_vgg19_features, vgg19_file
from adaptsr.adapt.losses.pixel import l1_loss
from adaptsr.adapt.losses.spec import parse_loss

GanTerm = Callable[[torch.Tensor], torch.Tensor]


class Objective:
    """sum of weight * term(sr, hr). `perceptual` serves the perceptual term, `dists` the DISTS
    one, `gan` the adversarial one (from iteration `gan_start` + 1 on: before it, a warm-up
    without it); `ldl` needs the EMA model's output as `reference`."""

    def __init__(
        self,
        terms: tuple[tuple[str, float], ...],
        perceptual: PerceptualLoss | None = None,
        gan: GanTerm | None = None,
        gan_start: int = 0,
        dists: DistsLoss | None = None,
    ):
        self.terms, self.perceptual, self.gan, self.gan_start = terms, perceptual, gan, gan_start
        self.dists = dists
        names = {name for name, _ in terms}
        if "perceptual" in names and perceptual is None:
            raise ValueError("a perceptual term needs its loss module")
        if "dists" in names and dists is None:
            raise ValueError("a dists term needs its loss module")
        if "gan" in names and gan is None:
            raise ValueError("a gan term needs the discriminator")
        self.needs_reference = "ldl" in names

    def gan_active(self, iteration: int) -> bool:
        return self.gan is not None and iteration > self.gan_start

    def __call__(
        self,
        sr: torch.Tensor,
        hr: torch.Tensor,
        iteration: int,
        reference: torch.Tensor | None = None,
    ) -> torch.Tensor:
        total = None
        for name, weight in self.terms:
            if name == "gan" and not self.gan_active(iteration):
                continue
            value = self._term(name, sr, hr, reference)
            value = value if weight == 1 else weight * value
            total = value if total is None else total + value
        return total if total is not None else sr.new_zeros(()) * sr.sum()

    def _term(self, name: str, sr, hr, reference) -> torch.Tensor:
        if name == "l1":
            return l1_loss(sr, hr)
        if name == "perceptual":
            return self.perceptual(sr, hr)
        if name == "ff":
            return focal_frequency_loss(sr, hr)
        if name == "dists":
            return self.dists(sr, hr)
        if name == "ldl":
            if reference is None:
                raise ValueError("the ldl term needs the EMA model's output")
            return ldl_loss(sr, hr, reference)
        return self.gan(sr)  # "gan"


def perceptual_module(vgg_weights: str | None, device: torch.device) -> nn.Module:
    """Real-ESRGAN's perceptual loss on VGG19 (local weights only; one line when absent)."""
    return PerceptualLoss(load_vgg19_features(vgg_weights)).to(device)


def check_loss_files(spec: str, vgg_weights=None, dists_weights=None) -> None:
    """The weights files the terms of `spec` read are there (one line naming a missing one),
    without loading them: `adapt study` checks every run's before the first run starts."""
    names = {name for name, _ in parse_loss(spec)}
    if "perceptual" in names:
        vgg19_file(vgg_weights)
    if "dists" in names:
        find_weights(dists_weights)


def build_objective(
    spec: str, vgg_weights, gan_start: int, gan, device, dists_weights=None
) -> Objective:
    """The objective of a `--loss` spec on `device`; `gan` is the run's GanTraining or None;
    `dists_weights` the folder of the dists term's weights (None: where adapt eval finds them,
    or torch's cache)."""
    terms = parse_loss(spec)
    names = {name for name, _ in terms}
    perceptual = perceptual_module(vgg_weights, device) if "perceptual" in names else None
    dists = load_dists(dists_weights).to(device) if "dists" in names else None
    return Objective(terms, perceptual, gan.generator_term if gan else None, gan_start, dists)
