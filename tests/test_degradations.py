"""Degradations (adapt.degradations): noise, the Real-ESRGAN and camera pipelines, throughput.
Their parts have their own files: test_imresize.py, test_blur.py, test_jpeg.py,
test_degradation_params.py."""

import math

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from adaptsr.adapt import degradations as D
from adaptsr.adapt.imresize import imresize
from adaptsr.core.errors import UserError

# Many small ops: one thread avoids OpenMP oversubscription on busy 2-core machines.
pytestmark = pytest.mark.usefixtures("one_thread")


def _psnr(a, b):
    return 10 * np.log10(255**2 / np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))


# ---------------------------------------------------------------- noise


def test_gaussian_noise_level_and_gray():
    x = torch.full((2, 3, 96, 96), 0.5)
    p = {
        "noise1_gaussian": torch.tensor([True, True]),
        "noise1_sigma": torch.tensor([10.0, 20.0], dtype=torch.float64),
        "noise1_poisson_scale": torch.zeros(2, dtype=torch.float64),
        "noise1_gray": torch.tensor([False, True]),
    }
    n = D.add_noise(x, p, 1, torch.Generator().manual_seed(0)) - x
    assert abs(float(n[0].std()) * 255 / 10 - 1) < 0.03
    assert abs(float(n[1].std()) * 255 / 20 - 1) < 0.03
    assert torch.equal(n[1, 0], n[1, 2]) and not torch.equal(n[0, 0], n[0, 2])


def test_poisson_noise_variance_follows_distinct_levels():
    # 100 distinct 8-bit levels -> 128 "photon" levels: var(noise) = v / 128 * scale^2.
    levels = torch.arange(80, 180).float() / 255
    x = levels.repeat(3, 60, 1)[None].expand(1, 3, 60, 100).contiguous()
    p = {
        "noise1_gaussian": torch.tensor([False]),
        "noise1_sigma": torch.zeros(1, dtype=torch.float64),
        "noise1_poisson_scale": torch.tensor([0.5], dtype=torch.float64),
        "noise1_gray": torch.tensor([False]),
    }
    n = D.add_noise(x, p, 1, torch.Generator().manual_seed(0)) - x
    expected = float(x.mean()) / 128 * 0.25
    assert abs(float(n.var()) / expected - 1) < 0.05


# ---------------------------------------------------------------- the pipeline


def test_bicubic_degrader_is_rounded_matlab_resize():
    hr = torch.rand(2, 3, 32, 48, generator=torch.Generator().manual_seed(0))
    lr = D.Degrader("bicubic", 4)(hr)
    torch.testing.assert_close(lr, torch.round(imresize(hr, 0.25).clamp(0, 1) * 255) / 255)
    assert lr.shape == (2, 3, 8, 12)


@pytest.mark.parametrize("per_sample", [True, False])
def test_realesrgan_batches_are_seeded_and_valid(per_sample):
    hr = torch.rand(6, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    a = D.Degrader("realesrgan", 4, seed=7, per_sample_resize=per_sample)
    b = D.Degrader("realesrgan", 4, seed=7, per_sample_resize=per_sample)
    first = a(hr)
    assert first.shape == (6, 3, 16, 16)
    assert first.min() >= 0 and first.max() <= 1
    assert torch.equal(torch.round(first * 255), first * 255)
    assert torch.equal(first, b(hr))  # same seed, same batch
    state = a.state_dict()
    second = a(hr)
    assert not torch.equal(first, second)  # the stream moves on
    b.load_state_dict(state)
    assert torch.equal(second, b(hr))  # resuming from a saved state continues exactly
    other = D.Degrader("realesrgan", 4, seed=8, per_sample_resize=per_sample)(hr)
    assert not torch.equal(first, other)
    assert not torch.equal(first[0], first[1])  # per-sample draws


def test_realesrgan_keeps_flat_gray_without_noise():
    # Every blur, resize and JPEG step preserves a flat mid-gray image; only noise may move it.
    n = 12
    p = D.sample_params(n, torch.Generator().manual_seed(3))
    for s in (1, 2):
        p[f"noise{s}_gaussian"] = torch.ones(n, dtype=torch.bool)
        p[f"noise{s}_sigma"] = torch.zeros(n, dtype=torch.float64)
    hr = torch.full((n, 3, 64, 64), 128 / 255)
    lr = D.quantize8(D.apply_realesrgan(hr, p, 4, torch.Generator().manual_seed(0)))
    assert lr.shape == (n, 3, 16, 16)
    torch.testing.assert_close(lr, torch.full_like(lr, 128 / 255), atol=0, rtol=0)


def test_realesrgan_output_degrades_a_sharp_image():
    # Blur, noise and JPEG leave the LR far from the clean bicubic LR on average.
    g = torch.Generator().manual_seed(0)
    hr = (torch.rand(8, 1, 16, 16, generator=g) > 0.5).float()
    hr = F.interpolate(hr, scale_factor=4, mode="nearest").expand(8, 3, 64, 64).contiguous()
    clean = D.Degrader("bicubic", 4)(hr)
    real = D.Degrader("realesrgan", 4, seed=0)(hr)
    assert float((real - clean).abs().mean()) > 0.05


def test_realesrgan_handles_tiny_and_odd_shapes():
    # Stage-2 sizes shrink to a few pixels: reflection padding falls back, JPEG pads to MCUs.
    for seed in range(4):
        hr = torch.rand(5, 3, 8, 20, generator=torch.Generator().manual_seed(seed))
        lr = D.Degrader("realesrgan", 4, seed=seed)(hr.half())
        assert lr.shape == (5, 3, 2, 5) and lr.dtype == torch.float16
        assert torch.isfinite(lr).all()


def test_bad_input_is_a_user_error():
    with pytest.raises(UserError, match="unknown degradation"):
        D.Degrader("gaussian", 4)
    with pytest.raises(UserError, match="multiple of the scale"):
        D.Degrader("bicubic", 4)(torch.rand(1, 3, 30, 32))
    with pytest.raises(UserError):
        D.Degrader("realesrgan", 4)(torch.rand(1, 1, 32, 32))


def test_degradations_per_second_and_bench_entry(capsys):
    for clock in ("wall", "process"):
        rate = D.degradations_per_second(
            "realesrgan", batch=2, hr_size=32, iters=1, warmup=0, clock=clock
        )
        assert math.isfinite(rate) and rate > 0
    with pytest.raises(UserError):
        D.degradations_per_second("bicubic", clock="gpu")
    D._main(["--bench", "--kind", "bicubic", "--batch", "2", "--hr-size", "32", "--iters", "1"])
    out = capsys.readouterr().out
    assert out.startswith("bicubic: ") and "degradations/s" in out


def _photo_like(seed: int, h: int = 96, w: int = 96) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(1, 3, h // 8, w // 8, generator=g)
    x = F.interpolate(base, size=(h, w), mode="bicubic", align_corners=False)
    return (x + 0.05 * torch.rand(1, 3, h, w, generator=g)).clamp(0, 1)


def test_camera_without_noise_is_opencv_blur_matlab_resize_and_libjpeg():
    """The fixed camera, noise off, against a second implementation of each step: OpenCV's
    Gaussian blur (reflect-101 borders), the fp64 MATLAB resize, OpenCV's libjpeg."""
    cfg = D.CameraConfig(noise_sigma=0.0)
    hr = _photo_like(0, 192, 192)
    got = D.apply_camera(hr, 4, torch.Generator().manual_seed(0), cfg)[0].permute(1, 2, 0)
    x = hr[0].permute(1, 2, 0).double().numpy()
    size = 2 * math.ceil(3 * cfg.blur_sigma) + 1
    blurred = cv2.GaussianBlur(x, (size, size), cfg.blur_sigma, borderType=cv2.BORDER_REFLECT_101)
    lr = imresize(torch.from_numpy(blurred).permute(2, 0, 1)[None], 1 / 4)[0].permute(1, 2, 0)
    lr8 = np.round(lr.clamp(0, 1).numpy() * 255).astype(np.uint8)
    ok, buf = cv2.imencode(".jpg", lr8[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, cfg.jpeg_quality])
    ref = cv2.imdecode(buf, cv2.IMREAD_COLOR)[:, :, ::-1]
    mine = np.round(got.numpy() * 255).astype(np.uint8)
    assert mine.shape == (48, 48, 3)
    # As close to libjpeg as the JPEG test asks, and far closer than JPEG is to its input.
    assert _psnr(mine, ref) > 42.0
    assert _psnr(mine, ref) > _psnr(ref, lr8) + 8


def test_camera_noise_level_and_seeding():
    """Noise on a flat image, JPEG at 100: the luma of two noise fields differs by sqrt(2) x
    sigma x |BT.601 luma weights| (independent channels; 4:2:0 chroma averages the rest)."""
    cfg = D.CameraConfig(blur_sigma=0.1, noise_sigma=6.0, jpeg_quality=100)
    hr = torch.full((2, 3, 256, 256), 0.5)
    a = D.apply_camera(hr, 2, torch.Generator().manual_seed(1), cfg)
    b = D.apply_camera(hr, 2, torch.Generator().manual_seed(2), cfg)
    assert torch.equal(a, D.apply_camera(hr, 2, torch.Generator().manual_seed(1), cfg))
    w = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
    luma_std = float(((a - b) * w).sum(1).std()) * 255 / math.sqrt(2)
    expected = cfg.noise_sigma * float(w.norm())
    assert 0.95 * expected < luma_std < 1.1 * expected


def test_camera_degrader_is_seeded_8bit_and_blurs():
    hr = _photo_like(3, 128, 128).repeat(2, 1, 1, 1)
    first = D.Degrader("camera", 4, seed=5)(hr)
    assert torch.equal(first, D.Degrader("camera", 4, seed=5)(hr))
    assert not torch.equal(first, D.Degrader("camera", 4, seed=6)(hr))
    assert torch.equal(first * 255, torch.round(first * 255))
    bicubic = D.Degrader("bicubic", 4)(hr)
    assert float((first - bicubic).abs().mean()) > 1 / 255  # the camera is not bicubic
