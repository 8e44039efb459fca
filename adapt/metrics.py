"""PSNR and SSIM on the Y channel, with the conventions of the super-resolution literature.

The numbers in SR papers come from the MATLAB evaluation scripts (and their Python ports):

- the images are 8-bit (model outputs are rounded to 8 bits before scoring);
- Y is BT.601 luma as MATLAB's `rgb2ycbcr` computes it on double input, not rounded:
  Y = 16 + 65.481 R + 128.553 G + 24.966 B for R, G, B in [0, 1], so Y lies in [16, 235];
  a grayscale file is scored on its one channel in [0, 255], as the MATLAB scripts do;
- a border of `scale` pixels is cropped on every side;
- PSNR uses a peak of 255; SSIM is Wang et al.'s index with an 11x11 Gaussian window of sigma
  1.5, K1 = 0.01, K2 = 0.03, L = 255, computed over the 'valid' part of the filtering only and
  averaged (no automatic downscaling).

The numpy functions (float64) make the tables; the torch functions compute the same numbers on
batches for validation during training. `psnr_y` and `ssim_y` take either kind of input.
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
from adaptsr.core.errors import UserError
from adaptsr.core.lazy import lazy_import

# optional perceptual metrics: perceptual_metrics checks that they are installed first
lpips = lazy_import("lpips")
piq = lazy_import("piq")

# MATLAB rgb2ycbcr, Y row, for RGB in [0, 1] -> Y in [16, 235]
Y_WEIGHTS = (65.481, 128.553, 24.966)
Y_OFFSET = 16.0

SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1, SSIM_K2, SSIM_L = 0.01, 0.03, 255.0
C1 = (SSIM_K1 * SSIM_L) ** 2
C2 = (SSIM_K2 * SSIM_L) ** 2


def gaussian_window(size: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA) -> np.ndarray:
    """The 1-D normalised Gaussian whose outer product is MATLAB's fspecial('gaussian', ...)."""
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2
    g = np.exp(-(x**2) / (2 * sigma**2))
    return g / g.sum()


# ---------------------------------------------------------------------------------------------
# numpy (float64)


def quantize(img: np.ndarray) -> np.ndarray:
    """An image as 8-bit values (float64 in 0..255): uint8 as is, [0, 1] floats rounded."""
    img = np.asarray(img)
    if img.dtype == np.uint8:
        return img.astype(np.float64)
    if img.dtype == np.uint16:
        raise UserError("16-bit arrays: convert to [0, 1] floats before scoring")
    return np.floor(np.clip(img.astype(np.float64), 0.0, 1.0) * 255.0 + 0.5)


def y_channel(img: np.ndarray, gray: bool = False) -> np.ndarray:
    """BT.601 Y (float64) of an HxWx3 RGB image: studio range [16, 235] as MATLAB's rgb2ycbcr.

    gray=True is for images whose file is grayscale: the MATLAB evaluation scripts score such
    an image's single channel directly, in [0, 255]; for RGB input (a model's output for a gray
    image) that is full-range BT.601 luma, which equals the gray value when R = G = B.
    """
    q = quantize(img) / 255.0
    if q.ndim == 3 and q.shape[2] == 1:
        q = q[:, :, 0]
    if q.ndim == 2:  # one channel: R = G = B
        q = np.repeat(q[:, :, None], 3, axis=2)
    if q.ndim != 3 or q.shape[2] != 3:
        raise UserError(f"expected an HxWx3 RGB image, got shape {q.shape}")
    r, g, b = q[:, :, 0], q[:, :, 1], q[:, :, 2]
    y = Y_WEIGHTS[0] * r + Y_WEIGHTS[1] * g + Y_WEIGHTS[2] * b
    if gray:
        return y * (255.0 / sum(Y_WEIGHTS))
    return Y_OFFSET + y


def _crop(y: np.ndarray, crop: int) -> np.ndarray:
    if crop < 0:
        raise UserError(f"crop must be >= 0, got {crop}")
    if crop == 0:
        return y
    if y.shape[0] <= 2 * crop or y.shape[1] <= 2 * crop:
        raise UserError(f"image of {y.shape[1]}x{y.shape[0]} is too small for a {crop}-px border")
    return y[crop:-crop, crop:-crop]


def y_pair(sr, hr, crop: int, gray: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """The Y channels of an output and its reference, checked and border-cropped."""
    a, b = y_channel(sr, gray), y_channel(hr, gray)
    if a.shape != b.shape:
        raise UserError(f"size mismatch: {a.shape[1]}x{a.shape[0]} vs {b.shape[1]}x{b.shape[0]}")
    return _crop(a, crop), _crop(b, crop)


def psnr_from_y(y1: np.ndarray, y2: np.ndarray) -> float:
    """PSNR (dB, peak 255) between two Y planes; inf for identical planes."""
    mse = float(np.mean((np.asarray(y1, np.float64) - np.asarray(y2, np.float64)) ** 2))
    return math.inf if mse == 0 else 10.0 * math.log10(255.0**2 / mse)


def _filter_valid(img: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Separable 'valid' correlation with the 1-D window g along both axes."""
    n = len(g)
    h, w = img.shape
    rows = sum(g[k] * img[k : h - n + 1 + k, :] for k in range(n))
    return sum(g[k] * rows[:, k : w - n + 1 + k] for k in range(n))


def ssim_from_y(y1: np.ndarray, y2: np.ndarray) -> float:
    """Mean SSIM (Wang et al. 2004) between two Y planes in [0, 255]."""
    x = np.asarray(y1, np.float64)
    y = np.asarray(y2, np.float64)
    if min(x.shape) < SSIM_WINDOW:
        raise UserError(f"SSIM needs at least {SSIM_WINDOW}x{SSIM_WINDOW} pixels, got {x.shape}")
    g = gaussian_window()
    mx, my = _filter_valid(x, g), _filter_valid(y, g)
    sxx = _filter_valid(x * x, g) - mx * mx
    syy = _filter_valid(y * y, g) - my * my
    sxy = _filter_valid(x * y, g) - mx * my
    num = (2 * mx * my + C1) * (2 * sxy + C2)
    den = (mx * mx + my * my + C1) * (sxx + syy + C2)
    return float(np.mean(num / den))


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
# LPIPS and DISTS (the `metrics` extra), from local weights only

CONVENTIONS = (
    "PSNR/SSIM on BT.601 Y (MATLAB rgb2ycbcr; grayscale files on their one channel), "
    "8-bit rounded, border of scale px cropped; SSIM: 11x11 Gaussian sigma 1.5, K1 0.01, "
    "K2 0.03, L 255, valid filtering; LPIPS (AlexNet, v0.1) and DISTS on RGB, same crop"
)
WEIGHTS_ENV = "ADAPTSR_WEIGHTS"
# file names as torch.hub caches them; LPIPS's own linear layers ship inside the lpips package
PERCEPTUAL_FILES = {
    "lpips": ("alexnet-owt-7be5be79.pth",),
    "dists": ("vgg16-397923af.pth", "dists_weights.pt"),
}
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
    return piq.DISTS(reduction="none").eval().to(device)


def perceptual_metrics(
    names: tuple[str, ...] = ("lpips", "dists"), device: str = "auto"
) -> tuple[dict[str, Callable], list[str]]:
    """{name: fn(sr, hr, crop) -> float} for the metrics whose package and weights are present,
    and one note for each that is not, saying what to install or where to put which file."""
    device = pick_device(device)
    folder = weights_dir()
    fns: dict[str, Callable] = {}
    notes: list[str] = []
    for name in names:
        package = "lpips" if name == "lpips" else "piq"
        if importlib.util.find_spec(package) is None:
            notes.append(
                f"{name.upper()} skipped: the {package} package is missing "
                "(pip install 'adaptsr[metrics]')"
            )
            continue
        missing = [f for f in PERCEPTUAL_FILES[name] if not (folder / f).is_file()]
        if missing:
            where = ", ".join(f"{f} ({WEIGHT_URLS[f]})" for f in missing)
            notes.append(f"{name.upper()} skipped: put {where} in {folder} (or set ${WEIGHTS_ENV})")
            continue
        with local_hub(folder):
            net = _build(name, device)

        def fn(sr, hr, crop, net=net):
            with torch.no_grad():
                value = net(_rgb_tensor(sr, crop, device), _rgb_tensor(hr, crop, device))
            return float(value.reshape(-1)[0])

        fns[name] = fn
    return fns, notes
