"""One rule for outputs among inputs (adaptsr.core.fileio.check_outside_inputs), used by every
command that writes beside what it reads: the allocation heatmap, `eval --compare`, `upscale
--out` and `study --out` may not land in an input folder, whatever --force says."""

import os

import cv2
import numpy as np
import pytest
from fakes.exports import nearest_x2_onnx

from adaptsr.adapt.allocate import AllocationJob
from adaptsr.adapt.study import StudySettings, check_settings
from adaptsr.core.errors import UserError

RULE = "is inside the input folder"


def _pngs(folder, names, side=24):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for name in names:
        cv2.imwrite(str(folder / name), rng.integers(0, 256, (side, side, 3), np.uint8))
    return folder


def test_the_allocation_heatmap_stays_out_of_the_data(tmp_path):
    data = _pngs(tmp_path / "data", ["a.png"])
    job = AllocationJob(model="m.safetensors", out=str(data / "ranks.json"), data=str(data),
                        force=True)  # fmt: skip
    with pytest.raises(UserError, match=f"the heatmap {data / 'ranks.png'} {RULE} {data}"):
        job.check()
    os.symlink(data, tmp_path / "alias")  # through a link too
    lr = AllocationJob(model="m.safetensors", out=str(tmp_path / "alias" / "r.json"),
                       lr_dir=str(data), hr_dir=str(tmp_path))  # fmt: skip
    with pytest.raises(UserError, match=RULE):
        lr.check()


def test_eval_compare_stays_out_of_the_image_folders(run_cli, tmp_path):
    hr = _pngs(tmp_path / "hr", ["a.png"], side=32)
    lr = _pngs(tmp_path / "lr", ["a.png"], side=16)
    model = nearest_x2_onnx(tmp_path / "x2.onnx")
    common = ("eval", "--onnx", model, "--provider", "cpu", "--hr", hr, "--lr", lr, "--quiet",
              "--no-perceptual", "--force")  # fmt: skip
    for folder in (hr, lr):
        code, _, err = run_cli(*common, "--compare", folder / "cmp.png")
        assert code == 1 and err.count("\n") == 1, err
        assert f"--compare {folder / 'cmp.png'} {RULE} {folder}" in err
        assert not (folder / "cmp.png").exists()
    code, _, err = run_cli(*common, "--compare", tmp_path / "cmp.png")
    assert code == 0 and (tmp_path / "cmp.png").is_file(), err


def test_upscale_out_stays_out_of_the_input_folders(run_cli, tmp_path):
    src = _pngs(tmp_path / "src", ["a.png", "b.png"])
    model = ("--onnx", nearest_x2_onnx(tmp_path / "x2.onnx"), "--provider", "cpu", "--force")
    for inputs, out in (
        ((src,), src / "up"),  # inside a folder named: its next run would read nothing new, but
        ((src,), src),  # one rule for every command
        ((src / "a.png",), src),  # the output would replace the input
    ):
        code, _, err = run_cli("upscale", *inputs, "--out", out, *model)
        assert code == 1 and err.count("\n") == 1, err
        assert f"--out {out} {RULE}" in err
    assert sorted(p.name for p in src.iterdir()) == ["a.png", "b.png"]
    # a file named directly: its folder is not read, so a folder below it is a fine --out
    code, _, err = run_cli("upscale", src / "a.png", "--out", src / "up", *model)
    assert code == 0 and cv2.imread(str(src / "up" / "a.png")).shape == (48, 48, 3), err


def test_a_study_stays_out_of_its_image_folders(tmp_path):
    data, val = _pngs(tmp_path / "train", ["a.png"]), _pngs(tmp_path / "val", ["v.png"])
    settings = StudySettings(model="m", data=[str(data)], val=str(val), runs=["r1"])
    for out in (data / "study", val, tmp_path / "train"):
        with pytest.raises(UserError, match=f"--out {out} {RULE}"):
            check_settings(settings, out, force=True)
    check_settings(settings, tmp_path / "study", force=False)
