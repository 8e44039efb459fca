"""Degradations: MATLAB bicubic, blur kernels, JPEG, noise, the Real-ESRGAN pipeline's draws."""

import math

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from adaptsr.adapt import degradations as D
from adaptsr.adapt.blur import KERNEL_TYPES, filter2d, make_kernels, pulse
from adaptsr.adapt.imresize import imresize
from adaptsr.adapt.jpeg import jpeg, quant_tables
from adaptsr.core.errors import UserError

stats = pytest.importorskip("scipy.stats")
special = pytest.importorskip("scipy.special")
ndimage = pytest.importorskip("scipy.ndimage")


# Many small ops: one thread avoids OpenMP oversubscription on busy 2-core machines.
pytestmark = pytest.mark.usefixtures("one_thread")


# ---------------------------------------------------------------- MATLAB imresize


def _matlab_cubic(x):
    ax = np.abs(x)
    return np.where(
        ax <= 1,
        1.5 * ax**3 - 2.5 * ax**2 + 1,
        np.where(ax <= 2, -0.5 * ax**3 + 2.5 * ax**2 - 4 * ax + 2, 0.0),
    )


def _matlab_resize_1d(a, out_len, scale):
    """fp64 reference of MATLAB's imresize along axis 0, written from its published algorithm
    (contributions(): kernel widened by 1/scale when shrinking, weights normalised, indices
    mirrored with aux = [1..n, n..1], all-zero weight columns dropped)."""
    n = a.shape[0]
    width = 4.0 / scale if scale < 1 else 4.0
    out = np.zeros((out_len,) + a.shape[1:])
    aux = np.concatenate([np.arange(1, n + 1), np.arange(n, 0, -1)])
    for x in range(1, out_len + 1):
        u = x / scale + 0.5 * (1 - 1 / scale)
        left = math.floor(u - width / 2)
        idx = left + np.arange(math.ceil(width) + 2)
        w = scale * _matlab_cubic(scale * (u - idx)) if scale < 1 else _matlab_cubic(u - idx)
        w = w / w.sum()
        keep = w != 0
        src = aux[np.mod(idx[keep] - 1, 2 * n)] - 1
        out[x - 1] = np.tensordot(w[keep], a[src], axes=1)
    return out


def _matlab_imresize(img, out_hw, scale_hw):
    """img (H, W) fp64; MATLAB resizes the smaller-scale dimension first."""
    (oh, ow), (sh, sw) = out_hw, scale_hw
    if sh <= sw:
        t = _matlab_resize_1d(img, oh, sh)
        return _matlab_resize_1d(t.T, ow, sw).T
    t = _matlab_resize_1d(img.T, ow, sw).T
    return _matlab_resize_1d(t, oh, sh)


@pytest.mark.parametrize(
    "hw,arg,out_hw,scale_hw",
    [
        ((32, 24), 0.25, (8, 6), (0.25, 0.25)),
        ((23, 17), 0.25, (6, 5), (0.25, 0.25)),  # MATLAB's ceil on odd sizes
        ((27, 30), 1 / 3, (9, 10), (1 / 3, 1 / 3)),
        ((20, 14), 0.5, (10, 7), (0.5, 0.5)),
        ((9, 11), 2, (18, 22), (2, 2)),
        ((10, 12), 3, (30, 36), (3, 3)),
        ((21, 16), (7, 12), (7, 12), (7 / 21, 12 / 16)),  # size: per-axis scales, mixed
    ],
)
def test_imresize_matches_fp64_matlab_reference(hw, arg, out_hw, scale_hw):
    rng = np.random.default_rng(1)
    img = rng.random((2, 3) + hw)
    got = imresize(torch.from_numpy(img).float(), arg).double().numpy()
    assert got.shape == (2, 3) + out_hw
    ref = np.stack([[_matlab_imresize(c, out_hw, scale_hw) for c in im] for im in img])
    np.testing.assert_allclose(got, ref, atol=2e-6)


def test_imresize_interior_matches_pillow_and_torch_antialias():
    # Independent implementations of the same antialiased a=-0.5 cubic; they differ from
    # MATLAB only at the borders (renormalised truncation instead of mirroring).
    rng = np.random.default_rng(2)
    a = rng.random((64, 48)).astype(np.float32)
    x = torch.from_numpy(a)[None, None].double()
    for scale, size_wh in ((0.25, (12, 16)), (2, (96, 128))):
        mine = imresize(x, scale)[0, 0].numpy()
        pil = np.asarray(Image.fromarray(a, mode="F").resize(size_wh, Image.BICUBIC))
        tch = F.interpolate(x, size=size_wh[::-1], mode="bicubic", antialias=True)[0, 0].numpy()
        b = 4
        np.testing.assert_allclose(mine[b:-b, b:-b], pil[b:-b, b:-b], atol=1e-6)
        np.testing.assert_allclose(mine[b:-b, b:-b], tch[b:-b, b:-b], atol=1e-9)
        assert np.abs(mine - tch).max() > 1e-3  # borders differ: mirroring is MATLAB's


def test_imresize_constant_and_ramp_are_exact():
    const = torch.full((1, 3, 40, 36), 0.3712, dtype=torch.float64)
    for s in (0.25, 1 / 3, 0.5, 2):
        torch.testing.assert_close(imresize(const, s), torch.full_like(imresize(const, s), 0.3712))
    # A linear ramp: the symmetric, normalised kernel returns the ramp at each output centre,
    # 0-based input coordinate 4 * X + 1.5 for x4 downscaling (away from the mirrored border).
    i, j = torch.meshgrid(
        torch.arange(64, dtype=torch.float64), torch.arange(48, dtype=torch.float64), indexing="ij"
    )
    ramp = (0.1 + 0.004 * i + 0.007 * j).double()[None, None]
    out = imresize(ramp, 0.25)[0, 0]
    xo, yo = torch.meshgrid(
        torch.arange(16, dtype=torch.float64), torch.arange(12, dtype=torch.float64), indexing="ij"
    )
    expected = 0.1 + 0.004 * (4 * xo + 1.5) + 0.007 * (4 * yo + 1.5)
    torch.testing.assert_close(out[2:-2, 2:-2], expected.double()[2:-2, 2:-2], atol=1e-12, rtol=0)
    assert not torch.allclose(out[0, 0], expected.double()[0, 0])  # the border is mirrored


def test_imresize_rejects_bad_arguments():
    with pytest.raises(UserError):
        imresize(torch.zeros(1, 3, 8, 8), 0)
    with pytest.raises(UserError):
        imresize(torch.zeros(8, 8), 0.5)


# ---------------------------------------------------------------- blur kernels


def _ref_kernel(kind, k, sx, sy, theta, beta, omega):
    """fp64 numpy kernel on a k x k grid from the Real-ESRGAN formulas, padded to 21."""
    ax = np.arange(k) - (k - 1) / 2
    xx, yy = np.meshgrid(ax, ax)  # xx varies along columns
    if kind == "sinc":
        r = np.hypot(xx, yy)
        with np.errstate(invalid="ignore", divide="ignore"):
            ker = omega * special.j1(omega * r) / (2 * np.pi * r)
        ker[r == 0] = omega**2 / (4 * np.pi)
    else:
        rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
        cov = rot @ np.diag([sx**2, sy**2]) @ rot.T
        d = np.stack([xx, yy], -1)
        q = np.einsum("...i,ij,...j->...", d, np.linalg.inv(cov), d)
        if kind.startswith("plateau"):
            ker = 1 / (q**beta + 1)
        elif kind.startswith("generalized"):
            ker = np.exp(-0.5 * q**beta)
        else:
            ker = np.exp(-0.5 * q)
    ker = ker / ker.sum()
    p = (21 - k) // 2
    return np.pad(ker, p)


@pytest.mark.parametrize(
    "kind,k,sx,sy,theta,beta,omega",
    [
        ("iso", 7, 1.3, 1.3, 0.0, 1.0, 0),
        ("aniso", 21, 2.7, 0.6, 0.9, 1.0, 0),
        ("generalized_iso", 13, 1.1, 1.1, 0.0, 0.6, 0),
        ("generalized_aniso", 15, 2.0, 0.4, -2.2, 3.5, 0),
        ("plateau_iso", 9, 1.8, 1.8, 0.0, 1.7, 0),
        ("plateau_aniso", 19, 2.5, 1.0, 2.8, 1.2, 0),
        ("sinc", 11, 0, 0, 0, 0, 1.7),
        ("sinc", 21, 0, 0, 0, 0, 0.7),
    ],
)
def test_kernels_match_fp64_formulas(kind, k, sx, sy, theta, beta, omega):
    got = make_kernels(
        torch.tensor([KERNEL_TYPES.index(kind)]),
        torch.tensor([k]),
        torch.tensor([sx]),
        torch.tensor([sy]),
        torch.tensor([theta]),
        torch.tensor([beta]),
        torch.tensor([omega]),
    )[0].double()
    ref = _ref_kernel(kind, k, sx, sy, theta, beta, omega)
    np.testing.assert_allclose(got.numpy(), ref, atol=1e-7)
    assert abs(float(got.sum()) - 1) < 1e-6


def test_filter2d_per_sample_kernels_match_scipy():
    rng = np.random.default_rng(3)
    x = rng.random((3, 3, 30, 26)).astype(np.float32)
    kers = rng.random((3, 21, 21)).astype(np.float32)
    got = filter2d(torch.from_numpy(x), torch.from_numpy(kers)).numpy()
    for b in range(3):
        for c in range(3):
            # torch 'reflect' = scipy 'mirror' (edge pixel not repeated); conv2d correlates.
            ref = ndimage.correlate(
                x[b, c].astype(np.float64), kers[b].astype(np.float64), mode="mirror"
            )
            np.testing.assert_allclose(got[b, c], ref, rtol=1e-5, atol=1e-4)
    xt = torch.from_numpy(x)
    torch.testing.assert_close(filter2d(xt, pulse(3)), xt)
    small = torch.rand(2, 3, 5, 6)  # smaller than the kernel radius: edge replication
    assert filter2d(small, pulse(2)).shape == small.shape


# ---------------------------------------------------------------- JPEG


def _test_image(h, w, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack(
        [
            128 + 100 * np.sin(xx / 7 + yy / 11),
            128 + 90 * np.cos(xx / 5 - yy / 13),
            128 + 60 * np.sin(xx * yy / 150),
        ],
        -1,
    )
    return np.clip(np.round(img + rng.normal(0, 12, img.shape)), 0, 255).astype(np.uint8)


def _psnr(a, b):
    return 10 * np.log10(255**2 / np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))


def _cv2_jpeg(rgb, quality, sampling):
    params = [cv2.IMWRITE_JPEG_QUALITY, quality, cv2.IMWRITE_JPEG_SAMPLING_FACTOR, sampling]
    ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(rgb[..., ::-1]), params)
    assert ok
    return cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1]


def _mine_jpeg(rgb, quality, subsampling):
    x = torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255
    out = jpeg(x, quality, subsampling)[0].permute(1, 2, 0).numpy() * 255
    return np.round(out).astype(np.uint8)


@pytest.mark.parametrize(
    "subsampling,sampling,floor",
    [
        ("420", cv2.IMWRITE_JPEG_SAMPLING_FACTOR_420, 42.0),
        ("444", cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444, 42.0),
    ],
)
def test_jpeg_matches_opencv(subsampling, sampling, floor):
    img = _test_image(77, 90)  # not a multiple of the MCU: edge padding is exercised
    for q in (30, 50, 75, 95):
        ref = _cv2_jpeg(img, q, sampling)
        mine = _mine_jpeg(img, q, subsampling)
        agree = _psnr(mine, ref)
        assert agree > floor, (q, agree)
        # Far closer to OpenCV's decoded image than either is to the original.
        assert agree > _psnr(ref, img) + 8, q


def test_jpeg_quality_monotone_and_batched():
    img = _test_image(64, 64, seed=5)
    quals = [20, 40, 60, 80, 95]
    psnrs = [_psnr(_mine_jpeg(img, q, "420"), img) for q in quals]
    assert all(a < b for a, b in zip(psnrs, psnrs[1:], strict=False)), psnrs
    x = torch.from_numpy(img).permute(2, 0, 1)[None].float().div(255).repeat(len(quals), 1, 1, 1)
    batched = jpeg(x, torch.tensor(quals))
    for i, q in enumerate(quals):
        torch.testing.assert_close(batched[i : i + 1], jpeg(x[i : i + 1], q))
    assert torch.equal(torch.round(batched * 255), batched * 255)  # 8-bit values


def test_quant_tables_follow_libjpeg_scaling():
    luma, chroma = quant_tables(torch.tensor([50, 100, 1, 75]))
    assert luma[0, 0, 0] == 16 and luma[0, 7, 7] == 99 and chroma[0, 0, 0] == 17
    assert (luma[1] == 1).all() and (chroma[1] == 1).all()
    assert (luma[2] == 255).all()  # baseline tables clip at 255
    assert luma[3, 0, 0] == 8 and luma[3, 4, 5] == 55  # floor((109 * 50 + 50) / 100)
    with pytest.raises(UserError):
        jpeg(torch.zeros(1, 3, 8, 8), 0)


# ---------------------------------------------------------------- parameter statistics

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


def test_the_torch_jpeg_and_the_numpy_tables_scale_quality_alike():
    """adapt/jpeg.py's batched tables and adapt/jpeg_tables.scaled_table are libjpeg's scaling of
    the same Annex K tables, for every quality."""
    from adaptsr.adapt.jpeg import quant_tables
    from adaptsr.adapt.jpeg_tables import CHROMA_TABLE, LUMA_TABLE, scaled_table

    luma, chroma = quant_tables(torch.arange(1, 101))
    for q in range(1, 101):
        assert np.array_equal(luma[q - 1].numpy(), scaled_table(LUMA_TABLE, q)), q
        assert np.array_equal(chroma[q - 1].numpy(), scaled_table(CHROMA_TABLE, q)), q
    assert scaled_table(LUMA_TABLE, 50).tolist() == LUMA_TABLE.tolist()  # q 50 is the table
