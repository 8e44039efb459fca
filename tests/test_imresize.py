"""MATLAB-compatible bicubic resize (adapt.imresize) against an fp64 transcription of
MATLAB's algorithm, Pillow and PyTorch."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from adaptsr.adapt.imresize import imresize
from adaptsr.core.errors import UserError

# Many small ops: one thread avoids OpenMP oversubscription on busy 2-core machines.
pytestmark = pytest.mark.usefixtures("one_thread")


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
