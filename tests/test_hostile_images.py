"""Images as cameras and editors write them (issue 29): EXIF orientation, several frames,
floating-point samples, outputs too large for their format."""

import io

import cv2
import numpy as np
import pytest
import tifffile
from fakes.exports import nearest_x2_onnx
from PIL import Image as PILImage
from PIL import ImageOps

from adaptsr.core.errors import UserError
from adaptsr.core.image_headers import image_header, probe, upright_size
from adaptsr.core.images import (
    check_output_size,
    check_output_sizes,
    encode_pixels,
    read_image,
    write_image,
)

ORIENTATION = 0x0112


def _picture(h=20, w=36):
    """A picture no turn or mirror leaves unchanged: a gradient and a marked corner."""
    y, x = np.mgrid[0:h, 0:w]
    rgb = np.stack([x * 255 // (w - 1), y * 255 // (h - 1), (x + 2 * y) % 256], axis=2)
    rgb[:4, :6] = (255, 0, 0)
    return rgb.astype(np.uint8)


def _save(pixels, fmt, orientation, **options) -> bytes:
    exif = PILImage.Exif()
    exif[ORIENTATION] = orientation
    out = io.BytesIO()
    PILImage.fromarray(pixels).save(out, fmt, exif=exif, **options)
    return out.getvalue()


def _upright(data: bytes) -> np.ndarray:
    """How a viewer shows the file: Pillow's decode turned by its orientation."""
    return np.asarray(ImageOps.exif_transpose(PILImage.open(io.BytesIO(data))).convert("RGB"))


@pytest.mark.parametrize("fmt, suffix", [("PNG", ".png"), ("WEBP", ".webp"), ("TIFF", ".tif")])
@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied_where_images_are_read(tmp_path, fmt, suffix, orientation):
    pixels = _picture()
    data = _save(pixels, fmt, orientation, **({"lossless": True} if fmt == "WEBP" else {}))
    path = tmp_path / f"x{suffix}"
    path.write_bytes(data)
    expected = _upright(data)
    assert probe(path).orientation == orientation
    assert image_header(path) == pixels.shape[:2]  # as stored
    assert upright_size(path) == expected.shape[:2]  # as read
    got = np.round(read_image(path).rgb * 255).astype(np.uint8)
    np.testing.assert_array_equal(got, expected)


def test_a_portrait_phone_jpeg_comes_out_upright_without_an_orientation_tag(tmp_path, run_cli):
    stored = _picture(24, 40)  # landscape pixels, Orientation 6: a portrait photo
    data = _save(stored, "JPEG", 6, quality=100)
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "phone.jpg").write_bytes(data)
    # OpenCV's own upright decode agrees with ours
    viewer = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)[:, :, ::-1]
    image = read_image(folder / "phone.jpg")
    assert image.size == (40, 24) and upright_size(folder / "phone.jpg") == (40, 24)
    np.testing.assert_allclose(image.rgb * 255, viewer, atol=1)

    onnx = tmp_path / "nearest.onnx"
    nearest_x2_onnx(onnx)
    args = ("upscale", folder, "--out", tmp_path / "out", "--onnx", onnx, "--provider", "cpu")
    code, _, err = run_cli(*args)
    assert code == 0, err
    out = tmp_path / "out" / "phone.jpg"
    assert probe(out).orientation == 1  # no stale tag: viewers show the pixels as they are
    assert PILImage.open(out).getexif().get(ORIENTATION) in (None, 1)
    written = read_image(out).rgb * 255
    assert written.shape == (80, 48, 3)
    assert np.abs(written[::2, ::2] - viewer).mean() < 3  # JPEG written again


def _frames(fmt: str, count: int = 3) -> bytes:
    frames = [PILImage.fromarray(np.full((8, 10, 3), 40 * i, np.uint8)) for i in range(count)]
    out = io.BytesIO()
    frames[0].save(out, fmt, save_all=True, append_images=frames[1:])
    return out.getvalue()


@pytest.mark.parametrize("fmt, suffix", [("PNG", ".png"), ("GIF", ".gif"), ("WEBP", ".webp")])
def test_animations_are_refused_naming_their_frames(tmp_path, fmt, suffix):
    path = tmp_path / f"moving{suffix}"
    path.write_bytes(_frames(fmt))
    assert probe(path).frames == 3
    with pytest.raises(UserError, match=r"moving\.\w+: it has 3 frames; adaptsr reads single"):
        read_image(path)
    still = tmp_path / f"still{suffix}"
    still.write_bytes(_frames(fmt, count=1))
    assert probe(still).frames == 1
    if suffix != ".gif":  # not an image suffix of adaptsr, though OpenCV may decode it
        assert read_image(still).size == (8, 10)


def test_multi_page_tiffs_are_refused_but_thumbnails_are_no_pages(tmp_path):
    path = tmp_path / "pages.tif"
    with tifffile.TiffWriter(path) as tif:
        for i in range(4):
            tif.write(np.full((8, 10), i, np.uint8))
    with pytest.raises(UserError, match="has 4 frames"):
        read_image(path)
    thumb = tmp_path / "thumb.tif"
    with tifffile.TiffWriter(thumb) as tif:
        tif.write(np.full((8, 10, 3), 9, np.uint8), photometric="rgb")
        tif.write(np.full((4, 5, 3), 9, np.uint8), photometric="rgb", subfiletype=1)
    assert probe(thumb).frames == 1 and read_image(thumb).size == (8, 10)


@pytest.mark.parametrize("dtype", [np.float32, np.float16, np.float64])
def test_float_tiffs_are_refused_not_clipped(tmp_path, dtype, capfd):
    path = tmp_path / "hdr.tif"
    values = np.linspace(-1.0, 4.0, 8 * 10 * 3).reshape(8, 10, 3)
    tifffile.imwrite(path, values.astype(dtype), photometric="rgb")
    capfd.readouterr()
    with pytest.raises(UserError, match=r"hdr\.tif: it holds floating-point samples"):
        read_image(path)
    assert capfd.readouterr().err == ""  # no OpenCV log line before ours


def test_output_sizes_are_checked_against_the_format_before_the_work(tmp_path):
    check_output_size("a.webp", 16383, 16383)
    check_output_size(".jpg", 65500, 10)
    check_output_size("a.png", 100_000, 100_000)  # PNG and TIFF hold it
    with pytest.raises(UserError, match=r"a\.webp: its 16384x2 pixels exceed .*\(16383 px"):
        check_output_size("a.webp", 2, 16384)
    with pytest.raises(UserError, match="65500 px a side"):
        check_output_size("b.JPEG", 65501, 3)
    with pytest.raises(UserError, match=r"\.jpg"):
        check_output_size(".jpg", 70000, 3)
    # from the input's header, upright: a 9000 x 4000 portrait at x2 is 8000 wide, 18000 high
    src = tmp_path / "portrait.png"
    src.write_bytes(_save(np.zeros((4, 9, 3), np.uint8), "PNG", 8))
    check_output_sizes([(src, tmp_path / "o.webp")], 1800)  # 16200 x 7200: fits
    with pytest.raises(UserError, match=r"o\.webp: its 8000x18000 pixels"):
        check_output_sizes([(src, tmp_path / "o.webp")], 2000)
    check_output_sizes([(src, tmp_path / "o.png")], 2000)


def test_an_encoder_refusal_is_our_line_alone(capfd):
    capfd.readouterr()
    with pytest.raises(UserError, match="cannot encode"):
        encode_pixels(np.zeros((2, 16384, 3), np.uint8), ".webp")
    assert capfd.readouterr().err == ""


def test_written_images_carry_no_orientation(tmp_path):
    data = _save(_picture(), "PNG", 6)
    (tmp_path / "in.png").write_bytes(data)
    image = read_image(tmp_path / "in.png")
    for suffix in (".png", ".jpg", ".webp", ".tif"):
        out = write_image(image, tmp_path / f"out{suffix}")
        assert probe(out).orientation == 1 and read_image(out).size == (36, 20), suffix


def test_upscale_refuses_a_too_large_webp_before_any_work(tmp_path, run_cli):
    folder = tmp_path / "in"
    folder.mkdir()
    wide = np.zeros((10, 9000, 3), np.uint8)
    cv2.imwrite(str(folder / "wide.webp"), wide, [cv2.IMWRITE_WEBP_QUALITY, 101])
    cv2.imwrite(str(folder / "small.png"), wide[:, :20])
    onnx = tmp_path / "nearest.onnx"
    nearest_x2_onnx(onnx)
    out = tmp_path / "out"
    code, _, err = run_cli("upscale", folder, "--out", out, "--onnx", onnx, "--provider", "cpu")
    assert code != 0
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "wide.webp: its 18000x20 pixels exceed" in lines[0], err
    assert not out.exists() or not list(out.iterdir())  # nothing upscaled first
