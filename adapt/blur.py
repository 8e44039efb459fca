"""Blur kernels of the Real-ESRGAN degradation model, built in batches, and per-sample filtering.

Kernel families (Wang et al., Real-ESRGAN, 2021), with d the pixel offset from the centre and
Sigma = R(theta) diag(sigma_x^2, sigma_y^2) R(theta)^T, Q = d^T Sigma^-1 d:

- Gaussian: exp(-Q / 2)
- generalized Gaussian: exp(-Q^beta / 2)
- plateau: 1 / (1 + Q^beta)
- sinc (circular low-pass): omega J1(omega r) / (2 pi r), omega^2 / (4 pi) at r = 0

Isotropic variants use sigma_y = sigma_x and theta = 0. Every kernel is computed on its own odd
size k, normalised to sum 1 and zero-padded to a common size so a batch is one tensor.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["KERNEL_TYPES", "PAD_TO", "filter2d", "make_kernels", "pulse"]

# Index order used by the parameter tensors (`type` holds an index into this tuple).
KERNEL_TYPES = (
    "iso",
    "aniso",
    "generalized_iso",
    "generalized_aniso",
    "plateau_iso",
    "plateau_aniso",
    "sinc",
)
PAD_TO = 21  # the largest kernel size; every kernel is padded to it


def make_kernels(
    kind: torch.Tensor,
    size: torch.Tensor,
    sigma_x: torch.Tensor,
    sigma_y: torch.Tensor,
    theta: torch.Tensor,
    beta: torch.Tensor,
    omega: torch.Tensor,
    pad_to: int = PAD_TO,
    device=None,
) -> torch.Tensor:
    """Build n kernels, (n, pad_to, pad_to) float32, from per-kernel parameter tensors (n,).

    `kind` indexes KERNEL_TYPES; `size` is each kernel's odd support. Parameters a kind does not
    use are ignored (sigma/theta/beta for sinc, omega for the others, beta for plain Gaussians).
    """
    f64 = dict(dtype=torch.float64, device=device)

    def col(t):
        return torch.as_tensor(t).to(**f64).reshape(-1, 1, 1)

    kind = torch.as_tensor(kind).to(device=device).reshape(-1, 1, 1)
    half = col(size).sub(1).div(2)
    ax = torch.arange(pad_to, **f64) - (pad_to - 1) / 2
    y, x = torch.meshgrid(ax, ax, indexing="ij")
    x, y = x[None], y[None]
    inside = (x.abs() <= half) & (y.abs() <= half)

    c, s = torch.cos(col(theta)), torch.sin(col(theta))
    u = c * x + s * y  # offset along the first principal axis
    v = -s * x + c * y
    q = (u / col(sigma_x)) ** 2 + (v / col(sigma_y)) ** 2
    b = col(beta)
    gauss = torch.exp(-0.5 * q.pow(b))  # beta = 1 is the plain Gaussian
    plateau = 1.0 / (q.pow(b) + 1.0)

    om = col(omega)
    r = torch.sqrt(x * x + y * y)
    r_safe = torch.where(r > 0, r, torch.ones_like(r))
    sinc = om * torch.special.bessel_j1(om * r_safe) / (2 * math.pi * r_safe)
    sinc = torch.where(r > 0, sinc, om * om / (4 * math.pi))

    is_plateau = (kind == KERNEL_TYPES.index("plateau_iso")) | (
        kind == KERNEL_TYPES.index("plateau_aniso")
    )
    k = torch.where(is_plateau, plateau, gauss)
    k = torch.where(kind == KERNEL_TYPES.index("sinc"), sinc, k)
    k = torch.where(inside, k, torch.zeros_like(k))
    k = k / k.sum(dim=(1, 2), keepdim=True)
    return k.float()


def pulse(n: int, pad_to: int = PAD_TO, device=None) -> torch.Tensor:
    """n identity kernels (a single 1 at the centre): filtering with them changes nothing."""
    k = torch.zeros(n, pad_to, pad_to, device=device)
    k[:, pad_to // 2, pad_to // 2] = 1.0
    return k


def filter2d(x: torch.Tensor, kernels: torch.Tensor, support: int | None = None) -> torch.Tensor:
    """Filter each image of (B, C, H, W) with its own odd (k, k) kernel, kernels (B, k, k).

    Borders are reflected (no edge repeat), as in the reference pipeline; an image smaller than
    the kernel radius falls back to edge replication, which reflection cannot provide.
    `support` (odd, <= k): the kernels are zero outside their central support x support
    window, so only that window is convolved (same result, less work).
    """
    b, c, h, w = x.shape
    k = kernels.shape[-1]
    if kernels.shape != (b, k, k) or k % 2 == 0:
        raise ValueError(f"need ({b}, k, k) kernels with odd k, got {tuple(kernels.shape)}")
    if support is not None and support < k:
        cut = (k - support) // 2
        kernels = kernels[:, cut : k - cut, cut : k - cut]
        k = kernels.shape[-1]
    p = k // 2
    mode = "reflect" if p < min(h, w) else "replicate"
    xp = F.pad(x, (p, p, p, p), mode=mode)
    weight = kernels.to(x.dtype).repeat_interleave(c, dim=0)[:, None]  # (B*C, 1, k, k)
    out = F.conv2d(xp.reshape(1, b * c, h + 2 * p, w + 2 * p), weight, groups=b * c)
    return out.reshape(b, c, h, w)
