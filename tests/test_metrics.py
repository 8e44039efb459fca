"""PSNR/SSIM against scikit-image (an independent implementation) and a published number."""

from pathlib import Path

import numpy as np
import pytest
import torch
from skimage.color import rgb2ycbcr
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from adaptsr.adapt import metrics
from adaptsr.core.errors import UserError

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "benchmarks"


def _pair(seed, h, w, noise):
    """An 8-bit HR image and a noisy 8-bit 'SR' image, as [0, 1] floats."""
    rng = np.random.default_rng(seed)
    smooth = rng.random((h // 4 + 1, w // 4 + 1, 3)).repeat(4, 0).repeat(4, 1)[:h, :w]
    hr = np.round(np.clip(smooth + rng.normal(0, 0.05, (h, w, 3)), 0, 1) * 255) / 255
    sr = np.clip(hr + rng.normal(0, noise, hr.shape), 0, 1)
    return sr.astype(np.float32), hr.astype(np.float32)


def _skimage_y(img):
    """Y via scikit-image's rgb2ycbcr on the 8-bit rounded image, then the border crop."""
    return rgb2ycbcr(np.round(np.clip(img.astype(np.float64), 0, 1) * 255) / 255)[:, :, 0]


@pytest.mark.parametrize(
    "seed,h,w,noise,crop",
    [(0, 48, 64, 0.02, 4), (1, 37, 29, 0.1, 2), (2, 64, 64, 0.004, 0), (3, 40, 90, 0.3, 3)],
)
def test_psnr_ssim_match_scikit_image(seed, h, w, noise, crop):
    sr, hr = _pair(seed, h, w, noise)
    ya, yb = _skimage_y(sr), _skimage_y(hr)
    if crop:
        ya, yb = ya[crop:-crop, crop:-crop], yb[crop:-crop, crop:-crop]
    ref_psnr = peak_signal_noise_ratio(yb, ya, data_range=255)
    ref_ssim = structural_similarity(
        yb, ya, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255
    )
    assert abs(metrics.psnr_y(sr, hr, crop=crop) - ref_psnr) < 1e-4
    assert abs(metrics.ssim_y(sr, hr, crop=crop) - ref_ssim) < 1e-4


def test_y_channel_is_matlab_bt601():
    rgb = np.array([[[0, 0, 0], [1, 1, 1], [1, 0, 0], [0, 1, 0], [0, 0, 1]]], np.float32)
    np.testing.assert_allclose(
        metrics.y_channel(rgb)[0], [16, 235, 16 + 65.481, 16 + 128.553, 16 + 24.966]
    )
    # a grayscale file is scored on its own channel, in [0, 255]
    gray = np.array([[0, 128, 255]], np.uint8)
    np.testing.assert_allclose(metrics.y_channel(gray, gray=True), [[0, 128, 255]], atol=1e-9)


def test_images_are_rounded_to_8_bits_and_border_cropped():
    _, hr = _pair(4, 32, 32, 0.0)
    below = hr + 0.4 / 255  # rounds back to the same 8-bit image
    assert metrics.psnr_y(below, hr) == float("inf")
    assert metrics.psnr_y(hr + 0.6 / 255, hr) < 60
    bordered = hr.copy()
    bordered[:3] = 1 - bordered[:3]
    bordered[:, -3:] = 0
    assert metrics.psnr_y(bordered, hr, crop=3) == float("inf")
    assert metrics.ssim_y(bordered, hr, crop=3) == pytest.approx(1.0)
    assert metrics.psnr_y(bordered, hr, crop=2) < 30


def test_ssim_properties():
    sr, hr = _pair(5, 40, 40, 0.05)
    assert metrics.ssim_y(hr, hr) == pytest.approx(1.0)
    assert metrics.ssim_y(sr, hr) == pytest.approx(metrics.ssim_y(hr, sr), abs=1e-12)
    worse, _ = _pair(5, 40, 40, 0.2)
    assert metrics.ssim_y(worse, hr) < metrics.ssim_y(sr, hr) < 1


@pytest.mark.parametrize("gray", [False, True])
def test_torch_batched_matches_numpy(gray):
    pairs = [_pair(s, 36, 44, n) for s, n in ((6, 0.01), (7, 0.05), (8, 0.2))]
    sr = torch.stack([torch.from_numpy(p[0]).permute(2, 0, 1) for p in pairs])
    hr = torch.stack([torch.from_numpy(p[1]).permute(2, 0, 1) for p in pairs])
    psnr = metrics.psnr_y(sr, hr, crop=4, gray=gray)
    ssim = metrics.ssim_y(sr, hr, crop=4, gray=gray)
    assert psnr.shape == (3,) and ssim.shape == (3,)
    for i, (a, b) in enumerate(pairs):
        assert abs(psnr[i].item() - metrics.psnr_y(a, b, crop=4, gray=gray)) < 1e-4
        assert abs(ssim[i].item() - metrics.ssim_y(a, b, crop=4, gray=gray)) < 1e-4
    one = metrics.psnr_y(sr[0], hr[0], crop=4, gray=gray)  # (3, H, W) -> a scalar
    assert one.ndim == 0 and abs(one.item() - psnr[0].item()) < 1e-9


def test_bad_inputs():
    sr, hr = _pair(9, 20, 20, 0.1)
    with pytest.raises(UserError, match="size mismatch"):
        metrics.psnr_y(sr[:-1], hr)
    with pytest.raises(UserError, match="too small"):
        metrics.psnr_y(sr, hr, crop=10)
    with pytest.raises(UserError, match="at least 11x11"):
        metrics.ssim_y(sr, hr, crop=5)


# ---------------------------------------------------------------------------------------------
# LPIPS / DISTS: local weights only


def test_perceptual_without_weights_says_where_to_put_them(tmp_path, monkeypatch):
    monkeypatch.setenv("ADAPTSR_WEIGHTS", str(tmp_path))
    fns, notes = metrics.perceptual_metrics(device="cpu")
    assert fns == {}
    assert len(notes) == 2
    for note, name in zip(notes, ("LPIPS", "DISTS"), strict=True):
        assert note.startswith(f"{name} skipped")
        assert str(tmp_path) in note or "pip install" in note


def test_local_hub_reads_the_folder_and_never_downloads(tmp_path):
    torch.save({"w": torch.arange(3)}, tmp_path / "present.pth")
    before = torch.hub.get_dir()
    with metrics.local_hub(tmp_path):
        state = torch.hub.load_state_dict_from_url("https://example.invalid/m/present.pth")
        assert torch.equal(state["w"], torch.arange(3))
        with pytest.raises(UserError, match="never downloaded"):
            torch.hub.load_state_dict_from_url("https://example.invalid/m/absent.pth")
    assert torch.hub.get_dir() == before
    assert not (tmp_path / "absent.pth").exists()


def _weights_present(name):
    folder = metrics.weights_dir()
    return all((folder / f).is_file() for f in metrics.PERCEPTUAL_FILES[name])


@pytest.mark.parametrize("name", ["lpips", "dists"])
def test_perceptual_with_local_weights(name):
    pytest.importorskip("lpips" if name == "lpips" else "piq")
    if not _weights_present(name):
        pytest.skip(f"{name} weights not in {metrics.weights_dir()}")
    fns, _ = metrics.perceptual_metrics((name,), device="cpu")
    sr, hr = _pair(10, 64, 64, 0.03)
    worse, _ = _pair(10, 64, 64, 0.15)
    fn = fns[name]
    assert fn(hr, hr, 4) == pytest.approx(0.0, abs=1e-6)
    assert 0 < fn(sr, hr, 4) < fn(worse, hr, 4)


# ---------------------------------------------------------------------------------------------
# published number


def test_bicubic_set5_matches_published_number():
    hr_dir, lr_dir = SHARED / "Set5" / "HR", SHARED / "Set5" / "LR_bicubic_x4"
    if not hr_dir.is_dir() or not lr_dir.is_dir():
        pytest.skip(f"benchmark images not present ({hr_dir})")
    from adaptsr.adapt.evaluate import bicubic_upscale, find_pairs, score
    from adaptsr.core.images import read_image

    psnr, ssim = [], []
    for pair in find_pairs(hr_dir, lr_dir, 4):
        hr = read_image(pair.hr)
        sr = bicubic_upscale(read_image(pair.lr).rgb, 4)
        s = score(sr, hr.rgb[: sr.shape[0], : sr.shape[1]], 4, {}, gray=hr.gray)
        psnr.append(s["psnr_y"])
        ssim.append(s["ssim_y"])
    # published: 28.42 dB / 0.8104 (MATLAB scripts; small differences come from their
    # rounding of Y and single precision)
    assert np.mean(psnr) == pytest.approx(28.42, abs=0.03)
    assert np.mean(ssim) == pytest.approx(0.8104, abs=0.002)
