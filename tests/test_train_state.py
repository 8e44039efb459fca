"""Training state (adapt.train.state): checkpoints, what --resume accepts, full disks."""

import json

import pytest
import torch
from fakes.cli import one_line
from fakes.training import train_cli_args

from adaptsr.core.errors import UserError

pytestmark = pytest.mark.usefixtures("one_thread")


def test_resume_refuses_a_checkpoint_of_another_run_or_shape(
    edsr_files, train_hr, tmp_path, run_cli
):
    hr = train_hr
    a, b = tmp_path / "a", tmp_path / "b"
    for run in (a, b):
        code, _, err = run_cli(*train_cli_args(edsr_files["ckpt"], hr, run, "--iters", "1"))
        assert code == 0, err
        cfg = json.loads((run / "config.json").read_text())
        cfg["iters"] = 3
        (run / "config.json").write_text(json.dumps(cfg))
    assert (
        json.loads((a / "config.json").read_text())["run_id"]
        != json.loads((b / "config.json").read_text())["run_id"]
    )
    original = (b / "checkpoint.pt").read_bytes()
    (b / "checkpoint.pt").write_bytes((a / "checkpoint.pt").read_bytes())  # same shapes
    code, _, err = run_cli("train", "--out", b, "--resume", "--quiet")
    one_line(code, err, "another run")
    # a 1-element optimizer moment that Adam would broadcast over a LoRA matrix
    state = torch.load(b / "checkpoint.pt", weights_only=True)
    state = torch.load(a / "checkpoint.pt", weights_only=True)
    first = next(iter(state["optimizer"]["state"]))
    state["optimizer"]["state"][first]["exp_avg"] = torch.zeros(1)
    torch.save(state, a / "checkpoint.pt")
    code, _, err = run_cli("train", "--out", a, "--resume", "--quiet")
    one_line(code, err, "exp_avg")
    (b / "checkpoint.pt").write_bytes(original)
    code, _, err = run_cli("train", "--out", b, "--resume", "--quiet")
    assert code == 0, err


def test_a_full_disk_during_a_checkpoint_is_a_user_error(tmp_path, monkeypatch):
    """torch.save reports a full disk as a RuntimeError of its zip writer (no errno)."""
    from adaptsr.adapt.train import state

    def full(obj, f):
        f.write(b"\0" * 1000)
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64")

    monkeypatch.setattr(state.torch, "save", full)
    monkeypatch.setattr(state, "_disk_full", lambda folder: True)
    with pytest.raises(UserError, match="disk is full; no checkpoint kept"):
        state.write_checkpoint({"a": 1}, tmp_path / "checkpoint.pt")
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setattr(state, "_disk_full", lambda folder: False)
    with pytest.raises(RuntimeError, match="unexpected pos"):  # not the disk: a real bug
        state.write_checkpoint({"a": 1}, tmp_path / "checkpoint.pt")
    assert list(tmp_path.iterdir()) == []
