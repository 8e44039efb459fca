"""The `perceptual` term: L1 between VGG19 features of SR and HR, as Real-ESRGAN weighs them.

Features are the outputs of conv1_2, conv2_2, conv3_4, conv4_4 and conv5_4 (before their
ReLU), weighted 0.1, 0.1, 1, 1, 1; the images are normalised with ImageNet's mean and std
first. The weights are torchvision's ImageNet VGG19, read from torch's local cache (never
downloaded here) or from `--vgg-weights FILE`; without either, one line says which file is
missing and where to get it. A randomly initialised network is never used.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import VGG19_Weights, vgg19

from adaptsr.core.errors import UserError

LAYER_WEIGHTS = {"conv1_2": 0.1, "conv2_2": 0.1, "conv3_4": 1.0, "conv4_4": 1.0, "conv5_4": 1.0}
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
VGG19_WEIGHTS = VGG19_Weights.IMAGENET1K_V1

FeatureExtractor = Callable[[torch.Tensor], Mapping[str, torch.Tensor]]


def vgg19_layer_names() -> list[str]:
    """conv1_1, relu1_1, conv1_2, ..., pool5: the names of torchvision's vgg19().features."""
    names, block, index = [], 1, 1
    for layer in vgg19().features:
        if isinstance(layer, nn.Conv2d):
            names.append(f"conv{block}_{index}")
        elif isinstance(layer, nn.ReLU):
            names.append(f"relu{block}_{index}")
            index += 1
        else:
            names.append(f"pool{block}")
            block, index = block + 1, 1
    return names


class VGGFeatures(nn.Module):
    """The named layers' outputs of a VGG19 feature stack, frozen; runs only as deep as the
    deepest layer asked for. ReLUs run out of place, so a conv's output stays as it was."""

    def __init__(self, features: nn.Sequential, layers: list[str]):
        super().__init__()
        names = vgg19_layer_names()
        last = max(names.index(n) for n in layers)
        self.names = names[: last + 1]
        self.features = nn.Sequential(*list(features)[: last + 1]).eval().requires_grad_(False)
        self.layers = set(layers)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        out = {}
        for name, layer in zip(self.names, self.features, strict=True):
            x = F.relu(x) if isinstance(layer, nn.ReLU) else layer(x)
            if name in self.layers:
                out[name] = x
        return out

    def train(self, mode: bool = True) -> VGGFeatures:
        return super().train(False)  # a fixed feature space: always eval


def cached_vgg19_file() -> Path:
    """Where torchvision's weights API keeps VGG19's ImageNet weights once downloaded."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(VGG19_WEIGHTS.url)


def vgg19_file(path: str | os.PathLike | None = None) -> Path:
    """The VGG19 weights file: `path`, else torch's cache; one line when it is absent."""
    file = Path(path) if path else cached_vgg19_file()
    if not file.is_file():
        name = os.path.basename(VGG19_WEIGHTS.url)
        where = f"--vgg-weights {file} does not exist" if path else f"{file} is missing"
        raise UserError(
            f"the perceptual loss needs VGG19's ImageNet weights: {where}; download "
            f"{VGG19_WEIGHTS.url} ({name}, torchvision's VGG19_Weights.IMAGENET1K_V1) into "
            f"{file.parent if not path else cached_vgg19_file().parent} or pass --vgg-weights FILE"
        )
    return file


def load_vgg19_features(path: str | os.PathLike | None = None) -> VGGFeatures:
    """VGG19 with ImageNet weights from `path`, else from torch's cache; one line when absent."""
    file = vgg19_file(path)
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
        net = vgg19()
        net.load_state_dict(state)
    except Exception as e:  # a damaged or foreign file
        raise UserError(f"cannot read VGG19 weights {file}: {type(e).__name__}: {e}") from e
    return VGGFeatures(net.features, list(LAYER_WEIGHTS))


class PerceptualLoss(nn.Module):
    """sum over layers of weight * L1(features(norm(sr)), features(norm(hr))), the HR features
    without gradient. `extractor` maps an image batch to named features (VGGFeatures, or any
    network in tests)."""

    def __init__(self, extractor: nn.Module, layer_weights: Mapping[str, float] = LAYER_WEIGHTS):
        super().__init__()
        self.extractor = extractor
        self.layer_weights = dict(layer_weights)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))

    def forward(self, sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
        sr_features = self.extractor((sr - self.mean) / self.std)
        with torch.no_grad():
            hr_features = self.extractor((hr - self.mean) / self.std)
        total = sr.new_zeros(())
        for name, weight in self.layer_weights.items():
            total = total + weight * F.l1_loss(sr_features[name], hr_features[name])
        return total
