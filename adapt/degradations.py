"""On-the-fly LR synthesis from HR batches: MATLAB bicubic, the Real-ESRGAN pipeline, or one
fixed camera.

`Degrader(kind, scale, seed, device)(hr)` turns a (B, 3, H, W) batch in [0, 1] into its
(B, 3, H/scale, W/scale) LR batch, clamped and rounded to 8-bit values. Everything runs on the
batch's device. Parameters are drawn per sample on the CPU from a seeded generator (so they are
the same on every device) by `sample_params` (adapt/degradation_params.py, beside the settings);
noise fields come from a second generator on the device. The same seed gives the same sequence
of batches.

The Real-ESRGAN second-order model (Wang et al., 2021), per sample:
blur (kernel1) -> resize -> noise -> JPEG -> blur (kernel2, p=0.8) -> resize -> noise ->
{resize to H/scale + sinc (p=0.8), JPEG} in random order -> clamp and round to 8 bits.
Defaults: `REALESRGAN`; docs/degradations.md lists them.

"camera" is one fixed, camera-like degradation (`CAMERA`): the same lens blur, sensor noise
level and JPEG quality for every image, only the noise field differs. It stands for the case
the method is for: one device whose LR images a bicubic-trained model has never seen.
"""

from __future__ import annotations

import argparse
import math
import os
import time

import torch
import torch.nn.functional as F

from adaptsr.adapt.blur import KERNEL_TYPES, filter2d, make_kernels, pulse
from adaptsr.adapt.degradation_file import TYPES, Settings, settings_of
from adaptsr.adapt.degradation_params import (
    BICUBIC,
    CAMERA,
    INTERP_MODES,
    KINDS,
    REALESRGAN,
    RESIZE_MODES,
    SIZE_KEYS,
    BicubicConfig,
    CameraConfig,
    RealESRGANConfig,
    StageConfig,
    sample_params,
)
from adaptsr.adapt.imresize import imresize
from adaptsr.adapt.jpeg import jpeg
from adaptsr.core.errors import UserError

__all__ = [
    "BICUBIC",
    "BicubicConfig",
    "INTERP_MODES",
    "KINDS",
    "CAMERA",
    "REALESRGAN",
    "CameraConfig",
    "RESIZE_MODES",
    "Degrader",
    "RealESRGANConfig",
    "StageConfig",
    "apply_camera",
    "apply_realesrgan",
    "degradations_per_second",
    "quantize8",
    "sample_params",
]


def _stage_kernels(p, s, device):
    return make_kernels(
        p[f"blur{s}_type"],
        p[f"blur{s}_size"],
        p[f"blur{s}_sigma_x"],
        p[f"blur{s}_sigma_y"],
        p[f"blur{s}_theta"],
        p[f"blur{s}_beta"],
        p[f"blur{s}_omega"],
        device=device,
    )


def _final_sinc(p, device):
    n = len(p["final_sinc_size"])
    sinc = make_kernels(
        torch.full((n,), KERNEL_TYPES.index("sinc")),
        p["final_sinc_size"],
        *(torch.zeros(n),) * 4,
        p["final_sinc_omega"],
        device=device,
    )
    apply = p["final_sinc_apply"].to(device)[:, None, None]
    return torch.where(apply, sinc, pulse(n, device=device))


def _resize(x, size, interp):
    size = (max(1, int(size[0])), max(1, int(size[1])))
    mode = INTERP_MODES[int(interp)]
    if mode == "area":
        return F.interpolate(x, size=size, mode="area")
    return F.interpolate(x, size=size, mode=mode, align_corners=False)


def _unique_levels(v: torch.Tensor) -> torch.Tensor:
    """Per image (B, C, H, W) of 8-bit values: 2^ceil(log2(number of distinct levels))."""
    b = v.shape[0]
    idx = torch.round(v * 255).long().reshape(b, -1)
    ones = torch.ones_like(idx, dtype=torch.float)
    counts = torch.zeros(b, 256, device=v.device).scatter_add_(1, idx, ones)
    distinct = (counts > 0).sum(1).float()
    return torch.exp2(torch.ceil(torch.log2(distinct))).reshape(b, 1, 1, 1)


def _poisson_noise(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Shot noise with as many photon levels as the image has distinct 8-bit values."""
    v = torch.round(x.clamp(0, 1) * 255) / 255
    vals = _unique_levels(v)
    return torch.poisson(v * vals, generator=g) / vals - v


def add_noise(x: torch.Tensor, p: dict, s: int, g: torch.Generator) -> torch.Tensor:
    """Stage s noise per sample: Gaussian (color or gray) or Poisson (color or gray), clipped.

    The draws in `p` are CPU tensors, so noise kinds no sample uses are skipped without a
    device sync.
    """
    b, c, h, w = x.shape
    dev = x.device
    gaussian, gray = p[f"noise{s}_gaussian"], p[f"noise{s}_gray"]

    def col(t):
        return t.to(device=dev).reshape(b, 1, 1, 1)

    def pick(mask, make_true, make_false):
        # Build only the fields some sample needs.
        if bool(mask.all()):
            return make_true()
        if not bool(mask.any()):
            return make_false()
        return torch.where(col(mask), make_true(), make_false())

    def color_gauss():
        return torch.randn(b, c, h, w, generator=g, device=dev)

    def gray_gauss():
        return torch.randn(b, 1, h, w, generator=g, device=dev).expand(b, c, h, w)

    def color_poisson():
        return _poisson_noise(x, g)

    def gray_poisson():
        # Gray Poisson noise comes from the BT.601 luma and is shared by the three channels.
        luma = 0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]
        return _poisson_noise(luma, g).expand(b, c, h, w)

    def gauss():
        sigma = col(p[f"noise{s}_sigma"]).to(x.dtype) / 255
        return pick(gray, gray_gauss, color_gauss) * sigma

    def poisson():
        scale = col(p[f"noise{s}_poisson_scale"]).to(x.dtype)
        return pick(gray, gray_poisson, color_poisson) * scale

    return (x + pick(gaussian, gauss, poisson)).clamp(0, 1)


def _select(p: dict, idx: torch.Tensor) -> dict:
    return {k: v[idx] for k, v in p.items()}


def _tail(x, p, kernel2, sinc, out_hw, g):
    """Everything after the first blur, for samples that share their size-changing choices."""
    h, w = x.shape[-2:]
    s1 = float(p["resize1_scale"][0])
    x = _resize(x, (h * s1, w * s1), p["resize1_interp"][0])
    x = add_noise(x, p, 1, g)
    x = jpeg(x, p["jpeg1_quality"])
    blur2 = p["blur2_apply"].to(x.device)[:, None, None]
    kernel2 = torch.where(blur2, kernel2, pulse(len(kernel2), device=x.device))
    x = filter2d(x, kernel2, _support(p["blur2_size"], p["blur2_apply"]))
    s2 = float(p["resize2_scale"][0])
    x = _resize(x, (out_hw[0] * s2, out_hw[1] * s2), p["resize2_interp"][0])
    x = add_noise(x, p, 2, g)
    q2 = p["jpeg2_quality"]
    sinc_support = _support(p["final_sinc_size"], p["final_sinc_apply"])
    if bool(p["final_resize_first"][0]):
        x = filter2d(_resize(x, out_hw, p["final_interp"][0]), sinc, sinc_support)
        x = jpeg(x, q2)
    else:
        x = jpeg(x, q2)
        x = filter2d(_resize(x, out_hw, p["final_interp"][0]), sinc, sinc_support)
    return x


def _support(size: torch.Tensor, applied: torch.Tensor | None = None) -> int:
    """Largest kernel support in a group (1 where the filter is off), from the CPU draws."""
    if applied is not None:
        size = torch.where(applied, size, 1)
    return int(size.max())


def apply_realesrgan(
    hr: torch.Tensor, params: dict, scale: int, generator: torch.Generator
) -> torch.Tensor:
    """Degrade hr (B, 3, H, W) with drawn `params` (from sample_params) to (B, 3, H/s, W/s).

    Not yet rounded to 8 bits (see quantize8). `generator` must live on hr's device.
    """
    b, _, h, w = hr.shape
    dev = hr.device
    out_hw = (h // scale, w // scale)
    x = filter2d(hr, _stage_kernels(params, 1, dev), _support(params["blur1_size"]))
    kernel2 = _stage_kernels(params, 2, dev)
    sinc = _final_sinc(params, dev)
    # Resize draws give each sample its own intermediate size: run groups of equal sizes.
    keys = torch.stack([params[k].double() for k in SIZE_KEYS], 1)
    groups: dict[tuple, list[int]] = {}
    for i, row in enumerate(keys.tolist()):
        groups.setdefault(tuple(row), []).append(i)
    out = torch.empty(b, 3, *out_hw, device=dev, dtype=hr.dtype)
    for members in groups.values():
        idx = torch.tensor(members)
        idx_d = idx.to(dev)
        out[idx_d] = _tail(
            x[idx_d], _select(params, idx), kernel2[idx_d], sinc[idx_d], out_hw, generator
        )
    return out


def apply_camera(
    x: torch.Tensor, scale: int, g: torch.Generator, config: CameraConfig = CAMERA
) -> torch.Tensor:
    """blur (HR pixels, on the HR image) -> MATLAB bicubic down by `scale` -> Gaussian noise
    (8-bit levels, on the LR image) -> JPEG (4:2:0), the same for every image of the batch;
    `g` (on x's device) draws the noise field. A step whose setting is 0 (None for JPEG) is
    skipped."""
    if config.blur_sigma > 0:
        x = filter2d(x, _gaussian_kernels(x.shape[0], config.blur_sigma, x.device))
    lr = imresize(x, 1 / scale)
    if config.noise_sigma > 0:
        noise = torch.randn(lr.shape, generator=g, device=lr.device, dtype=lr.dtype)
        lr = (lr + noise * (config.noise_sigma / 255)).clamp(0, 1)
    if config.jpeg_quality is None:
        return lr
    return jpeg(lr, config.jpeg_quality)


def _gaussian_kernels(n: int, sigma: float, device) -> torch.Tensor:
    size = 2 * math.ceil(3 * sigma) + 1  # +-3 sigma holds 99.7% of the kernel
    ones = torch.ones(n, dtype=torch.float64)
    return make_kernels(
        kind=torch.zeros(n, dtype=torch.long),  # KERNEL_TYPES[0]: isotropic Gaussian
        size=ones * size,
        sigma_x=ones * sigma,
        sigma_y=ones * sigma,
        theta=ones * 0,
        beta=ones,
        omega=ones * 0,
        pad_to=size,
        device=device,
    )


def quantize8(x: torch.Tensor) -> torch.Tensor:
    """Clamp to [0, 1] and round to 8-bit levels, as a saved LR image would be."""
    return torch.round(x.clamp(0, 1) * 255) / 255


class Degrader:
    """Seeded, batched HR -> LR synthesis on one device.

    kind: a preset name ("bicubic": MATLAB imresize, "realesrgan", "camera": `CAMERA`), a
    degradation file (TOML or JSON, adapt/degradation_file.py), or the settings themselves
    (BicubicConfig, RealESRGANConfig or CameraConfig).
    `per_sample_resize=False` shares the Real-ESRGAN resize draws across a batch (the original
    implementation's choice; faster, fully batched).
    """

    def __init__(
        self,
        kind: str | os.PathLike | Settings,
        scale: int,
        seed: int = 0,
        device="cpu",
        config: RealESRGANConfig | None = None,
        per_sample_resize: bool = True,
    ):
        settings = settings_of(kind)
        if config is not None:  # the older spelling: a name and the Real-ESRGAN settings
            settings = config if isinstance(settings, RealESRGANConfig) else settings
        if int(scale) != scale or scale < 1:
            raise UserError(f"scale must be a positive integer, got {scale}")
        self.settings = settings
        self.kind = TYPES[type(settings)]
        self.scale, self.seed = int(scale), int(seed)
        self.device = torch.device(device)
        self.config = settings if isinstance(settings, RealESRGANConfig) else REALESRGAN
        self.per_sample_resize = per_sample_resize
        # Parameters on the CPU (identical across devices); noise fields on the device.
        self.param_generator = torch.Generator("cpu").manual_seed(self.seed)
        self.noise_generator = torch.Generator(self.device).manual_seed(self.seed + 1)

    def sample_params(self, n: int) -> dict[str, torch.Tensor]:
        return sample_params(n, self.param_generator, self.config, not self.per_sample_resize)

    def __call__(self, hr: torch.Tensor) -> torch.Tensor:
        if hr.dim() != 4 or hr.shape[1] != 3 or not hr.is_floating_point():
            raise UserError(f"expected a float RGB batch (B, 3, H, W), got {tuple(hr.shape)}")
        h, w = hr.shape[-2:]
        if h % self.scale or w % self.scale:
            raise UserError(f"HR size {h}x{w} is not a multiple of the scale {self.scale}")
        x = hr.to(device=self.device, dtype=torch.float32)
        if self.kind == "bicubic":
            lr = imresize(x, 1 / self.scale)
        elif self.kind == "camera":
            lr = apply_camera(x, self.scale, self.noise_generator, self.settings)
        else:
            params = self.sample_params(x.shape[0])
            lr = apply_realesrgan(x, params, self.scale, self.noise_generator)
        return quantize8(lr).to(hr.dtype)

    def state_dict(self) -> dict:
        """Generator states, for resuming a run exactly."""
        return {
            "param_generator": self.param_generator.get_state(),
            "noise_generator": self.noise_generator.get_state(),
        }

    def load_state_dict(self, state: dict) -> None:
        self.param_generator.set_state(state["param_generator"])
        self.noise_generator.set_state(state["noise_generator"])


def degradations_per_second(
    kind: str,
    batch: int = 8,
    hr_size: int = 256,
    device="cpu",
    scale: int = 4,
    iters: int = 5,
    warmup: int = 1,
    per_sample_resize: bool = True,
    clock: str = "wall",
) -> float:
    """Throughput in degraded samples per second (median over `iters` timed batches).

    clock="process" divides by this process's CPU time instead of wall time: on a shared
    machine it is less sensitive to other load (CPU runs only; it ignores GPU time).
    """
    if clock not in ("wall", "process"):
        raise UserError(f"clock must be 'wall' or 'process', got {clock!r}")
    timer = time.perf_counter if clock == "wall" else time.process_time
    dev = torch.device(device)
    deg = Degrader(kind, scale, seed=0, device=dev, per_sample_resize=per_sample_resize)
    g = torch.Generator(dev).manual_seed(0)
    hr = torch.rand(batch, 3, hr_size, hr_size, generator=g, device=dev)
    times = []
    for i in range(warmup + iters):
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        t0 = timer()
        deg(hr)
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        if i >= warmup:
            times.append(timer() - t0)
    times.sort()
    return batch / times[len(times) // 2]


def _main(argv=None) -> None:
    ap = argparse.ArgumentParser(
        prog="python -m adaptsr.adapt.degradations",
        description="Measure degradation throughput (samples per second).",
    )
    ap.add_argument("--bench", action="store_true", help="run the throughput measurement")
    ap.add_argument("--kind", choices=KINDS + ("all",), default="all")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--hr-size", type=int, default=256)
    ap.add_argument("--scale", type=int, default=4)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch's default)")
    ap.add_argument(
        "--shared-resize", action="store_true", help="one set of resize draws per batch"
    )
    args = ap.parse_args(argv)
    if not args.bench:
        ap.print_help()
        return
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    kinds = KINDS if args.kind == "all" else (args.kind,)
    for kind in kinds:
        rates = [
            degradations_per_second(
                kind,
                args.batch,
                args.hr_size,
                args.device,
                args.scale,
                args.iters,
                per_sample_resize=not args.shared_resize,
                clock=clock,
            )
            for clock in (("wall", "process") if args.device == "cpu" else ("wall",))
        ]
        per_cpu = f", {rates[1]:.1f} per CPU-second" if len(rates) > 1 else ""
        mode = ", shared resize" if args.shared_resize and kind == "realesrgan" else ""
        print(
            f"{kind}: {rates[0]:.1f} degradations/s{per_cpu} (batch {args.batch}, HR "
            f"{args.hr_size}x{args.hr_size}, x{args.scale}, {args.device}, "
            f"{torch.get_num_threads()} threads{mode})"
        )


if __name__ == "__main__":
    _main()
