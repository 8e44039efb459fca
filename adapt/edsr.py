"""EDSR (Lim et al., 2017), with the official EDSR-PyTorch state-dict layout.

spandrel has no EDSR, so it is defined here and registered with spandrel's registry: one loader
serves every architecture. Official checkpoints work in the [0, rgb_range] pixel range (255)
with a fixed mean shift; the model takes and returns [0, 1] images like every spandrel model.
"""

from __future__ import annotations

import math

import torch
from spandrel import (
    MAIN_REGISTRY,
    Architecture,
    ArchSupport,
    ImageModelDescriptor,
    ModelTiling,
    SizeRequirements,
    StateDict,
)
from spandrel.util import KeyCondition, get_seq_len, store_hyperparameters
from torch import nn

# DIV2K mean in RGB order, as used by EDSR-PyTorch's MeanShift.
DIV2K_RGB_MEAN = (0.4488, 0.4371, 0.4040)


class MeanShift(nn.Conv2d):
    """A frozen 1x1 conv adding sign * rgb_range * mean (stored, like the official model)."""

    def __init__(self, rgb_range: float, sign: int):
        super().__init__(3, 3, kernel_size=1)
        with torch.no_grad():
            self.weight.copy_(torch.eye(3).view(3, 3, 1, 1))
            self.bias.copy_(sign * rgb_range * torch.tensor(DIV2K_RGB_MEAN))
        self.requires_grad_(False)


class ResBlock(nn.Module):
    def __init__(self, n_feats: int, res_scale: float):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(n_feats, n_feats, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(n_feats, n_feats, 3, padding=1),
        )
        self.res_scale = res_scale

    def forward(self, x):
        return x + self.body(x) * self.res_scale


class Upsampler(nn.Sequential):
    """Pixel-shuffle upsampler: log2(scale) x2 stages, or one x3 stage."""

    def __init__(self, scale: int, n_feats: int):
        layers: list[nn.Module] = []
        if scale & (scale - 1) == 0:
            for _ in range(int(math.log2(scale))):
                layers += [nn.Conv2d(n_feats, 4 * n_feats, 3, padding=1), nn.PixelShuffle(2)]
        elif scale == 3:
            layers += [nn.Conv2d(n_feats, 9 * n_feats, 3, padding=1), nn.PixelShuffle(3)]
        else:
            raise ValueError(f"EDSR supports scales 2^n and 3, not {scale}")
        super().__init__(*layers)


@store_hyperparameters()
class EDSR(nn.Module):
    hyperparameters = {}  # filled by store_hyperparameters: rebuilds a fresh model (pretraining)

    def __init__(
        self,
        *,
        scale: int = 4,
        n_resblocks: int = 16,
        n_feats: int = 64,
        res_scale: float = 1.0,
        rgb_range: float = 255.0,
        n_colors: int = 3,
    ):
        super().__init__()
        self.scale = scale
        self.rgb_range = rgb_range
        self.sub_mean = MeanShift(rgb_range, sign=-1)
        self.add_mean = MeanShift(rgb_range, sign=+1)
        self.head = nn.Sequential(nn.Conv2d(n_colors, n_feats, 3, padding=1))
        self.body = nn.Sequential(
            *[ResBlock(n_feats, res_scale) for _ in range(n_resblocks)],
            nn.Conv2d(n_feats, n_feats, 3, padding=1),
        )
        self.tail = nn.Sequential(
            Upsampler(scale, n_feats), nn.Conv2d(n_feats, n_colors, 3, padding=1)
        )

    def forward(self, x):
        x = self.sub_mean(x * self.rgb_range)
        x = self.head(x)
        x = self.body(x) + x
        x = self.add_mean(self.tail(x))
        return x / self.rgb_range


def _upsampler_scale(state_dict: StateDict) -> int:
    convs = [k for k in state_dict if k.startswith("tail.0.") and k.endswith(".weight")]
    n_feats = state_dict["head.0.weight"].shape[0]
    out = state_dict["tail.0.0.weight"].shape[0]
    if out == 9 * n_feats:
        return 3
    return 2 ** len(convs)


class EDSRArch(Architecture[EDSR]):
    def __init__(self) -> None:
        super().__init__(
            id="EDSR",
            detect=KeyCondition.has_all(
                "sub_mean.weight",
                "add_mean.weight",
                "head.0.weight",
                "body.0.body.0.weight",
                "body.0.body.2.weight",
                "tail.0.0.weight",
                "tail.1.weight",
            ),
        )

    def load(self, state_dict: StateDict) -> ImageModelDescriptor[EDSR]:
        n_feats = state_dict["head.0.weight"].shape[0]
        n_colors = state_dict["head.0.weight"].shape[1]
        n_resblocks = get_seq_len(state_dict, "body") - 1
        scale = _upsampler_scale(state_dict)
        # sub_mean.bias = -rgb_range * mean: recover the pixel range the weights were trained in.
        rgb_range = float(round(-state_dict["sub_mean.bias"][0].item() / DIV2K_RGB_MEAN[0]))
        # res_scale is not stored; the official configurations tie it to the width.
        res_scale = 0.1 if n_feats >= 256 else 1.0
        model = EDSR(
            scale=scale,
            n_resblocks=n_resblocks,
            n_feats=n_feats,
            res_scale=res_scale,
            rgb_range=rgb_range,
            n_colors=n_colors,
        )
        return ImageModelDescriptor(
            model,
            state_dict,
            architecture=self,
            purpose="SR",
            tags=[f"{n_resblocks}nb", f"{n_feats}nf"],
            supports_half=True,
            supports_bfloat16=True,
            scale=scale,
            input_channels=n_colors,
            output_channels=n_colors,
            size_requirements=SizeRequirements(),
            tiling=ModelTiling.SUPPORTED,
        )


def register() -> None:
    """Add EDSR to spandrel's main registry (idempotent)."""
    MAIN_REGISTRY.add(ArchSupport.from_architecture(EDSRArch()), ignore_duplicates=True)
