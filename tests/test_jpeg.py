"""The torch JPEG (adapt.jpeg) against OpenCV's libjpeg, and its quality scaling."""

import cv2
import numpy as np
import pytest
import torch

from adaptsr.adapt.jpeg import jpeg, quant_tables
from adaptsr.core.errors import UserError

# Many small ops: one thread avoids OpenMP oversubscription on busy 2-core machines.
pytestmark = pytest.mark.usefixtures("one_thread")


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
