"""Baseline JPEG compression and decompression of image batches in PyTorch (runs on GPU).

It follows what libjpeg (and so OpenCV's `imencode`/`imdecode`) does to the pixels, minus the
lossless entropy coding:

1. 8-bit RGB -> YCbCr (JFIF, BT.601 full range), rounded to integers;
2. image edges replicated up to a whole number of MCUs (16x16 for 4:2:0, 8x8 for 4:4:4);
3. chroma 2x2 averaged (4:2:0, libjpeg's and OpenCV's default) or kept (4:4:4);
4. level shift by 128, orthonormal 8x8 DCT-II per block;
5. division by the quantisation table and rounding; the standard tables of the JPEG
   specification (Annex K) scaled by quality as libjpeg does (5000/q below 50, else 200 - 2q,
   rounded, clipped to 1..255);
6. the inverse: dequantise, inverse DCT, +128, round, clip; chroma upsampled with a triangle
   (bilinear) filter with the edge repeated, libjpeg's default "fancy" upsampling;
7. YCbCr -> RGB, rounded and clipped to 8 bits.

Each image in the batch has its own quality.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from adaptsr.adapt.jpeg_tables import CHROMA_TABLE, LUMA_TABLE
from adaptsr.core.errors import UserError

__all__ = ["jpeg", "quant_tables"]


def quant_tables(quality: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Luma and chroma tables (B, 8, 8) for integer qualities (B,) in 1..100, libjpeg's scaling."""
    q = quality.to(torch.float64).reshape(-1, 1, 1)
    scale = torch.where(q < 50, torch.floor(5000 / q), 200 - 2 * q)
    out = []
    for base in (LUMA_TABLE, CHROMA_TABLE):
        t = torch.tensor(base, dtype=torch.float64, device=quality.device)[None]
        out.append(torch.floor((t * scale + 50) / 100).clamp(1, 255).float())
    return out[0], out[1]


def _dct_basis(device) -> torch.Tensor:
    """(64, 64) orthonormal 2-D DCT-II of a row-major 8x8 block: coefficients = block @ K.T."""
    n = torch.arange(8, dtype=torch.float64, device=device)
    d = torch.cos((2 * n[None, :] + 1) * n[:, None] * math.pi / 16) * math.sqrt(2 / 8)
    d[0] /= math.sqrt(2)
    # vec(D X D^T) = (D kron D) vec(X): one GEMM for all blocks instead of 8x8 matmuls.
    return torch.kron(d, d).float()


def _code_planes(planes: torch.Tensor, table: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Quantise and reconstruct components (B, P, H, W) in 0..255; tables (B, 8, 8)."""
    b, p, h, w = planes.shape
    blocks = (planes - 128.0).reshape(b, p, h // 8, 8, w // 8, 8).permute(0, 1, 2, 4, 3, 5)
    blocks = blocks.reshape(b, -1, 64)
    t = table.reshape(b, 1, 64)
    coef = torch.round((blocks @ k.T) / t) * t
    rec = (coef @ k).reshape(b, p, h // 8, w // 8, 8, 8).permute(0, 1, 2, 4, 3, 5)
    return torch.round(rec.reshape(b, p, h, w) + 128.0).clamp(0, 255)


def jpeg(x: torch.Tensor, quality, subsampling: str = "420") -> torch.Tensor:
    """JPEG-compress and decode RGB images (B, 3, H, W) in [0, 1]; returns the same shape.

    `quality` is an int or a (B,) tensor of integers in 1..100. Input is clipped and rounded to
    8 bits first (a JPEG file holds 8-bit samples); the output is 8-bit valued, in [0, 1].
    """
    if x.dim() != 4 or x.shape[1] != 3:
        raise UserError(f"jpeg expects RGB images (B, 3, H, W), got {tuple(x.shape)}")
    if subsampling not in ("420", "444"):
        raise UserError(f"jpeg subsampling must be '420' or '444', got {subsampling!r}")
    b, _, h, w = x.shape
    quality = torch.as_tensor(quality).reshape(-1)
    if quality.numel() not in (1, b):
        raise UserError(f"jpeg needs one quality or one per image ({b}), got {quality.numel()}")
    quality = quality.expand(b)
    if quality.is_floating_point():
        quality = torch.round(quality)
    # Checked where the qualities live (CPU draws: no device sync), then moved.
    if bool(((quality < 1) | (quality > 100)).any()):
        raise UserError("jpeg quality must be within 1..100")
    quality = quality.to(x.device)
    luma_t, chroma_t = quant_tables(quality)
    k = _dct_basis(x.device)

    v = torch.round(x.float().clamp(0, 1) * 255)
    r, g, bl = v[:, 0], v[:, 1], v[:, 2]
    y = torch.round(0.299 * r + 0.587 * g + 0.114 * bl)
    cb = torch.round(-0.168735892 * r - 0.331264108 * g + 0.5 * bl + 128).clamp(0, 255)
    cr = torch.round(0.5 * r - 0.418687589 * g - 0.081312411 * bl + 128).clamp(0, 255)

    mcu = 16 if subsampling == "420" else 8
    ph, pw = -h % mcu, -w % mcu
    ycc = F.pad(torch.stack([y, cb, cr], 1), (0, pw, 0, ph), mode="replicate")
    y_rec = _code_planes(ycc[:, :1], luma_t, k)[:, 0, :h, :w]
    chroma = ycc[:, 1:]
    if subsampling == "420":
        # libjpeg's integer 2x2 average: rounding bias alternates 1, 2 along each row.
        bias = 1.0 + (torch.arange(chroma.shape[-1] // 2, device=x.device) % 2)
        chroma = torch.floor((F.avg_pool2d(chroma, 2) * 4 + bias) / 4)
    chroma = _code_planes(chroma, chroma_t, k)
    if subsampling == "420":
        # Only ceil(H/2) x ceil(W/2) chroma samples are real; the decoder repeats the last one.
        chroma = chroma[:, :, : (h + 1) // 2, : (w + 1) // 2]
        chroma = F.interpolate(chroma, scale_factor=2, mode="bilinear", align_corners=False)
        chroma = torch.round(chroma)
    cb_rec, cr_rec = chroma[:, 0, :h, :w] - 128, chroma[:, 1, :h, :w] - 128
    rgb = torch.stack(
        [
            y_rec + 1.402 * cr_rec,
            y_rec - 0.344136286 * cb_rec - 0.714136286 * cr_rec,
            y_rec + 1.772 * cb_rec,
        ],
        1,
    )
    return (torch.round(rgb).clamp(0, 255) / 255).to(x.dtype)
