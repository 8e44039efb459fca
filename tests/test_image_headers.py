"""Image headers: sizes read from the file's first bytes, without decoding a pixel."""

import cv2
import numpy as np
import pytest
from fakes.images import png_declaring

pytestmark = pytest.mark.usefixtures("one_thread")


def test_image_header_is_read_without_decoding(tmp_path):
    from adaptsr.core.images import image_header

    rng = np.random.default_rng(1)
    for suffix in (".png", ".jpg", ".webp", ".bmp", ".tif"):
        for h, w, c in ((37, 53, 3), (5, 300, 1), (64, 9, 4)):
            if suffix == ".jpg" and c == 4:
                continue
            path = tmp_path / f"x{suffix}"
            cv2.imwrite(str(path), rng.integers(0, 256, (h, w, c), dtype=np.uint8))
            assert image_header(path) == (h, w), (suffix, c)
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_declaring(100_000, 100_000))
    assert len(bomb.read_bytes()) < 80 and image_header(bomb) == (100_000, 100_000)
    (tmp_path / "junk.png").write_bytes(b"\x89PNG")
    assert image_header(tmp_path / "junk.png") is None
