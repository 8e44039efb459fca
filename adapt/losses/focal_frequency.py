"""The `ff` term: focal frequency loss (Jiang et al., ICCV 2021), alpha = 1.

Both images go to the 2D Fourier domain (orthonormal FFT per image and channel); each
frequency's squared distance is weighted by its own distance to the power alpha, normalised
to [0, 1] by the largest of its spectrum, with no gradient through the weight: the frequencies
the network finds hard get the attention.
"""

from __future__ import annotations

import torch


def focal_frequency_loss(sr: torch.Tensor, hr: torch.Tensor, alpha: float = 1.0) -> torch.Tensor:
    diff = torch.fft.fft2(sr, norm="ortho") - torch.fft.fft2(hr, norm="ortho")
    distance = diff.real**2 + diff.imag**2  # |F_sr - F_hr|^2 per frequency
    with torch.no_grad():
        weight = distance.sqrt() ** alpha
        top = weight.amax(dim=(-2, -1), keepdim=True)
        weight = torch.where(top > 0, weight / top.clamp_min(1e-30), torch.zeros_like(weight))
        weight = weight.clamp(0, 1)
    return (weight * distance).mean()
