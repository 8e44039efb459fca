"""The U-Net discriminator with spectral normalisation of Real-ESRGAN's design: it judges every
pixel (a 1-channel map of logits, the size of its input), so it sees local texture and global
structure at once.

A first conv, three stride-2 convs down (64 -> 128 -> 256 -> 512 channels), three bilinear x2
upsamplings each followed by a conv (512 -> 256 -> 128 -> 64) and added to the features of the
same size on the way down, two more convs, and a conv to one channel. Every conv but the first
and the last is spectrally normalised; activations are LeakyReLU(0.2).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import spectral_norm


def _sn_conv(c_in: int, c_out: int, kernel: int, stride: int, bias: bool) -> nn.Module:
    return spectral_norm(
        nn.Conv2d(c_in, c_out, kernel, stride, kernel // 2 - (stride > 1), bias=bias)
    )


class UNetDiscriminatorSN(nn.Module):
    def __init__(self, in_channels: int = 3, features: int = 64):
        super().__init__()
        f = features
        self.conv_in = nn.Conv2d(in_channels, f, 3, 1, 1)
        # down: 4x4 convs of stride 2, no bias (spectral normalisation scales the weight)
        self.down = nn.ModuleList(
            [_sn_conv(f, 2 * f, 4, 2, False), _sn_conv(2 * f, 4 * f, 4, 2, False)]
            + [_sn_conv(4 * f, 8 * f, 4, 2, False)]
        )
        self.up = nn.ModuleList(
            [_sn_conv(8 * f, 4 * f, 3, 1, False), _sn_conv(4 * f, 2 * f, 3, 1, False)]
            + [_sn_conv(2 * f, f, 3, 1, False)]
        )
        self.extra = nn.ModuleList([_sn_conv(f, f, 3, 1, False), _sn_conv(f, f, 3, 1, False)])
        self.conv_out = nn.Conv2d(f, 1, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        act = lambda t: F.leaky_relu(t, 0.2)  # noqa: E731
        skips = [act(self.conv_in(x))]
        for conv in self.down:
            skips.append(act(conv(skips[-1])))
        y = skips.pop()
        for conv in self.up:
            y = F.interpolate(y, scale_factor=2, mode="bilinear", align_corners=False)
            y = act(conv(y)) + skips.pop()  # the skip of the same size
        for conv in self.extra:
            y = act(conv(y))
        return self.conv_out(y)
