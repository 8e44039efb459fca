"""Hostile input to `adapt degrade` and its --sheet: a sheet that cannot be an image or would land
among the LR images is refused before any work, and an image that fails half-way leaves no LR
images behind."""

import cv2
import numpy as np
import pytest
from fakes.cli import one_line, tree
from fakes.images import write_noise_pngs


@pytest.fixture
def hr_dir(tmp_path):
    return write_noise_pngs(tmp_path / "hr", 3, 24, 24, name="im{}.png")


def degrade(run_cli, hr_dir, out, *more):
    return run_cli(
        "degrade", hr_dir, "--out", out, "--scale", "2", "--degradation", "bicubic", "--quiet",
        *more,
    )  # fmt: skip


@pytest.mark.parametrize(
    "sheet, words",
    [
        ("sheet.txt", "choose an image file name"),
        ("sheet", "choose an image file name"),
        ("", "choose an image file name"),
        ("lr/sheet.png", "inside --out"),
        ("lr/deeper/sheet.png", "inside --out"),
    ],
)
def test_a_bad_sheet_is_refused_before_any_lr_image(hr_dir, tmp_path, run_cli, sheet, words):
    before = tree(tmp_path)
    out = tmp_path / "lr"
    target = tmp_path / sheet if sheet else ""
    one_line(*degrade(run_cli, hr_dir, out, "--sheet", target, "--force")[::2], words)
    assert tree(tmp_path) == before and not out.exists()


@pytest.mark.parametrize("bad", ["corrupt", "too small"])
def test_an_image_failing_half_way_leaves_no_lr_images(hr_dir, tmp_path, run_cli, bad):
    if bad == "corrupt":
        (hr_dir / "im1.png").write_bytes(b"not a png")
    else:
        cv2.imwrite(str(hr_dir / "im1.png"), np.zeros((1, 1, 3), np.uint8))
    out = tmp_path / "lr"
    one_line(*degrade(run_cli, hr_dir, out)[::2], "im1.png")
    assert not out.exists() and not (tmp_path / "lr-contact-sheet.png").exists()
    # a folder that was there keeps what it held, and only that
    out.mkdir()
    (out / "mine.txt").write_text("keep")
    before = tree(out)
    one_line(*degrade(run_cli, hr_dir, out)[::2], "im1.png")
    assert tree(out) == before
