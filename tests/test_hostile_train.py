"""Hostile input to `adapt train`: options that would be silently ignored are refused in one
line before a run folder is written (--val-save-images without validation, a --gan-start the
run never reaches)."""

import pytest
from fakes.cli import one_line
from fakes.training import tiny_train_config

from adaptsr.core.errors import UserError


@pytest.fixture
def train_args(edsr_files, train_hr):
    return [
        "train", "--model", edsr_files["ckpt"], "--data", train_hr, "--iters", "4",
        "--batch", "1", "--patch", "16", "--device", "cpu", "--degradation", "bicubic",
        "--quiet",
    ]  # fmt: skip


def test_validation_pictures_without_validation_are_refused(train_args, tmp_path, run_cli):
    run = tmp_path / "run"
    code, _, err = run_cli(*train_args, "--val-save-images", "2", "--out", run)
    one_line(code, err, "--val-save-images", "--val DIR")
    assert not run.exists()


def test_validation_pictures_with_validation_pass_the_check(edsr_files, train_hr):
    for where in ({"val": str(train_hr)}, {"val_split": 1}, {"val": str(train_hr), "val_every": 0}):
        cfg = tiny_train_config(edsr_files["ckpt"], [str(train_hr)], val_save_images=2, **where)
        assert cfg.resolved().val_save_images == 2


@pytest.mark.parametrize("start", ["4", "9"])
def test_a_gan_start_the_run_never_reaches_is_refused(train_args, tmp_path, run_cli, start):
    run = tmp_path / "run"
    loss = ["--loss", "l1:1,gan:0.1", "--gan-start", start]
    code, _, err = run_cli(*train_args, *loss, "--out", run)
    one_line(code, err, f"--gan-start {start} is not below --iters 4")
    assert not run.exists()


def test_a_gan_start_before_the_last_iteration_passes(edsr_files, train_hr):
    cfg = tiny_train_config(edsr_files["ckpt"], [str(train_hr)], loss="l1:1,gan:0.1", gan_start=5)
    assert cfg.resolved().gan_start == 5  # iteration 6 trains the gan term
    with pytest.raises(UserError, match="--gan-start 6 is not below --iters 6"):
        tiny_train_config(edsr_files["ckpt"], [], loss="l1:1,gan:0.1", gan_start=6).resolved()
