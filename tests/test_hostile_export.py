"""Hostile input to `adapt export onnx --check-images DIR`: outputs among the check's images and
images the header shows cannot be read are refused in one line before the export's work, and
the --max-pixels the refusal points to exists."""

import cv2
import numpy as np
import pytest
from fakes.cli import one_line, tree
from fakes.images import png_declaring
from fakes.models import one_block_edsr

from adaptsr.adapt.models import save_model
from adaptsr.core.images import MAX_PIXELS_ENV


@pytest.fixture
def places(tmp_path):
    save_model(one_block_edsr(), tmp_path / "edsr.pth")
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    cv2.imwrite(str(images / "a.png"), rng.integers(0, 256, (20, 20, 3), dtype=np.uint8))
    return tmp_path


def export(run_cli, places, out, *more):
    return run_cli(
        "export", "onnx", "--model", places / "edsr.pth", "--out", out, "--tile", "16", "16",
        "--fp16", "--check-images", places / "images", *more,
    )  # fmt: skip


@pytest.mark.parametrize("name", ["m.onnx", "deeper/m.onnx"])
def test_an_export_among_the_check_images_is_refused(places, run_cli, name):
    before = tree(places)
    code, _, err = export(run_cli, places, places / "images" / name, "--force")
    one_line(code, err, "--out", "inside the input folder")
    assert tree(places) == before


def test_a_check_image_above_max_pixels_is_refused_before_the_export(places, run_cli, monkeypatch):
    monkeypatch.delenv(MAX_PIXELS_ENV, raising=False)  # restored after --max-pixels sets it
    (places / "images" / "big.png").write_bytes(png_declaring(10000, 10000))
    out = places / "m.onnx"
    code, _, err = export(run_cli, places, out)
    one_line(code, err, "big.png", "--max-pixels")
    assert "checking parity" not in err and not out.exists()
    # the option the line points to is there and lets the header through (decoding then fails)
    code, _, err = export(run_cli, places, out, "--max-pixels", "200000000")
    one_line(code, err, "big.png", "corrupt")
    assert not out.exists()
