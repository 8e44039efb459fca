"""Blur kernels (adapt.blur): every kernel type against fp64 formulas, filter2d against scipy."""

import numpy as np
import pytest
import torch

from adaptsr.adapt.blur import KERNEL_TYPES, filter2d, make_kernels, pulse

special = pytest.importorskip("scipy.special")
ndimage = pytest.importorskip("scipy.ndimage")


# Many small ops: one thread avoids OpenMP oversubscription on busy 2-core machines.
pytestmark = pytest.mark.usefixtures("one_thread")


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
