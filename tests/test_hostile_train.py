"""Hostile input to `adapt train`: options that would be silently ignored are refused in one
line before a run folder is written (--val-save-images without validation)."""

import pytest
from fakes.cli import one_line
from fakes.training import tiny_train_config


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
