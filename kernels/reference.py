"""Plain PyTorch LoRA forward paths: the reference every fused kernel is checked against.

Autograd differentiates them; they handle every case (any stride, padding, dilation and
padding mode, any dtype and device).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _scale_rows(a: torch.Tensor, scale: float | torch.Tensor) -> torch.Tensor:
    """Apply the LoRA scaling to the rank dimension (dim 0 of A): a float or one per rank."""
    if isinstance(scale, torch.Tensor) and scale.dim() == 1:
        return a * scale.to(a.dtype).view(-1, *([1] * (a.dim() - 1)))
    return a * scale


def lora_linear(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    lora_a: torch.Tensor,
    lora_b: torch.Tensor,
    scale: float | torch.Tensor,
) -> torch.Tensor:
    """y = x W^T + b + ((x A^T) * scale) B^T.

    weight (d_out, d_in), lora_a (r, d_in), lora_b (d_out, r); scale a float or a (r,) tensor
    (one value per rank, so that blocks of different rank share one call, as Q/K/V do).
    """
    y = F.linear(x, weight, bias)
    return y + F.linear(F.linear(x, _scale_rows(lora_a, scale)), lora_b)


def lora_conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    lora_a: torch.Tensor,
    lora_b: torch.Tensor,
    scale: float | torch.Tensor,
    stride=1,
    padding=0,
    dilation=1,
    padding_mode: str = "zeros",
) -> torch.Tensor:
    """y = W * x + b + scale * B * (A * x) for a base conv W (C_out, C_in, k, k).

    lora_a (r, C_in, 1, 1) reduces channels; lora_b (C_out, r, k, k) carries the base kernel,
    stride, padding and dilation. A is pointwise, so it commutes with any padding mode.
    """
    a = _scale_rows(lora_a, scale)
    if padding_mode != "zeros":
        pad = pair(padding)
        x = F.pad(x, (pad[1], pad[1], pad[0], pad[0]), mode=padding_mode)
        padding = 0
    y = F.conv2d(x, weight, bias, stride, padding, dilation)
    return y + F.conv2d(F.conv2d(x, a), lora_b, None, stride, padding, dilation)


def pair(v) -> tuple[int, int]:
    """An int or a 2-sequence (a conv's stride, padding, dilation) as a pair of ints."""
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))
