"""PSNR and SSIM on the Y channel, with the conventions of the super-resolution literature.

The conventions (8-bit images, MATLAB's BT.601 Y, a border of `scale` pixels cropped, peak 255,
Wang et al.'s SSIM with an 11x11 Gaussian window) are stated once, in adaptsr.serve.metrics.

The numpy functions (float64, adaptsr.serve.metrics: torch-free, so deployed models are scored
without torch) make the tables; the torch functions here compute the same numbers on batches for
validation during training. `psnr_y` and `ssim_y` take either kind of input.
"""

from __future__ import annotations

import contextlib
import importlib.util
import math
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from adaptsr.adapt.devices import pick_device
from adaptsr.adapt.eval_report import METRIC_LABELS
from adaptsr.core.errors import UserError
from adaptsr.core.lazy import lazy_import
from adaptsr.serve.metrics import (
    C1,
    C2,
    CONVENTIONS,
    SSIM_WINDOW,
    Y_OFFSET,
    Y_WEIGHTS,
    gaussian_window,
    psnr_from_y,
    quantize,
    ssim_from_y,
    y_channel,
    y_pair,
)

# optional perceptual metrics: perceptual_metrics checks that they are installed first
lpips = lazy_import("lpips")
piq = lazy_import("piq")

__all__ = ["psnr_y", "ssim_y", "psnr_y_torch", "ssim_y_torch", "perceptual_metrics", "y_channel",
           "y_pair", "psnr_from_y", "ssim_from_y", "quantize", "CONVENTIONS"]  # fmt: skip


def _is_torch(x) -> bool:
    return type(x).__module__.split(".")[0] == "torch"


def psnr_y(sr, hr, crop: int = 0, gray: bool = False):
    """Y-channel PSNR. numpy: HxWx3 RGB ([0, 1] floats or uint8) -> float.
    torch: (N, 3, H, W) or (3, H, W) in [0, 1] -> tensor of N values (or a scalar).
    gray: score as a grayscale file (see y_channel)."""
    if _is_torch(sr) or _is_torch(hr):
        return psnr_y_torch(sr, hr, crop, gray)
    return psnr_from_y(*y_pair(sr, hr, crop, gray))


def ssim_y(sr, hr, crop: int = 0, gray: bool = False):
    """Y-channel SSIM; same inputs and outputs as psnr_y."""
    if _is_torch(sr) or _is_torch(hr):
        return ssim_y_torch(sr, hr, crop, gray)
    return ssim_from_y(*y_pair(sr, hr, crop, gray))


# ---------------------------------------------------------------------------------------------
# torch (batched, float64 so that it matches the numpy numbers)


def _y_torch(img, crop: int, gray: bool = False):
    if img.ndim == 3:
        img = img.unsqueeze(0)
    if img.ndim != 4 or img.shape[1] not in (1, 3):
        raise UserError(f"expected (N, 3, H, W) images, got shape {tuple(img.shape)}")
    q = torch.floor(img.detach().to(torch.float64).clamp(0.0, 1.0) * 255.0 + 0.5) / 255.0
    if q.shape[1] == 1:
        q = q.expand(-1, 3, -1, -1)
    w = torch.tensor(Y_WEIGHTS, dtype=torch.float64, device=q.device).view(1, 3, 1, 1)
    y = (q * w).sum(dim=1, keepdim=True)
    y = y * (255.0 / sum(Y_WEIGHTS)) if gray else Y_OFFSET + y
    if crop > 0:
        if y.shape[2] <= 2 * crop or y.shape[3] <= 2 * crop:
            raise UserError(f"images of {y.shape[3]}x{y.shape[2]} too small for a {crop}-px border")
        y = y[:, :, crop:-crop, crop:-crop]
    return y


def _pair_torch(sr, hr, crop: int, gray: bool):
    squeeze = sr.ndim == 3
    a, b = _y_torch(sr, crop, gray), _y_torch(hr.to(sr.device), crop, gray)
    if a.shape != b.shape:
        raise UserError(f"size mismatch: {tuple(sr.shape)} vs {tuple(hr.shape)}")
    return a, b, squeeze


def psnr_y_torch(sr, hr, crop: int = 0, gray: bool = False):
    a, b, squeeze = _pair_torch(sr, hr, crop, gray)
    mse = ((a - b) ** 2).mean(dim=(1, 2, 3))
    out = torch.where(mse == 0, torch.full_like(mse, math.inf), 10 * torch.log10(255.0**2 / mse))
    return out[0] if squeeze else out


def ssim_y_torch(sr, hr, crop: int = 0, gray: bool = False):
    x, y, squeeze = _pair_torch(sr, hr, crop, gray)
    if min(x.shape[2:]) < SSIM_WINDOW:
        raise UserError(f"SSIM needs at least {SSIM_WINDOW}x{SSIM_WINDOW} pixels")
    g = torch.from_numpy(gaussian_window()).to(x.device)
    gv, gh = g.view(1, 1, -1, 1), g.view(1, 1, 1, -1)

    def filt(t):
        return F.conv2d(F.conv2d(t, gv), gh)

    mx, my = filt(x), filt(y)
    sxx = filt(x * x) - mx * mx
    syy = filt(y * y) - my * my
    sxy = filt(x * y) - mx * my
    num = (2 * mx * my + C1) * (2 * sxy + C2)
    den = (mx * mx + my * my + C1) * (sxx + syy + C2)
    out = (num / den).mean(dim=(1, 2, 3))
    return out[0] if squeeze else out


# ---------------------------------------------------------------------------------------------
# LPIPS and DISTS (the `metrics` extra), from local weights only; HaarPSI and MS-GMSD (piq)

WEIGHTS_ENV = "ADAPTSR_WEIGHTS"
# file names as torch.hub caches them; LPIPS's own linear layers ship inside the lpips package
PERCEPTUAL_FILES = {
    "lpips": ("alexnet-owt-7be5be79.pth",),
    "dists": ("vgg16-397923af.pth", "dists_weights.pt"),
}
# weight-free indices of piq: HaarPSI (higher is better, 1 for identical images) and MS-GMSD
# (lower is better, 0 for identical images); each needs images of at least this side
MIN_SIDE = {"haarpsi": 16, "ms_gmsd": 17}
PERCEPTUAL_NAMES = ("lpips", "dists", "haarpsi", "ms_gmsd")
WEIGHT_URLS = {
    "alexnet-owt-7be5be79.pth": "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth",
    "vgg16-397923af.pth": "https://download.pytorch.org/models/vgg16-397923af.pth",
    "dists_weights.pt": "https://github.com/photosynthesis-team/piq/releases/download/v0.4.1/"
    "dists_weights.pt",
}


def weights_dir() -> Path:
    """$ADAPTSR_WEIGHTS, else ~/.cache/adaptsr/weights."""
    env = os.environ.get(WEIGHTS_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "adaptsr" / "weights"


@contextlib.contextmanager
def local_hub(folder: Path) -> Iterator[None]:
    """Within the block torch.hub (and torchvision) read weights from `folder` and never
    download: a missing file raises UserError instead of reaching the network."""
    old_dir, old_download = torch.hub.get_dir(), torch.hub.download_url_to_file

    def refuse(url, dst, *args, **kwargs):
        name = url.rsplit("/", 1)[-1]
        raise UserError(f"{name} is not in {folder}: weights are never downloaded ({url})")

    with tempfile.TemporaryDirectory() as hub:
        # torch.hub looks for <hub dir>/checkpoints/<file name>
        os.symlink(Path(folder).resolve(), Path(hub) / "checkpoints")
        torch.hub.set_dir(hub)
        torch.hub.download_url_to_file = refuse
        try:
            yield
        finally:
            torch.hub.set_dir(old_dir)
            torch.hub.download_url_to_file = old_download


def _rgb_tensor(img: np.ndarray, crop: int, device):
    q = quantize(img) / 255.0
    if crop:
        q = q[crop:-crop, crop:-crop]
    return torch.from_numpy(q).permute(2, 0, 1)[None].float().to(device)


def _build(name: str, device) -> Callable:
    """The metric as fn(x, y) on (1, 3, H, W) tensors in [0, 1]."""
    if name == "lpips":
        net = lpips.LPIPS(net="alex", version="0.1", verbose=False).eval().to(device)
        return lambda x, y: net(x, y, normalize=True)
    if name == "haarpsi":
        return lambda x, y: piq.haarpsi(x, y, data_range=1.0, reduction="none")
    if name == "ms_gmsd":
        return lambda x, y: piq.multi_scale_gmsd(x, y, data_range=1.0, reduction="none")
    return piq.DISTS(reduction="none").eval().to(device)


def _missing_note(name: str, folder: Path) -> str | None:
    """Why metric `name` cannot be computed here (its package or weight files), or None."""
    package = "lpips" if name == "lpips" else "piq"
    label = METRIC_LABELS[name]
    if importlib.util.find_spec(package) is None:
        return f"{label} skipped: the {package} package is missing (pip install 'adaptsr[metrics]')"
    missing = [f for f in PERCEPTUAL_FILES.get(name, ()) if not (folder / f).is_file()]
    if missing:
        where = ", ".join(f"{f} ({WEIGHT_URLS[f]})" for f in missing)
        return f"{label} skipped: put {where} in {folder} (or set ${WEIGHTS_ENV})"
    return None


def perceptual_metrics(
    names: tuple[str, ...] = ("lpips", "dists"), device: str = "auto"
) -> tuple[dict[str, Callable], list[str]]:
    """{name: fn(sr, hr, crop) -> float or None} for the metrics whose package and weights are
    present, and one note for each that is not, saying what to install or where to put which
    file. HaarPSI and MS-GMSD need no weights; fn gives None for an image smaller than the
    index's least side (the image is left out of that index's mean)."""
    device = pick_device(device)
    folder = weights_dir()
    fns: dict[str, Callable] = {}
    notes: list[str] = []
    for name in names:
        note = _missing_note(name, folder)
        if note is not None:
            notes.append(note)
            continue
        with local_hub(folder):
            net = _build(name, device)

        def fn(sr, hr, crop, net=net, least=MIN_SIDE.get(name, 1)):
            x, y = _rgb_tensor(sr, crop, device), _rgb_tensor(hr, crop, device)
            if min(x.shape[-2:]) < least:
                return None
            with torch.no_grad():
                value = net(x, y)
            return float(value.reshape(-1)[0])

        fns[name] = fn
    return fns, notes
