"""Training on several processes (adapt.train.distributed): DDP matches one process."""

import json
import os
import subprocess
import sys

import pytest
import torch
from fakes.training import TRAIN_FLAGS, logged_losses, tiny_train_config

from adaptsr.adapt import train as training
from adaptsr.adapt.lora import read_adapter
from adaptsr.adapt.models import load_model

# One intra-op thread: tiny convs on a busy 2-core machine run several times faster, and the
# subprocesses below use the same count, which bit-exact comparisons need.
pytestmark = pytest.mark.usefixtures("one_thread")

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def _config(safmn_setup, **kw):
    _, model, hr = safmn_setup
    return tiny_train_config(model, **{"data": [str(hr)], **kw})


@pytest.mark.slow
def test_ddp_two_processes_match_one_process(safmn_setup, tmp_path):
    cfg = _config(safmn_setup, iters=3, batch=4, save_every=0)
    single = tmp_path / "single"
    training.train(cfg, single, progress=False)
    ddp = tmp_path / "ddp"
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in cfg.to_dict().items() if k in TRAIN_FLAGS]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    cmd += ["-m", "adaptsr.cli.app", "train", "--out", str(ddp), "--quiet", f"--data={cfg.data[0]}"]
    proc = subprocess.run(cmd + flags, env=ENV, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    start = json.loads((ddp / "log.jsonl").read_text().splitlines()[0])
    assert start["world"] == 2
    one, two = logged_losses(single), logged_losses(ddp)
    assert sorted(two) == [1, 2, 3]
    for i in one:
        assert two[i] == pytest.approx(one[i], rel=1e-5, abs=1e-6)
    a = read_adapter(single / "adapter.safetensors")[0]
    b = read_adapter(ddp / "adapter.safetensors")[0]
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-6)


@pytest.mark.slow
def test_ddp_rank_aware_processes_share_one_allocation(safmn_setup, tmp_path):
    """Each process scores its slice of every batch; the averaged scores give every process
    the same ranks (DistributedDataParallel refuses processes with different parameters).
    Scored at initialisation (no warm-up) for the reference below to recompute them."""
    _, model, hr = safmn_setup
    run = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    cmd += ["-m", "adaptsr.cli.app", "train", "--out", str(run), "--quiet", f"--data={hr}",
            f"--model={model}", "--iters=1", "--batch=2", "--patch=32", "--workers=0",
            "--device=cpu", "--degradation=bicubic", "--rank-aware", "--budget=r2",
            "--score=fisher", "--r-min=0", "--score-batches=2", "--score-batch=2",
            "--score-patch=32", "--score-warmup=0"]  # fmt: skip
    proc = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    allocation = json.loads((run / "rank_map.json").read_text())
    assert allocation["settings"]["processes"] == 2
    # the scores are the mean of the two processes' scores on their slices
    from types import SimpleNamespace

    from adaptsr.adapt import data
    from adaptsr.adapt.allocate import entry_batches, score_sites

    base = load_model(model)
    entries = data.scan([hr], 4, 32).entries
    common = dict(scale=4, count=2, batch=2, patch=32, degradation="bicubic", seed=0)

    def scores(rank):
        slices = SimpleNamespace(rank=rank, world=2)
        batches = entry_batches(entries, False, **common, device="cpu", dist=slices)
        return score_sites(base, batches, "fisher").scores

    per_process = [scores(0), scores(1)]
    assert per_process[0] != per_process[1]
    mean = {k: (per_process[0][k] + per_process[1][k]) / 2 for k in per_process[0]}
    assert allocation["scores"] == pytest.approx(mean, rel=1e-6)
    tensors = read_adapter(run / "adapter.safetensors")[0]
    for site, rank in allocation["ranks"].items():
        if rank:
            assert tensors[f"{site}.lora_A"].shape[0] == rank
