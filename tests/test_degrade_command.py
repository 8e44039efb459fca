"""`adapt degrade` (adapt/degrade_folder.py) and `adapt calibrate`: LR images and a contact sheet
from an HR folder, the presets printed as files, outputs kept out of the input folder, and a
calibrated file that --degradation takes."""

import numpy as np
import pytest
import torch
from fakes.images import write_noise_pngs
from test_calibrate import write_photos

from adaptsr.adapt import degradation_file as F
from adaptsr.adapt.degradation_params import CameraConfig
from adaptsr.adapt.degradations import Degrader
from adaptsr.adapt.evaluate import make_degrade
from adaptsr.core.fileio import tomllib  # tomli on Python 3.10
from adaptsr.core.images import read_image


@pytest.fixture
def hr_dir(tmp_path):
    return write_noise_pngs(tmp_path / "hr", 5, 50, 42, name="im{}.png")


def test_degrade_writes_n_images_and_a_sheet(hr_dir, tmp_path, run_cli):
    out = tmp_path / "lr"
    code, stdout, err = run_cli("degrade", hr_dir, "--out", out, "--degradation", "camera",
                                "-n", "3", "--seed", "2", "--quiet")  # fmt: skip
    assert code == 0, err
    # the sheet goes beside the LR folder: the folder holds LR images only
    assert sorted(p.name for p in out.iterdir()) == ["im0.png", "im1.png", "im2.png"]
    assert "wrote 3 LR images (x4, camera, seed 2)" in stdout
    # each LR image is the modcropped HR degraded with seed + index, as eval degrades it
    hr = read_image(hr_dir / "im1.png").rgb[:48, :40]
    expected = make_degrade("camera", 4, seed=2)(hr, 1)
    assert np.abs(read_image(out / "im1.png").rgb - expected).max() < 1e-6
    assert f"and {tmp_path / 'lr-contact-sheet.png'}" in stdout
    sheet = read_image(tmp_path / "lr-contact-sheet.png").rgb
    assert sheet.shape == (8 + 3 * (192 + 8), 8 + 2 * 192 + 8 + 8, 3)
    # the first row: the HR image at its place, the LR enlarged 4x beside it
    hr0 = read_image(hr_dir / "im0.png").rgb[:48, :40]
    assert np.allclose(sheet[8 : 8 + 48, 8 : 8 + 40], hr0, atol=1 / 255)
    lr0 = read_image(out / "im0.png").rgb
    left = 8 + 192 + 8
    assert np.allclose(sheet[8 : 8 + 48 : 4, left : left + 40 : 4], lr0, atol=1 / 255)


def test_degrade_with_a_file_and_force(hr_dir, tmp_path, run_cli):
    path = tmp_path / "cam.toml"
    path.write_text('type = "camera"\nblur_sigma = 1.2\n')
    out = tmp_path / "lr"
    args = ("degrade", hr_dir, "--out", out, "--degradation", path, "--quiet")
    code, stdout, err = run_cli(*args)
    assert code == 0 and "camera (own settings)" in stdout, err
    assert len(list(out.iterdir())) == 5 and (tmp_path / "lr-contact-sheet.png").is_file()
    code, _, err = run_cli(*args)
    assert code != 0 and "--force" in err and "Traceback" not in err
    code, _, err = run_cli(*args, "--force")
    assert code == 0, err


def test_the_sheet_goes_where_asked_and_never_into_the_input_or_onto_an_lr_image(
    hr_dir, tmp_path, run_cli
):
    out, sheet = tmp_path / "lr", tmp_path / "look" / "sheet.png"
    sheet.parent.mkdir()
    args = ("degrade", hr_dir, "--out", out, "-n", "2", "--quiet")
    code, _, err = run_cli(*args, "--sheet", sheet)
    assert code == 0 and sheet.is_file() and not (tmp_path / "lr-contact-sheet.png").exists(), err
    code, _, err = run_cli(*args, "--sheet", hr_dir / "sheet.png", "--force")
    assert code != 0 and "inside the input folder" in err and "Traceback" not in err
    code, _, err = run_cli(*args, "--sheet", out / "im1.png", "--force")
    assert code != 0 and "also the name of an LR image" in err and "Traceback" not in err
    assert not (hr_dir / "sheet.png").exists()


def test_degrade_refuses_an_out_inside_the_input(hr_dir, run_cli):
    code, _, err = run_cli("degrade", hr_dir, "--out", hr_dir / "lr", "--quiet")
    assert code != 0 and "inside the input folder" in err and "Traceback" not in err
    assert not (hr_dir / "lr").exists()


@pytest.mark.parametrize("name", ["bicubic", "realesrgan", "camera"])
def test_show_prints_a_preset_file_that_reads_back(tmp_path, run_cli, name):
    code, stdout, err = run_cli("degrade", "--show", name)
    assert code == 0, err
    path = tmp_path / f"{name}.toml"
    path.write_text(stdout)
    assert F.settings_of(path) == F.PRESETS[name]


def test_show_a_bad_file_is_one_line(tmp_path, run_cli):
    path = tmp_path / "bad.json"
    path.write_text('{"type": "camera", "jpeg_quality": 120}')
    code, _, err = run_cli("degrade", "--show", path)
    assert code != 0 and "jpeg_quality" in err and len(err.strip().splitlines()) == 1


def test_calibrated_file_drives_the_degrader(tmp_path, run_cli):
    photos = tmp_path / "photos"
    photos.mkdir()
    write_photos(photos, 1.2, 6, 80, seed=3)
    out = tmp_path / "camera.toml"
    code, stdout, err = run_cli("calibrate", photos, "--scale", "4", "--out", out)
    assert code == 0, err
    assert "blur sigma" in stdout and "noise sigma" in stdout and "JPEG quality: 80" in stdout
    settings = F.settings_of(out)  # the estimates (their accuracy: tests/test_calibrate.py)
    written = tomllib.loads(out.read_text())
    assert settings == CameraConfig(written["blur_sigma"], written["noise_sigma"], 80)
    assert f"blur sigma: {settings.blur_sigma:.2f}" in stdout
    hr = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    assert Degrader(out, 4, seed=0)(hr).shape == (1, 3, 8, 8)
    code, _, err = run_cli("calibrate", photos, "--scale", "4", "--out", out)
    assert code != 0 and "--force" in err


def test_calibrate_refuses_a_non_toml_out(tmp_path, run_cli):
    code, _, err = run_cli("calibrate", tmp_path, "--scale", "4", "--out", tmp_path / "c.json")
    assert code != 0 and ".toml" in err and "Traceback" not in err
