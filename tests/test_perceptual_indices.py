"""The weight-free perceptual indices of piq in `adapt eval` and the study table: HaarPSI and
MS-GMSD, checked against their perfect values, a known degradation's order and an fp64
MS-GMSD written here from its paper's definition."""

import numpy as np
import pytest

from adaptsr.adapt import metrics
from adaptsr.adapt.eval_report import Result
from adaptsr.adapt.evaluate import score

pytest.importorskip("piq")

MS_WEIGHTS = (0.096, 0.596, 0.289, 0.019)  # the paper's scale weights
GMS_CONSTANT = 170.0  # on 0..255 levels
MASKING = 0.5


def _images(seed, h, w, noise):
    """A smooth textured HR image in [0, 1] and a noisy copy (8-bit levels both)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w] / 8.0
    base = 0.5 + 0.2 * np.sin(xx[..., None] + np.array([0, 1, 2])) * np.cos(yy[..., None])
    hr = np.clip(base + 0.05 * rng.standard_normal((h, w, 3)), 0, 1)
    sr = np.clip(hr + noise * rng.standard_normal((h, w, 3)), 0, 1)
    return np.round(sr * 255) / 255, np.round(hr * 255) / 255


def _gradient_magnitude(y):
    """Prewitt gradients (normalised by 3, zero outside the image), their magnitude."""
    p = np.pad(y, 1)
    h, w = y.shape
    gx = sum(p[i : i + h, 2 : w + 2] - p[i : i + h, 0:w] for i in range(3)) / 3
    gy = sum(p[2 : h + 2, j : j + w] - p[0:h, j : j + w] for j in range(3)) / 3
    return np.sqrt(gx**2 + gy**2)


def ms_gmsd_fp64(sr, hr):
    """MS-GMSD (Zhang et al., 2017): the luminance (0..255) at four scales (2x2 means, an odd
    side padded with zeros), at each the deviation of the masked gradient magnitude similarity
    (2 m1 m2 - a m1 m2 + c) / (m1^2 + m2^2 - a m1 m2 + c), combined as sqrt(sum w_j GMSD_j^2)."""
    lum = np.array([0.299, 0.587, 0.114])
    x, y = (255.0 * img.astype(np.float64) @ lum for img in (sr, hr))
    total = 0.0
    for j, weight in enumerate(MS_WEIGHTS):
        if j:
            x, y = (np.pad(t, ((0, t.shape[0] % 2), (0, t.shape[1] % 2))) for t in (x, y))
            x, y = (t.reshape(t.shape[0] // 2, 2, t.shape[1] // 2, 2).mean((1, 3)) for t in (x, y))
        m1, m2 = _gradient_magnitude(x), _gradient_magnitude(y)
        both = MASKING * m1 * m2
        gms = (2 * m1 * m2 - both + GMS_CONSTANT) / (m1**2 + m2**2 - both + GMS_CONSTANT)
        total += weight * gms.std() ** 2
    return float(np.sqrt(total))


@pytest.fixture(scope="module")
def indices():
    fns, notes = metrics.perceptual_metrics(("haarpsi", "ms_gmsd"), device="cpu")
    assert notes == [] and set(fns) == {"haarpsi", "ms_gmsd"}
    return fns


@pytest.mark.parametrize("shape", [(64, 64), (45, 67)])
def test_ms_gmsd_matches_the_fp64_definition(indices, shape):
    sr, hr = _images(1, *shape, noise=0.05)
    got = indices["ms_gmsd"](sr, hr, 2)
    want = ms_gmsd_fp64(sr[2:-2, 2:-2], hr[2:-2, 2:-2])
    assert got == pytest.approx(want, rel=1e-4)
    assert want > 1e-3  # the images differ: not a comparison of zeros


def test_perfect_values_and_the_order_of_a_degradation(indices):
    _, hr = _images(2, 64, 64, 0.0)
    mild, _ = _images(2, 64, 64, 0.02)
    strong, _ = _images(2, 64, 64, 0.12)
    assert indices["haarpsi"](hr, hr, 4) == pytest.approx(1.0, abs=1e-5)
    assert indices["ms_gmsd"](hr, hr, 4) == pytest.approx(0.0, abs=1e-6)
    assert 1 > indices["haarpsi"](mild, hr, 4) > indices["haarpsi"](strong, hr, 4) > 0
    assert 0 < indices["ms_gmsd"](mild, hr, 4) < indices["ms_gmsd"](strong, hr, 4)


def test_eval_scores_carry_the_indices_and_leave_small_images_out(indices):
    sr, hr = _images(3, 40, 40, 0.05)
    row = score(sr, hr, 4, indices)
    assert set(row) == {"psnr_y", "ssim_y", "haarpsi", "ms_gmsd"}
    small_sr, small_hr = _images(3, 22, 22, 0.05)  # 14 px after the border: below both
    assert set(score(small_sr, small_hr, 4, indices)) == {"psnr_y", "ssim_y"}
    result = Result(methods=["model"], scale=4)
    result.rows = [{"name": "a", **{f"model_{k}": v for k, v in row.items()}}]
    assert "HaarPSI" in result.table() and "MS-GMSD" in result.table()
