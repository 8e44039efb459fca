"""What the degradations draw: the Real-ESRGAN and camera settings (frozen dataclasses with the
published defaults) and the seeded per-sample parameter draw of the Real-ESRGAN pipeline
(`sample_params`). adapt/degradations.py applies what is drawn here."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from adaptsr.adapt.blur import KERNEL_TYPES
from adaptsr.adapt.choices import DEGRADATIONS
from adaptsr.core.errors import UserError

KINDS = DEGRADATIONS
RESIZE_MODES = ("up", "down", "keep")
INTERP_MODES = ("area", "bilinear", "bicubic")
# Keys that change tensor sizes: samples are processed together only where these agree.
SIZE_KEYS = (
    "resize1_scale",
    "resize1_interp",
    "resize2_scale",
    "resize2_interp",
    "final_interp",
    "final_resize_first",
)


@dataclass(frozen=True)
class BicubicConfig:
    """MATLAB bicubic downsampling by the scale, nothing else (the benchmark LR images)."""


BICUBIC = BicubicConfig()


@dataclass(frozen=True)
class StageConfig:
    """One degradation stage; the defaults are Real-ESRGAN's first stage."""

    kernel_prob: tuple[float, ...] = (0.45, 0.25, 0.12, 0.03, 0.12, 0.03)  # KERNEL_TYPES[:6]
    sinc_prob: float = 0.1
    blur_sigma: tuple[float, float] = (0.2, 3.0)
    betag: tuple[float, float] = (0.5, 4.0)
    betap: tuple[float, float] = (1.0, 2.0)
    resize_prob: tuple[float, float, float] = (0.2, 0.7, 0.1)  # up, down, keep
    resize_range: tuple[float, float] = (0.15, 1.5)
    gaussian_noise_prob: float = 0.5
    noise_sigma: tuple[float, float] = (1.0, 30.0)  # in 8-bit levels
    poisson_scale: tuple[float, float] = (0.05, 3.0)
    gray_noise_prob: float = 0.4
    jpeg_quality: tuple[int, int] = (30, 95)  # inclusive


@dataclass(frozen=True)
class RealESRGANConfig:
    stage1: StageConfig = field(default_factory=StageConfig)
    stage2: StageConfig = field(
        default_factory=lambda: StageConfig(
            blur_sigma=(0.2, 1.5),
            resize_prob=(0.3, 0.4, 0.3),
            resize_range=(0.3, 1.2),
            noise_sigma=(1.0, 25.0),
            poisson_scale=(0.05, 2.5),
        )
    )
    kernel_sizes: tuple[int, ...] = (7, 9, 11, 13, 15, 17, 19, 21)
    second_blur_prob: float = 0.8
    final_sinc_prob: float = 0.8
    resize_first_prob: float = 0.5  # final [resize + sinc] before JPEG


REALESRGAN = RealESRGANConfig()


@dataclass(frozen=True)
class CameraConfig:
    """One fixed camera: blur in HR pixels, then the resize, noise and JPEG of a phone shot
    at high ISO (indoors, at dusk): its sensor noise is what a bicubic-trained model amplifies."""

    blur_sigma: float = 1.0  # Gaussian lens/demosaicing blur, HR pixels (0: none)
    noise_sigma: float = 15.0  # Gaussian sensor noise per channel, 8-bit levels, at LR (0: none)
    jpeg_quality: int | None = 75  # libjpeg 1-100, 4:2:0; None: saved without JPEG


CAMERA = CameraConfig()


def _uniform(n, lo, hi, g):
    return lo + (hi - lo) * torch.rand(n, generator=g, dtype=torch.float64)


def _bernoulli(n, p, g):
    return torch.rand(n, generator=g, dtype=torch.float64) < p


def _choice(n, values, g):
    return torch.as_tensor(values)[torch.randint(len(values), (n,), generator=g)]


def _categorical(n, probs, g):
    return torch.multinomial(torch.tensor(probs, dtype=torch.float64), n, True, generator=g)


def _draw_kernel(n, st: StageConfig, sizes, g) -> dict:
    size = _choice(n, sizes, g)
    kind = torch.where(
        _bernoulli(n, st.sinc_prob, g),
        KERNEL_TYPES.index("sinc"),
        _categorical(n, st.kernel_prob, g),
    )
    name = [KERNEL_TYPES[i] for i in kind.tolist()]
    iso = torch.tensor([t in ("iso", "generalized_iso", "plateau_iso") for t in name])
    generalized = torch.tensor([t.startswith("generalized") for t in name])
    plateau = torch.tensor([t.startswith("plateau") for t in name])
    sinc = kind == KERNEL_TYPES.index("sinc")
    sigma_x = _uniform(n, *st.blur_sigma, g)
    sigma_y = torch.where(iso, sigma_x, _uniform(n, *st.blur_sigma, g))
    theta = torch.where(iso, 0.0, _uniform(n, -math.pi, math.pi, g))
    # Shape parameter: half the time below 1, half above (ranges straddle 1).
    low = _bernoulli(n, 0.5, g)
    beta_g = torch.where(low, _uniform(n, st.betag[0], 1.0, g), _uniform(n, 1.0, st.betag[1], g))
    beta_p = torch.where(low, _uniform(n, st.betap[0], 1.0, g), _uniform(n, 1.0, st.betap[1], g))
    beta = torch.where(generalized, beta_g, torch.where(plateau, beta_p, 1.0))
    # Wide sinc kernels may cut lower frequencies.
    omega_lo = torch.where(size < 13, math.pi / 3, math.pi / 5)
    omega = omega_lo + (math.pi - omega_lo) * torch.rand(n, generator=g, dtype=torch.float64)
    zero = torch.zeros(n, dtype=torch.float64)
    return {
        "type": kind,
        "size": size,
        "sigma_x": torch.where(sinc, zero, sigma_x),
        "sigma_y": torch.where(sinc, zero, sigma_y),
        "theta": torch.where(sinc, zero, theta),
        "beta": torch.where(sinc, zero, beta),
        "omega": torch.where(sinc, omega, zero),
    }


def _draw_resize(n, st: StageConfig, g) -> dict:
    mode = _categorical(n, st.resize_prob, g)
    up = _uniform(n, 1.0, st.resize_range[1], g)
    down = _uniform(n, st.resize_range[0], 1.0, g)
    scale = torch.where(mode == 0, up, torch.where(mode == 1, down, 1.0))
    return {"mode": mode, "scale": scale, "interp": torch.randint(3, (n,), generator=g)}


def _draw_noise(n, st: StageConfig, g) -> dict:
    gaussian = _bernoulli(n, st.gaussian_noise_prob, g)
    sigma = _uniform(n, *st.noise_sigma, g)
    poisson = _uniform(n, *st.poisson_scale, g)
    return {
        "gaussian": gaussian,
        "sigma": torch.where(gaussian, sigma, 0.0),
        "poisson_scale": torch.where(gaussian, 0.0, poisson),
        "gray": _bernoulli(n, st.gray_noise_prob, g),
    }


def sample_params(
    n: int,
    generator: torch.Generator,
    config: RealESRGANConfig = REALESRGAN,
    shared_resize: bool = False,
) -> dict[str, torch.Tensor]:
    """Draw Real-ESRGAN parameters for n samples; a dict of CPU tensors of length n.

    Keys (stage s in 1, 2): blur{s}_{type,size,sigma_x,sigma_y,theta,beta,omega} (type indexes
    KERNEL_TYPES; values a type does not use are 0), blur2_apply; resize{s}_{mode,scale,interp}
    (mode indexes RESIZE_MODES, interp INTERP_MODES); noise{s}_{gaussian,sigma,poisson_scale,
    gray} (sigma in 8-bit levels, 0 for Poisson samples; poisson_scale 0 for Gaussian ones);
    jpeg{s}_quality (int); final_sinc_{apply,size,omega}, final_interp, final_resize_first.

    `shared_resize=True` draws the size-changing choices (resize scales and modes, final
    order) once per batch, as the original implementation does: the whole batch then runs
    as one tensor.
    """
    if n < 1:
        raise UserError(f"need at least one sample, got {n}")
    g, c = generator, config
    p: dict[str, torch.Tensor] = {}
    for s, st in ((1, c.stage1), (2, c.stage2)):
        for k, v in _draw_kernel(n, st, c.kernel_sizes, g).items():
            p[f"blur{s}_{k}"] = v
        for k, v in _draw_resize(n, st, g).items():
            p[f"resize{s}_{k}"] = v
        for k, v in _draw_noise(n, st, g).items():
            p[f"noise{s}_{k}"] = v
        lo, hi = st.jpeg_quality
        p[f"jpeg{s}_quality"] = torch.randint(lo, hi + 1, (n,), generator=g)
    p["blur2_apply"] = _bernoulli(n, c.second_blur_prob, g)
    p["final_sinc_apply"] = _bernoulli(n, c.final_sinc_prob, g)
    p["final_sinc_size"] = _choice(n, c.kernel_sizes, g)
    p["final_sinc_omega"] = _uniform(n, math.pi / 3, math.pi, g)
    p["final_interp"] = torch.randint(3, (n,), generator=g)
    p["final_resize_first"] = _bernoulli(n, c.resize_first_prob, g)
    if shared_resize:
        for k in SIZE_KEYS + ("resize1_mode", "resize2_mode"):
            p[k] = p[k][:1].expand(n).clone()
    return p
