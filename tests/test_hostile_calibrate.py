"""Hostile input to `adapt calibrate`: a photo given twice (a folder and a file in it, one file
three times) does not count twice, and the calibration is not written among the photos."""

import pytest
from fakes.cli import one_line, tree
from test_calibrate import write_photos


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("camera")
    write_photos(folder, 1.0, 5, 80, seed=3)
    return folder


@pytest.mark.parametrize("given", [["p0.jpg"] * 3, [".", "p1.jpg"], [".", "."]])
def test_a_photo_given_twice_is_refused(photos, tmp_path, run_cli, given):
    out = tmp_path / "cam.toml"
    code, _, err = run_cli("calibrate", *[photos / g for g in given], "--scale", "2", "--out", out)
    one_line(code, err, "is given twice")
    assert not out.exists()


@pytest.mark.parametrize("name", ["cam.toml", "deeper/cam.toml"])
def test_the_calibration_is_not_written_among_the_photos(photos, run_cli, name):
    before = tree(photos)
    code, _, err = run_cli("calibrate", photos, "--scale", "2", "--out", photos / name, "--force")
    one_line(code, err, "--out", "inside the input folder")
    assert tree(photos) == before
