"""Training runs small enough for the tests: a few CPU iterations on tiny files."""

import json
import shutil

import numpy as np

from adaptsr.adapt import train as training
from adaptsr.adapt.allocation_settings import AllocationSettings
from adaptsr.adapt.train import state as train_state
from fakes.images import write_textured_pngs
from fakes.models import save_tiny_safmn

# The TrainConfig fields that `adapt train` takes as flags of the same name (a run the tests start
# in a subprocess from a tiny_train_config).
TRAIN_FLAGS = ("model", "iters", "batch", "patch", "workers", "device", "degradation")
TRAIN_FLAGS += ("save_every", "log_every", "val_every")


def tiny_train_config(model, data, **changes) -> training.TrainConfig:
    """Six iterations of batch 2 on 32x32 patches, on the CPU in this process, a checkpoint
    every 2; `changes` replace fields, allocation settings by their own names."""
    base = dict(
        model=str(model),
        data=data,
        iters=6,
        batch=2,
        patch=32,
        workers=0,
        device="cpu",
        degradation="bicubic",
        save_every=2,
        log_every=1,
        val_every=0,
    )
    allocation = {k: changes.pop(k) for k in list(changes) if k in AllocationSettings.names()}
    return training.TrainConfig(**{**base, **changes}, allocation=AllocationSettings(**allocation))


def train_keeping_checkpoints(cfg: training.TrainConfig, out):
    """Train `cfg` into `out`; returns (result, {iteration: the bytes of the first checkpoint
    written at it}), for resume tests that restart from a middle checkpoint."""
    copies: dict[int, bytes] = {}
    write = train_state.write_checkpoint

    def keep_copy(state, path):
        write(state, path)
        copies.setdefault(state["iteration"], path.read_bytes())

    train_state.write_checkpoint = keep_copy
    try:
        result = training.train(cfg, out, progress=False)
    finally:
        train_state.write_checkpoint = write
    return result, copies


def resume_copy(run, checkpoint: bytes, out):
    """Resume `run`'s config in a new folder `out` from `checkpoint` (bytes of one of its
    checkpoints, as train_keeping_checkpoints keeps them); returns the result."""
    out.mkdir()
    shutil.copy(run / "config.json", out / "config.json")
    (out / "checkpoint.pt").write_bytes(checkpoint)
    return training.train(training.resume_config(out, {}), out, resume=True, progress=False)


def study_folder(root):
    """A tiny SAFMN x4 checkpoint in `root`, 6 training and 2 validation textured images;
    returns (root, checkpoint path), what the study tests run on."""
    model = save_tiny_safmn(root / "tiny.safetensors")
    rng = np.random.default_rng(0)
    for folder, count in (("train", 6), ("val", 2)):
        write_textured_pngs(root / folder, count, rng)
    return root, model


def logged_losses(run_dir) -> dict[int, float]:
    """Iteration -> loss, from the run's log.jsonl."""
    lines = (run_dir / "log.jsonl").read_text().splitlines()
    return {r["iter"]: r["loss"] for r in map(json.loads, lines) if "loss" in r}


def train_cli_args(model, data, out, *more):
    """`adapt train` arguments for two quiet CPU iterations of batch 1 on 16x16 patches, a
    checkpoint after each; `more` are appended (a later flag wins)."""
    return (
        "train", "--model", model, "--data", data, "--out", out, "--iters", "2",
        "--patch", "16", "--batch", "1", "--device", "cpu", "--workers", "0",
        "--degradation", "bicubic", "--save-every", "1", "--quiet", *more,
    )  # fmt: skip
