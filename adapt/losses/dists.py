"""The `dists` term: DISTS (Ding et al., "Image Quality Assessment: Unifying Structure and
Texture Similarity", 2020) as a loss, the same number `adapt eval` reports as DISTS.

Six stages of features are compared: the image itself and VGG16's relu1_2, relu2_2, relu3_3,
relu4_3 and relu5_3 (on the ImageNet-normalised image, each max pooling replaced by L2 pooling
over a 3x3 Hann window, stride 2). Per stage and channel, with means mu, variances s^2 and the
covariance s_xy over the whole map and c = 1e-6:

    structure  (2 mu_x mu_y + c) / (mu_x^2 + mu_y^2 + c)
    texture    (2 s_xy + c) / (s_x^2 + s_y^2 + c)

DISTS = 1 - sum over stages and channels of (alpha * structure + beta * texture), with the
learned alpha and beta of the file `dists_weights.pt`. Images with a side over 256 px are
resized (bilinear) so that their shorter side is 256 first, as the metric does.

The weights are two files: torchvision's VGG16 ImageNet weights (vgg16-397923af.pth) and
dists_weights.pt. They are read from a folder (`dists_weights`), else from adaptsr's weights
folder ($ADAPTSR_WEIGHTS, where `adapt eval` reads them), else from torch's hub cache; when one
is in none of them, one line says which file is missing and where to get it. A randomly
initialised network is never used.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from adaptsr.adapt.losses.perceptual import IMAGENET_MEAN, IMAGENET_STD
from adaptsr.adapt.metrics import PERCEPTUAL_FILES, WEIGHT_URLS, weights_dir
from adaptsr.core.errors import UserError

VGG16_FILE, DISTS_FILE = PERCEPTUAL_FILES["dists"]
# VGG16's convolutions ("M": a pooling); torchvision numbers conv, relu and pool layers in order
VGG16_PLAN = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)
STAGES = (3, 8, 15, 22, 29)  # the layer indices of relu1_2, relu2_2, relu3_3, relu4_3, relu5_3
CHANNELS = (3, 64, 128, 256, 512, 512)  # the image, then each stage
C = 1e-6
MAX_SIDE = 256


class L2Pool(nn.Module):
    """sqrt of the 3x3 Hann-weighted mean of x^2, stride 2 (DISTS' anti-aliased pooling)."""

    def __init__(self):
        super().__init__()
        w = torch.tensor([0.25, 0.5, 0.25])
        self.register_buffer("window", (w[:, None] * w[None, :])[None, None], persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        window = self.window.to(x).expand(x.shape[1], 1, 3, 3)
        return (F.conv2d(x * x, window, stride=2, padding=1, groups=x.shape[1]) + 1e-12).sqrt()


def vgg16_features() -> nn.Sequential:
    """VGG16's feature stack up to relu5_3, numbered as torchvision's, L2 pooling in place of
    max pooling."""
    layers: list[nn.Module] = []
    channels = 3
    for step in VGG16_PLAN:
        if step == "M":
            layers.append(L2Pool())
            continue
        layers += [nn.Conv2d(channels, step, 3, padding=1), nn.ReLU()]
        channels = step
    return nn.Sequential(*layers)


def find_weights(folder: str | os.PathLike | None = None) -> tuple[Path, Path]:
    """(VGG16 file, DISTS file): from `folder` if given, else the weights folder or torch's
    hub cache; one line naming the missing file and its URL otherwise."""
    if folder is not None:
        if not Path(folder).is_dir():
            raise UserError(f"--dists-weights {folder}: no such folder")
        places = [Path(folder)]
    else:
        places = [weights_dir(), Path(torch.hub.get_dir()) / "checkpoints"]
    found = []
    for name in (VGG16_FILE, DISTS_FILE):
        path = next((p / name for p in places if (p / name).is_file()), None)
        if path is None:
            where = " or ".join(str(p) for p in places)
            raise UserError(
                f"the dists term needs {name}, which is not in {where}: download "
                f"{WEIGHT_URLS[name]} into {places[0]}"
                + ("" if folder else " (or give --dists-weights DIR)")
            )
        found.append(path)
    return found[0], found[1]


def _load(path: Path) -> dict:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a damaged or foreign file
        raise UserError(f"cannot read DISTS weights {path}: {type(e).__name__}: {e}") from e
    if not isinstance(state, dict):
        raise UserError(f"cannot read DISTS weights {path}: not a table of tensors")
    return state


class DistsLoss(nn.Module):
    """DISTS(sr, hr), averaged over the batch; frozen, always in eval mode."""

    def __init__(self, features: nn.Sequential, alpha: torch.Tensor, beta: torch.Tensor):
        super().__init__()
        self.features = features.eval().requires_grad_(False)
        self.register_buffer("alpha", alpha.reshape(-1).float().clone())
        self.register_buffer("beta", beta.reshape(-1).float().clone())
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))

    def stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        out, h = [x], (x - self.mean) / self.std
        for index, layer in enumerate(self.features):
            h = layer(h)
            if index in STAGES:
                out.append(h)
        return out

    def forward(self, sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
        side = min(sr.shape[-2:])
        if side > MAX_SIDE:
            resize = dict(
                scale_factor=MAX_SIDE / side, mode="bilinear", recompute_scale_factor=False
            )
            sr, hr = F.interpolate(sr, **resize), F.interpolate(hr, **resize)
        with torch.no_grad():
            hr_stages = self.stages(hr)
        structure, texture = [], []
        for x, y in zip(self.stages(sr), hr_stages, strict=True):
            mx, my = x.mean((2, 3)), y.mean((2, 3))
            vx, vy = x.var((2, 3), unbiased=False), y.var((2, 3), unbiased=False)
            cov = (x * y).mean((2, 3)) - mx * my
            structure.append((2 * mx * my + C) / (mx * mx + my * my + C))
            texture.append((2 * cov + C) / (vx + vy + C))
        similarity = torch.cat(structure, 1) @ self.alpha + torch.cat(texture, 1) @ self.beta
        return (1 - similarity).mean()

    def train(self, mode: bool = True) -> DistsLoss:
        return super().train(False)


def load_dists(folder: str | os.PathLike | None = None) -> DistsLoss:
    """The DISTS loss with its weights (find_weights); one line for a missing or bad file."""
    vgg_path, dists_path = find_weights(folder)
    vgg, learned = _load(vgg_path), _load(dists_path)
    features = vgg16_features()
    convs = {k.removeprefix("features."): v for k, v in vgg.items() if k.startswith("features.")}
    missing = sorted(set(features.state_dict()) - set(convs))
    try:
        if missing:
            raise ValueError(f"no tensor features.{missing[0]}")
        features.load_state_dict(convs)
    except (RuntimeError, ValueError) as e:  # another network's file, or other shapes
        reason = " ".join(str(e).split())[:200]  # torch's message spans lines
        raise UserError(
            f"cannot read DISTS weights {vgg_path}: not torchvision's VGG16 weights ({reason})"
        ) from e
    alpha, beta = learned.get("alpha"), learned.get("beta")
    fit = [
        isinstance(t, torch.Tensor) and t.numel() == sum(CHANNELS) and bool(t.isfinite().all())
        for t in (alpha, beta)
    ]
    if not all(fit):
        raise UserError(
            f"cannot read DISTS weights {dists_path}: not DISTS' weights (alpha and beta of "
            f"{sum(CHANNELS)} finite values each)"
        )
    return DistsLoss(features, alpha, beta)
