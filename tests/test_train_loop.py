"""The training loop (adapt.train.loop): how a run stops."""

import os

import pytest
import torch
from fakes.training import train_cli_args

pytestmark = pytest.mark.usefixtures("one_thread")


def test_sigterm_checkpoints_a_training_run(edsr_files, train_hr, tmp_path):
    import signal
    import subprocess
    import sys
    import time

    hr = train_hr
    run = tmp_path / "run"
    args = [
        str(a)
        for a in train_cli_args(
            edsr_files["ckpt"], hr, run, "--iters", "100000", "--log-every", "1"
        )
    ]
    args = [a for a in args if a != "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "adaptsr.cli.app", *args[:], "--save-every", "100000"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
    )  # fmt: skip
    log = run / "log.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and not (log.exists() and '"loss"' in log.read_text()):
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    err, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "checkpoint saved" in err, err
    state = torch.load(run / "checkpoint.pt", weights_only=True)
    assert state["iteration"] >= 1 and state["run_id"]
    assert not [p for p in run.iterdir() if ".partial-" in p.name]
