"""--resume against what changed since the run started (issue 29): a damaged run log, training
images added, removed or changed; and a run folder inside its own training data."""

import json

import cv2
import numpy as np
import pytest
import torch
from fakes.images import write_noise_pngs
from fakes.models import one_block_edsr as tiny_edsr

from adaptsr.adapt.train.callbacks import JsonlLog


@pytest.fixture(autouse=True)
def one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture
def setup(tmp_path):
    from adaptsr.adapt.models import save_model

    ckpt = save_model(tiny_edsr(), tmp_path / "tiny.safetensors")
    return ckpt, write_noise_pngs(tmp_path / "hr", 4, 32, 32, seed=7)


def _train(run_cli, ckpt, hr, out, *more):
    return run_cli(
        "train", "--model", ckpt, "--data", hr, "--out", out, "--patch", "16",
        "--batch", "1", "--device", "cpu", "--workers", "0", "--degradation", "bicubic",
        "--save-every", "1", *more,
    )  # fmt: skip


def _started(run_cli, ckpt, hr, run):
    """A run of 1 iteration whose config now asks for 2: --resume has one step left."""
    code, _, err = _train(run_cli, ckpt, hr, run, "--quiet", "--iters", "1")
    assert code == 0, err
    config = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**config, "iters": 2}))


def _line(code, err):
    assert code != 0 and "Traceback" not in err and "internal error" not in err, err
    return err.strip().splitlines()[-1]


def test_a_damaged_run_log_is_named_and_its_bad_lines_left_out(setup, tmp_path, run_cli):
    log = tmp_path / "log.jsonl"
    log.write_bytes(
        b'{"iter": 1}\n\xff\xfe{"iter": 1}\n{"iter": true}\nnot json\n{"iter": 3}\n{"it'
    )
    assert JsonlLog(log).trim(2) == 3  # cut short at the end: a kill, not damage
    assert log.read_text() == '{"iter": 1}\n'

    ckpt, hr = setup
    run = tmp_path / "run"
    _started(run_cli, ckpt, hr, run)
    with open(run / "log.jsonl", "ab") as f:
        f.write(b"\x80\x81 not text\n")
    code, _, err = _train(run_cli, ckpt, hr, run, "--resume")
    assert code == 0 and "internal error" not in err, err
    assert f"note: {run / 'log.jsonl'}: left out 1 damaged line(s)" in err
    records = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]
    assert any(r.get("iter") == 2 for r in records), records  # the run went on


def test_resume_names_changed_training_data_and_needs_a_flag(setup, tmp_path, run_cli):
    ckpt, hr = setup
    run = tmp_path / "run"
    _started(run_cli, ckpt, hr, run)
    recorded = json.loads((run / "data.json").read_text())["files"]
    assert sorted(recorded) == sorted(str(hr / f"{i}.png") for i in range(4))

    cv2.imwrite(str(hr / "9.png"), np.zeros((40, 40, 3), np.uint8))  # added
    (hr / "0.png").unlink()  # removed
    cv2.imwrite(str(hr / "1.png"), np.zeros((48, 32, 3), np.uint8))  # another picture
    before = (run / "checkpoint.pt").read_bytes()
    line = _line(*_train(run_cli, ckpt, hr, run, "--resume")[::2])
    assert "training data changed since the run" in line, line
    assert f"1 added (e.g. {hr / '9.png'})" in line and f"1 removed (e.g. {hr / '0.png'})" in line
    assert f"1 changed size (e.g. {hr / '1.png'})" in line and "--resume-changed-data" in line
    assert (run / "checkpoint.pt").read_bytes() == before  # refused before any work

    code, _, err = _train(run_cli, ckpt, hr, run, "--resume", "--resume-changed-data")
    assert code == 0, err
    assert "note: the training data changed" in err
    now = json.loads((run / "data.json").read_text())["files"]
    assert str(hr / "9.png") in now and str(hr / "0.png") not in now  # recorded anew
    assert torch.load(run / "checkpoint.pt", weights_only=True)["iteration"] == 2


def test_unchanged_data_resumes_and_the_flag_needs_resume(setup, tmp_path, run_cli):
    ckpt, hr = setup
    run = tmp_path / "run"
    _started(run_cli, ckpt, hr, run)
    code, _, err = _train(run_cli, ckpt, hr, run, "--resume")
    assert code == 0 and "changed" not in err, err
    line = _line(*_train(run_cli, ckpt, hr, tmp_path / "new", "--resume-changed-data")[::2])
    assert "--resume-changed-data goes with --resume" in line
    (run / "data.json").write_bytes(b"\xff\x00")
    line = _line(*_train(run_cli, ckpt, hr, run, "--resume")[::2])
    assert f"cannot read {run / 'data.json'}" in line


def test_a_run_folder_inside_its_training_data_is_refused(setup, run_cli):
    ckpt, hr = setup
    line = _line(*_train(run_cli, ckpt, hr, hr / "run")[::2])
    assert f"--out {hr / 'run'} is inside the input folder {hr}" in line
    assert not (hr / "run").exists()
