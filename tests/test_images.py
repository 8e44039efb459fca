import numpy as np
import pytest

from adaptsr.core.errors import UserError
from adaptsr.core.fileio import check_not_input
from adaptsr.core.image_suffixes import is_image_file
from adaptsr.core.images import Image, list_images, read_image, write_image


def _random(h, w, seed=0):
    return np.random.default_rng(seed).random((h, w, 3), dtype=np.float32)


@pytest.mark.parametrize("bit_depth", [8, 16])
def test_png_roundtrip_exact_at_bit_depth(tmp_path, bit_depth):
    top = 255 if bit_depth == 8 else 65535
    rgb = np.round(_random(9, 13) * top) / top
    img = Image(rgb=rgb.astype(np.float32), alpha=None, bit_depth=bit_depth, gray=False)
    back = read_image(write_image(img, tmp_path / "a.png"))
    assert back.bit_depth == bit_depth and not back.gray and back.alpha is None
    np.testing.assert_allclose(back.rgb, rgb, atol=0.5 / top)
    # RGB order survives (OpenCV stores BGR): a red-only image stays red.
    red = np.zeros((4, 4, 3), np.float32)
    red[..., 0] = 1
    back = read_image(write_image(Image(red, None, bit_depth, False), tmp_path / "r.png"))
    assert back.rgb[..., 0].min() == 1 and back.rgb[..., 1:].max() == 0


def test_gray_and_alpha(tmp_path):
    gray = np.repeat(_random(8, 8)[:, :, :1], 3, axis=2)
    alpha = _random(8, 8, seed=1)[:, :, 0]
    img = Image(rgb=gray, alpha=alpha, bit_depth=8, gray=True)
    back = read_image(write_image(img, tmp_path / "ga.png"))
    assert back.alpha is not None  # gray+alpha is stored as RGBA
    np.testing.assert_allclose(back.alpha, alpha, atol=0.5 / 255)
    np.testing.assert_allclose(back.rgb[..., 0], back.rgb[..., 2])


@pytest.mark.parametrize("suffix", [".jpg", ".webp", ".bmp", ".tif"])
def test_other_formats(tmp_path, suffix):
    rgb = _random(16, 16)
    back = read_image(write_image(Image(rgb, None, 8, False), tmp_path / f"x{suffix}"))
    assert back.rgb.shape == (16, 16, 3)
    tol = 0.2 if suffix == ".jpg" else 0.5 / 255 + 1e-6
    assert np.abs(back.rgb - rgb).mean() < tol


def test_errors(tmp_path):
    with pytest.raises(UserError, match="no such image"):
        read_image(tmp_path / "missing.png")
    (tmp_path / "bad.png").write_bytes(b"not a png")
    with pytest.raises(UserError, match="corrupt"):
        read_image(tmp_path / "bad.png")
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(UserError, match="corrupt"):
        read_image(tmp_path / "empty.png")
    img = Image(_random(4, 4), None, 8, False)
    write_image(img, tmp_path / "o.png")
    with pytest.raises(UserError, match="already exists"):
        write_image(img, tmp_path / "o.png")
    with pytest.raises(UserError, match="no such folder"):
        list_images(tmp_path / "nope")
    assert [p.name for p in list_images(tmp_path)] == ["bad.png", "empty.png", "o.png"]


def test_outputs_follow_the_umask(tmp_path):
    import os
    import stat

    old = os.umask(0o022)
    try:
        path = write_image(Image(_random(4, 4), None, 8, False), tmp_path / "m.png")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_image_suffixes_decide_what_list_images_and_the_input_guard_see(tmp_path):
    # one rule for "is an image" (core/image_suffixes.py): list_images lists those files, and
    # check_not_input refuses to overwrite one inside an input folder but not another file
    assert is_image_file("a.PNG") and is_image_file("b.tiff") and not is_image_file("c.txt")
    photos = tmp_path / "photos"
    photos.mkdir()
    write_image(Image(_random(4, 4), None, 8, False), photos / "x.JPG")
    (photos / "notes.txt").write_text("not an image")
    assert list_images(photos) == [photos / "x.JPG"]
    with pytest.raises(UserError, match="is an image in the input folder"):
        check_not_input(photos / "x.JPG", [photos], "--out")
    check_not_input(photos / "notes.txt", [photos], "--out")  # not an image: allowed
