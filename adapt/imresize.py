"""MATLAB-compatible bicubic resize (`imresize(x, s, 'bicubic')` with antialiasing) in PyTorch.

The standard SR benchmarks made their LR images with MATLAB's imresize, whose output differs
from OpenCV's and from `F.interpolate`: the cubic kernel (a = -0.5) is widened by 1/scale when
downscaling (antialiasing) and the border is handled by mirroring the input (symmetric padding,
the edge pixel repeated). This module follows MATLAB's algorithm: each output pixel is a
normalised weighted sum of the input pixels around its centre, computed per dimension.
"""

from __future__ import annotations

import math

import torch

from adaptsr.core.errors import UserError

__all__ = ["cubic", "imresize", "resize_weights"]


def cubic(t: torch.Tensor) -> torch.Tensor:
    """Keys' cubic convolution kernel with a = -0.5 (MATLAB's bicubic)."""
    a = t.abs()
    a2, a3 = a * a, a * a * a
    near = (1.5 * a3 - 2.5 * a2 + 1.0) * (a <= 1)
    far = (-0.5 * a3 + 2.5 * a2 - 4.0 * a + 2.0) * ((a > 1) & (a <= 2))
    return near + far


def resize_weights(
    in_len: int, out_len: int, scale: float, antialias: bool = True, device=None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Taps for one dimension: (indices, weights), both (out_len, taps), computed in fp64.

    Indices are 0-based into the input, already mirrored at the borders.
    """
    width = 4.0
    if scale < 1 and antialias:
        # A kernel stretched by 1/scale low-passes before decimation.
        def kernel(t):
            return scale * cubic(scale * t)

        width /= scale
    else:
        kernel = cubic
    x = torch.arange(1, out_len + 1, dtype=torch.float64, device=device)
    # Centre of output pixel x in input coordinates (1-based, pixel centres at integers).
    u = x / scale + 0.5 * (1 - 1 / scale)
    left = torch.floor(u - width / 2)
    taps = math.ceil(width) + 2
    idx = left[:, None] + torch.arange(taps, dtype=torch.float64, device=device)[None, :]
    w = kernel(u[:, None] - idx)
    w = w / w.sum(dim=1, keepdim=True)
    # Symmetric border: ... 2 1 | 1 2 ... n | n n-1 ...
    j = torch.remainder(idx.long() - 1, 2 * in_len)
    j = torch.where(j >= in_len, 2 * in_len - 1 - j, j)
    return j, w


def _resize_dim(x: torch.Tensor, dim: int, out_len: int, scale: float, antialias: bool):
    idx, w = resize_weights(x.shape[dim], out_len, scale, antialias, device=x.device)
    w = w.to(x.dtype)
    shape = [1] * x.dim()
    shape[dim] = out_len
    out = None
    # One gather per tap keeps memory at one output-sized tensor (taps reach 18 at x4).
    for t in range(idx.shape[1]):
        term = x.index_select(dim, idx[:, t]) * w[:, t].reshape(shape)
        out = term if out is None else out + term
    return out


def imresize(
    x: torch.Tensor, scale_or_size: float | tuple[int, int], antialias: bool = True
) -> torch.Tensor:
    """Resize (B, C, H, W) or (C, H, W) float images like MATLAB's `imresize(..., 'bicubic')`.

    `scale_or_size` is a scale factor (output size ceil(scale * input), weights use the given
    scale, as MATLAB does) or an (height, width) output size (per-dimension scale out/in).
    Values are not clamped: bicubic overshoots at edges, as in MATLAB before its uint8 cast.
    """
    if x.dim() not in (3, 4) or not x.is_floating_point():
        raise UserError(f"imresize expects a float (B, C, H, W) or (C, H, W) tensor, got {x.shape}")
    h, w = x.shape[-2:]
    if isinstance(scale_or_size, (tuple, list)):
        if len(scale_or_size) != 2 or min(scale_or_size) < 1:
            raise UserError(f"imresize size must be two positive integers, got {scale_or_size}")
        out_h, out_w = int(scale_or_size[0]), int(scale_or_size[1])
        sh, sw = out_h / h, out_w / w
    else:
        s = float(scale_or_size)
        if not s > 0:
            raise UserError(f"imresize scale must be positive, got {scale_or_size}")
        # Round away float noise (0.25 * 256 must give 64, not 65) before MATLAB's ceil.
        out_h, out_w = math.ceil(round(s * h, 9)), math.ceil(round(s * w, 9))
        sh = sw = s
    work = x if x.dtype in (torch.float32, torch.float64) else x.float()
    # MATLAB resizes the dimension with the smaller scale first (less work when shrinking).
    if sh <= sw:
        work = _resize_dim(work, -2, out_h, sh, antialias)
        work = _resize_dim(work, -1, out_w, sw, antialias)
    else:
        work = _resize_dim(work, -1, out_w, sw, antialias)
        work = _resize_dim(work, -2, out_h, sh, antialias)
    return work.to(x.dtype)
