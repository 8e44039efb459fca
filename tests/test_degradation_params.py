"""The Real-ESRGAN pipeline's draws (adapt.degradation_params): distributions over 20,000
samples with a fixed seed."""

import math

import numpy as np
import pytest
import torch

from adaptsr.adapt import degradations as D
from adaptsr.adapt.blur import KERNEL_TYPES

stats = pytest.importorskip("scipy.stats")


# Many small ops: one thread avoids OpenMP oversubscription on busy 2-core machines.
pytestmark = pytest.mark.usefixtures("one_thread")


N = 20000


@pytest.fixture(scope="module")
def params():
    return D.sample_params(N, torch.Generator().manual_seed(1234))


def _chi2_ok(counts, probs):
    counts = np.asarray(counts, dtype=np.float64)
    expected = np.asarray(probs, dtype=np.float64) * counts.sum()
    stat = ((counts - expected) ** 2 / expected).sum()
    return stats.chi2.sf(stat, len(counts) - 1) > 1e-4


def _binom_ok(mask, p):
    k, n = int(mask.sum()), len(mask)
    return abs(k - n * p) < 4.5 * math.sqrt(n * p * (1 - p))


def _uniform_ok(v, lo, hi):
    v = np.asarray(v, dtype=np.float64)
    width = hi - lo
    inside = v.min() >= lo and v.max() <= hi
    reaches = v.min() < lo + 0.01 * width and v.max() > hi - 0.01 * width
    return inside and reaches and stats.kstest(v, "uniform", args=(lo, width)).pvalue > 1e-4


@pytest.mark.parametrize("s", [1, 2])
def test_kernel_draws(params, s):
    cfg = D.REALESRGAN.stage1 if s == 1 else D.REALESRGAN.stage2
    kind = params[f"blur{s}_type"].numpy()
    size = params[f"blur{s}_size"].numpy()
    assert _chi2_ok(np.bincount(size, minlength=22)[7::2], [1 / 8] * 8)
    assert set(np.unique(size)) == set(range(7, 22, 2))
    probs = [0.9 * p for p in cfg.kernel_prob] + [0.1]
    assert _chi2_ok(np.bincount(kind, minlength=7), probs)
    sx, sy = params[f"blur{s}_sigma_x"].numpy(), params[f"blur{s}_sigma_y"].numpy()
    theta, beta = params[f"blur{s}_theta"].numpy(), params[f"blur{s}_beta"].numpy()
    name = np.array(KERNEL_TYPES)[kind]
    not_sinc = name != "sinc"
    iso = np.isin(name, ["iso", "generalized_iso", "plateau_iso"])
    aniso = not_sinc & ~iso
    assert _uniform_ok(sx[not_sinc], *cfg.blur_sigma)
    assert _uniform_ok(sy[aniso], *cfg.blur_sigma)
    assert np.array_equal(sy[iso], sx[iso]) and (theta[iso] == 0).all()
    assert _uniform_ok(theta[aniso], -math.pi, math.pi)
    assert abs(np.corrcoef(sx[aniso], sy[aniso])[0, 1]) < 0.05  # independent axes
    assert (beta[np.isin(name, ["iso", "aniso"])] == 1).all()
    gen = np.char.startswith(name.astype(str), "generalized")
    bg = beta[gen]
    assert _binom_ok(bg < 1, 0.5)
    assert _uniform_ok(bg[bg < 1], cfg.betag[0], 1.0) and _uniform_ok(bg[bg > 1], 1.0, cfg.betag[1])
    bp = beta[np.char.startswith(name.astype(str), "plateau")]
    # [1, 2]: the "below 1" half collapses onto beta = 1.
    assert _binom_ok(bp == 1.0, 0.5) and _uniform_ok(bp[bp > 1], 1.0, cfg.betap[1])
    omega = params[f"blur{s}_omega"].numpy()
    small = ~not_sinc & (size < 13)
    assert _uniform_ok(omega[small], math.pi / 3, math.pi)
    assert _uniform_ok(omega[~not_sinc & ~small], math.pi / 5, math.pi)
    assert (omega[not_sinc] == 0).all() and (sx[~not_sinc] == 0).all()


@pytest.mark.parametrize("s", [1, 2])
def test_resize_noise_jpeg_draws(params, s):
    cfg = D.REALESRGAN.stage1 if s == 1 else D.REALESRGAN.stage2
    mode = params[f"resize{s}_mode"].numpy()
    scale = params[f"resize{s}_scale"].numpy()
    assert _chi2_ok(np.bincount(mode, minlength=3), cfg.resize_prob)
    lo, hi = cfg.resize_range
    assert _uniform_ok(scale[mode == 0], 1.0, hi) and _uniform_ok(scale[mode == 1], lo, 1.0)
    assert (scale[mode == 2] == 1).all()
    assert _chi2_ok(np.bincount(params[f"resize{s}_interp"].numpy(), minlength=3), [1 / 3] * 3)

    gauss = params[f"noise{s}_gaussian"].numpy()
    assert _binom_ok(gauss, cfg.gaussian_noise_prob)
    assert _binom_ok(params[f"noise{s}_gray"].numpy(), cfg.gray_noise_prob)
    sigma, pscale = params[f"noise{s}_sigma"].numpy(), params[f"noise{s}_poisson_scale"].numpy()
    assert _uniform_ok(sigma[gauss], *cfg.noise_sigma) and (sigma[~gauss] == 0).all()
    assert _uniform_ok(pscale[~gauss], *cfg.poisson_scale) and (pscale[gauss] == 0).all()

    q = params[f"jpeg{s}_quality"].numpy()
    assert q.min() == 30 and q.max() == 95 and q.dtype.kind == "i"
    assert _chi2_ok(np.bincount(q, minlength=96)[30:], [1 / 66] * 66)


def test_final_stage_draws(params):
    assert _binom_ok(params["blur2_apply"].numpy(), 0.8)
    assert _binom_ok(params["final_sinc_apply"].numpy(), 0.8)
    assert _binom_ok(params["final_resize_first"].numpy(), 0.5)
    size = params["final_sinc_size"].numpy()
    assert _chi2_ok(np.bincount(size, minlength=22)[7::2], [1 / 8] * 8)
    assert _uniform_ok(params["final_sinc_omega"].numpy(), math.pi / 3, math.pi)
    assert _chi2_ok(np.bincount(params["final_interp"].numpy(), minlength=3), [1 / 3] * 3)
    # All draws are per sample: two stages are not copies of each other.
    assert not torch.equal(params["jpeg1_quality"], params["jpeg2_quality"])


def test_shared_resize_draws_are_one_per_batch():
    p = D.sample_params(16, torch.Generator().manual_seed(0), shared_resize=True)
    for k in ("resize1_scale", "resize2_interp", "final_resize_first"):
        assert (p[k] == p[k][0]).all()
    assert len(set(p["jpeg1_quality"].tolist())) > 1  # the rest stays per sample
