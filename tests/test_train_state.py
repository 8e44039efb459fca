"""Training state (adapt.train.state): checkpoints, what --resume accepts, full disks."""

import errno
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from fakes.cli import one_line
from fakes.training import (
    TRAIN_FLAGS,
    logged_losses,
    resume_copy,
    tiny_train_config,
    train_cli_args,
    train_keeping_checkpoints,
)

from adaptsr.adapt import train as training
from adaptsr.adapt.models import load_model
from adaptsr.adapt.train import model as train_model
from adaptsr.adapt.train import state as train_state
from adaptsr.core.errors import UserError

pytestmark = pytest.mark.usefixtures("one_thread")

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def _config(safmn_setup, **kw):
    _, model, hr = safmn_setup
    return tiny_train_config(model, **{"data": [str(hr)], **kw})


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


def test_resume_from_a_checkpoint_replays_exactly(safmn_setup, tmp_path, monkeypatch):
    """Real-ESRGAN degradation (random), flips and crops: the checkpoint at iteration 2,
    resumed, gives bit-identical losses for iterations 3 and 4; validation keeps best/last."""
    cfg = _config(safmn_setup, iters=4, degradation="realesrgan", val_split=1, val_every=2)
    a = tmp_path / "a"
    result, copies = train_keeping_checkpoints(cfg, a)
    assert result.status == "finished" and (a / "adapter.safetensors").exists()
    assert (a / "adapter-best.safetensors").exists() and result.best["iter"] in (2, 4)
    vals = [json.loads(x) for x in (a / "log.jsonl").read_text().splitlines()]
    assert [v["iter"] for v in vals if v.get("event") == "val"] == [2, 4]

    b = tmp_path / "b"
    resume_copy(a, copies[2], b)
    assert logged_losses(b) == {3: logged_losses(a)[3], 4: logged_losses(a)[4]}


@pytest.mark.slow
def test_sigint_then_kill9_then_resume_matches_uninterrupted_run(safmn_setup, tmp_path):
    cfg = _config(safmn_setup, iters=24, save_every=3)
    ref = tmp_path / "ref"
    training.train(cfg, ref, progress=False)
    expected = logged_losses(ref)
    assert len(expected) == 24

    run = tmp_path / "run"
    args = [f"--{k.replace('_', '-')}={v}" for k, v in cfg.to_dict().items() if k in TRAIN_FLAGS]

    def start(extra):
        cmd = [
            sys.executable,
            "-m",
            "adaptsr.cli.app",
            "train",
            "--out",
            str(run),
            "--quiet",
            *extra,
        ]
        return subprocess.Popen(cmd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def wait_for(proc, iteration):
        log = run / "log.jsonl"
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None:
            lines = log.read_text().splitlines() if log.exists() else []
            if lines and json.loads(lines[-1]).get("iter", 0) >= iteration:
                return
            time.sleep(0.02)
        raise AssertionError(f"run ended before iteration {iteration}: {proc.communicate()}")

    proc = start([*args, f"--data={cfg.data[0]}"])
    wait_for(proc, 4)
    proc.send_signal(signal.SIGINT)  # Ctrl-C: save and exit cleanly
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    stopped = torch.load(run / "checkpoint.pt", weights_only=True)["iteration"]
    assert 4 <= stopped < 24 and b"interrupted at iteration" in out

    proc = start(["--resume"])
    wait_for(proc, stopped + 7)  # past at least two more checkpoints
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert torch.load(run / "checkpoint.pt", weights_only=True)["iteration"] < 24

    result = training.train(training.resume_config(run, {}), run, resume=True, progress=False)
    assert result.status == "finished"
    assert logged_losses(run) == expected  # bit-identical on the CPU


def test_full_disk_while_checkpointing_keeps_the_previous_one(safmn_setup, tmp_path, monkeypatch):
    calls = []
    real_save = torch.save

    def save(obj, f, *a, **kw):
        calls.append(obj["iteration"])
        if len(calls) == 2:
            f.write(b"partial")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, f, *a, **kw)

    monkeypatch.setattr(torch, "save", save)
    with pytest.raises(UserError, match="the disk is full; the previous checkpoint is intact"):
        training.train(_config(safmn_setup, iters=4), tmp_path / "run", progress=False)
    monkeypatch.setattr(torch, "save", real_save)
    assert train_state.read_checkpoint(tmp_path / "run" / "checkpoint.pt")["iteration"] == 2
    assert [p.name for p in (tmp_path / "run").iterdir() if p.name.endswith(".tmp")] == []


def _lora_state(model_path, rank, seed=0, mode="lora"):
    """A TrainState over a fresh copy of the tiny model, with a degrader of its own."""
    from adaptsr.adapt.degradations import Degrader
    from adaptsr.adapt.lora import adapter_parameters, inject_lora

    torch.manual_seed(seed)
    model = load_model(model_path)
    if mode == "lora":
        params = adapter_parameters(inject_lora(model, rank))
    else:
        params = list(model.parameters())
    opt = torch.optim.Adam(params, lr=0.1)
    cfg = training.TrainConfig(model="m", mode=mode, iters=4).resolved()
    sched = train_model.make_scheduler(opt, cfg)
    degrader = Degrader("realesrgan", 4, seed, "cpu")
    return train_state.TrainState(model, mode, opt, sched, degrader, seed=seed)


def test_train_state_round_trip_restores_every_stream(safmn_setup):
    import random

    a = _lora_state(safmn_setup[1], 2, seed=0)
    a.model(torch.rand(1, 3, 8, 8)).mean().backward()
    a.optimizer.step()
    a.scheduler.step()
    a.iteration, a.best = 3, {"iter": 2, "psnr_y": 20.0, "ssim_y": 0.5}
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    saved = a.state_dict()
    hr = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))

    def draws(s):
        out = [random.random(), float(np.random.rand()), torch.rand(3), s.degrader(hr)]
        if torch.cuda.is_available():
            out.append(torch.rand(3, device="cuda").cpu())
        return out

    expected = draws(a)
    b = _lora_state(safmn_setup[1], 2, seed=1)  # other adapters, other degrader seed
    b.load_state_dict(saved)
    got = draws(b)
    assert got[:2] == expected[:2]
    for x, y in zip(got[2:], expected[2:], strict=True):
        assert torch.equal(x, y)
    assert (b.iteration, b.best, b.exact) == (3, a.best, True)
    own, theirs = dict(b.model.named_parameters()), dict(a.model.named_parameters())
    for name, tensor in saved["trainable"].items():
        assert torch.equal(own[name], tensor) and torch.equal(own[name], theirs[name])
    assert b.scheduler.state_dict() == a.scheduler.state_dict()
    for x, y in zip(b.optimizer.state.values(), a.optimizer.state.values(), strict=True):
        assert torch.equal(x["exp_avg"], y["exp_avg"])


def test_checkpoint_of_another_rank_is_a_clear_error(safmn_setup, tmp_path, run_cli):

    two, four = _lora_state(safmn_setup[1], 2), _lora_state(safmn_setup[1], 4)
    # the first adapter whose shape differs (ranks are capped at a site's useful rank)
    first, shape = next(
        (n, list(p.shape))
        for n, p in four.model.named_parameters()
        if p.requires_grad and p.shape != dict(two.model.named_parameters())[n].shape
    )
    theirs = list(dict(two.model.named_parameters())[first].shape)
    message = f"{first} is float32{theirs} in the checkpoint, float32{shape} here"
    with pytest.raises(UserError, match=re.escape(message)):
        four.load_state_dict(two.state_dict())
    saved = two.state_dict()
    saved["trainable"] = {n: t.double() for n, t in saved["trainable"].items()}
    first = next(iter(saved["trainable"]))
    with pytest.raises(UserError, match=rf"{first} is float64\[.*\] in the checkpoint"):
        _lora_state(safmn_setup[1], 2).load_state_dict(saved)
    with pytest.raises(UserError, match="from a --mode full run, not lora"):
        two.load_state_dict(_lora_state(safmn_setup[1], 0, mode="full").state_dict())
    # through the command line: a checkpoint copied from a rank-2 run into a rank-4 run
    runs = {r: tmp_path / f"r{r}" for r in (2, 4)}
    for r, run in runs.items():
        training.train(_config(safmn_setup, iters=1, rank=r), run, progress=False)
    shutil.copy(runs[2] / "checkpoint.pt", runs[4] / "checkpoint.pt")
    code, _, err = run_cli("train", "--out", runs[4], "--resume", "--quiet")
    assert code == 1 and len(err.strip().splitlines()) == 1, err
    assert "do not match this model's adapters" in err and f"{theirs} in the checkpoint" in err
