"""The training loop (adapt.train.loop): how a run stops."""

import json
import os
import signal
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest
import torch
from fakes.training import logged_losses, tiny_train_config, train_cli_args

from adaptsr.adapt import train as training
from adaptsr.adapt.lora import read_adapter
from adaptsr.adapt.models import load_model
from adaptsr.adapt.train import model as train_model
from adaptsr.adapt.train import throughput
from adaptsr.core.errors import UserError

pytestmark = pytest.mark.usefixtures("one_thread")

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def _config(safmn_setup, **kw):
    _, model, hr = safmn_setup
    return tiny_train_config(model, **{"data": [str(hr)], **kw})


def test_sigterm_checkpoints_a_training_run(edsr_files, train_hr, tmp_path):

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


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(safmn_setup, tmp_path):
    cfg = _config(safmn_setup, mode="full", lr=1e30, iters=20, save_every=1)
    with pytest.raises(UserError, match="not finite at iteration (\\d+).*last good checkpoint"):
        training.train(cfg, tmp_path / "run", progress=False)
    state = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert all(
        torch.isfinite(t).all() for t in state["trainable"].values() if t.is_floating_point()
    )


def test_full_mode_and_rank_aware_outputs(safmn_setup, tmp_path):

    full = tmp_path / "full"
    training.train(_config(safmn_setup, mode="full", iters=2), full, progress=False)
    trained = load_model(full / "model.safetensors")
    base = load_model(_config(safmn_setup).model)
    changed = [
        k for k, v in trained.state_dict().items() if not torch.equal(v, base.state_dict()[k])
    ]
    assert changed  # every weight trains in full mode

    aware = tmp_path / "aware"
    cfg = _config(
        safmn_setup,
        iters=2,
        rank_aware=True,
        budget="r2",
        score_batches=2,
        score_batch=2,
        score_patch=32,
    )
    training.train(cfg, aware, progress=False)
    allocation = json.loads((aware / "rank_map.json").read_text())
    tensors = read_adapter(aware / "adapter.safetensors")[0]
    for site, rank in allocation["ranks"].items():
        if rank:
            assert tensors[f"{site}.lora_A"].shape[0] == rank
    used = sum(t.numel() for t in tensors.values())
    assert 0 < used <= allocation["budget"]["params"]


def test_paired_data_pretrain_and_validation_folder(safmn_setup, tmp_path):
    """RealSR-style pairs for training and validation; pretrain re-initialises the weights."""
    from adaptsr.adapt.lora import base_fingerprint

    rng = np.random.default_rng(1)
    for folder, n in (("pairs", 3), ("val", 1)):
        (tmp_path / folder).mkdir()
        for i in range(n):
            lr = rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)
            cv2.imwrite(str(tmp_path / folder / f"x{i}_LR4.png"), lr)
            cv2.imwrite(str(tmp_path / folder / f"x{i}_HR.png"), cv2.resize(lr, (48, 48)))
    cfg = _config(
        safmn_setup,
        data=[str(tmp_path / "pairs")],
        val=str(tmp_path / "val"),
        val_every=1,
        mode="pretrain",
        iters=2,
    )
    result = training.train(cfg, tmp_path / "run", progress=False)
    log = [json.loads(x) for x in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert log[0]["images"] == 3 and log[0]["val_images"] == 1
    vals = [r for r in log if r.get("event") == "val"]
    assert [r["iter"] for r in vals] == [1, 2] and all(np.isfinite(r["psnr_y"]) for r in vals)
    assert result.best["psnr_y"] == max(r["psnr_y"] for r in vals)
    base = load_model(cfg.model)
    trained = load_model(tmp_path / "run" / "model.safetensors")
    assert base_fingerprint(trained) != base_fingerprint(base)
    # two Adam steps move a weight by at most 2 * lr = 4e-4: larger changes mean re-initialised
    moved = max(
        float((v - base.state_dict()[k]).abs().max()) for k, v in trained.state_dict().items()
    )
    assert moved > 1e-2
    assert (tmp_path / "run" / "model-best.safetensors").exists()
    # the same numbers reach TensorBoard (installed with the dev extra)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    board = EventAccumulator(str(tmp_path / "run" / "tensorboard"))
    board.Reload()
    psnr = [(e.step, e.value) for e in board.Scalars("val/psnr_y")]
    assert psnr == [(r["iter"], pytest.approx(r["psnr_y"], rel=1e-6)) for r in vals]
    assert [e.step for e in board.Scalars("train/loss")] == [1, 2]


def test_pretrain_reinitialises_every_parameter(tmp_path):
    """Position-bias tables and custom norms too, not only layers with reset_parameters."""
    from spandrel.architectures.SwinIR import SwinIR

    from adaptsr.adapt.models import model_from_state_dict, save_model

    net = SwinIR(upscale=2, img_size=16, window_size=4, embed_dim=12, depths=[2], num_heads=[2],
                 mlp_ratio=2.0, upsampler="pixelshuffledirect", img_range=1.0)  # fmt: skip
    with torch.no_grad():
        for p in net.parameters():
            p.add_(5.0)  # far from any initialisation
    path = save_model(model_from_state_dict(net.state_dict()), tmp_path / "trained.safetensors")
    fresh = train_model.build_base(training.TrainConfig(model=str(path), mode="pretrain"))
    trained = dict(net.named_parameters())
    for name, p in fresh.named_parameters():
        assert (p - trained[name]).abs().min() > 1.0, name


def test_callbacks_see_every_event_in_order(safmn_setup, tmp_path):
    class Recorder(training.Callback):
        def __init__(self, fail_at=None):
            self.calls, self.fail_at = [], fail_at

        def on_start(self, record):
            self.calls.append((record["event"], record["iter"]))

        def on_step(self, iteration):
            self.calls.append(("step", iteration))
            if iteration == self.fail_at:
                raise UserError("stop here")

        def on_log(self, record):
            self.calls.append(("log", record["iter"], record["loss"]))

        def on_validate(self, record):
            self.calls.append(("val", record["iter"], record["best"]))

        def on_end(self, record):
            self.calls.append((record["event"], record["iter"]))

        def close(self):
            self.calls.append(("close",))

    seen = Recorder()
    cfg = _config(safmn_setup, iters=3, log_every=2, val_split=1, val_every=2)
    training.train(cfg, tmp_path / "run", progress=False, callbacks=[seen])
    losses = logged_losses(tmp_path / "run")
    assert sorted(losses) == [2, 3]
    assert seen.calls == [
        ("start", 0), ("step", 1), ("step", 2), ("log", 2, losses[2]), ("val", 2, True),
        ("step", 3), ("log", 3, losses[3]), ("val", 3, seen.calls[7][2]), ("done", 3), ("close",),
    ]  # fmt: skip
    failing = Recorder(fail_at=2)
    with pytest.raises(UserError, match="stop here"):
        training.train(cfg, tmp_path / "run", force=True, progress=False, callbacks=[failing])
    assert failing.calls == [("start", 0), ("step", 1), ("step", 2), ("close",)]


def test_trainer_setup_step_and_hooks_in_order(safmn_setup, tmp_path):
    """The Trainer's parts on their own: setup reports nothing, each step reports its own
    iteration to every hook in order, and a checkpoint is due when save_every says."""
    from adaptsr.adapt.train.config import prepare_run_dir
    from adaptsr.adapt.train.distributed import Dist

    class Recorder(training.Callback):
        def __init__(self, name, calls):
            self.name, self.calls = name, calls

        def on_step(self, iteration):
            self.calls.append((self.name, "step", iteration))

        def on_log(self, record):
            self.calls.append((self.name, "log", record["iter"]))

    calls = []
    run = tmp_path / "run"
    prepare_run_dir(run, resume=False, force=False)
    cfg = _config(safmn_setup, iters=4, log_every=2, save_every=3).resolved()
    hooks = [Recorder("a", calls), Recorder("b", calls)]
    trainer = training.Trainer(cfg, run, False, False, Dist(), torch.device("cpu"), hooks)
    assert trainer.setup() is None and calls == [] and trainer.iteration == 0
    for _ in range(3):
        trainer.step()
    assert calls == [
        ("a", "step", 1), ("b", "step", 1), ("a", "step", 2), ("b", "step", 2),
        ("a", "log", 2), ("b", "log", 2), ("a", "step", 3), ("b", "step", 3),
    ]  # fmt: skip
    assert trainer.iteration == 3 and trainer.last_saved == 3
    assert torch.load(run / "checkpoint.pt", weights_only=False)["iteration"] == 3
    trainer.callbacks.close()


def test_rank_aware_training_allocates_as_adapt_allocate(safmn_setup, tmp_path, run_cli):
    from dataclasses import replace

    from adaptsr.adapt.rankmap import RANK_MAP_FORMAT, RankAllocation

    _, model, _ = safmn_setup
    # four 64 px images to train on (--patch 64) and four of 48 px that only the 32 px scoring
    # crops can use: `adapt allocate --patch 32` scores all eight, so must training
    hr = tmp_path / "mixed"
    hr.mkdir()
    rng = np.random.default_rng(1)
    for i, side in enumerate([64] * 4 + [48] * 4):
        small = rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)
        cv2.imwrite(str(hr / f"{i:03d}.png"), cv2.resize(small, (side, side)))
    same = ["--budget", "r2", "--seed", 3, "--score", "fisher", "--allocator", "marginal",
            "--r-min", 0, "--r-max", 3, "--normalise", "size", "--degradation", "realesrgan",
            "--device", "cpu"]  # fmt: skip
    allocated = tmp_path / "ranks.json"
    code, _, err = run_cli("allocate", "--model", model, "--data", hr, "--out", allocated,
                           "--batches", 3, "--batch", 2, "--patch", 32, *same)  # fmt: skip
    assert code == 0, err
    common = ["--model", model, "--data", hr, "--iters", 1, "--batch", 2, "--patch", 64,
              "--workers", 0, "--quiet"]  # fmt: skip
    aware = tmp_path / "aware"
    code, _, err = run_cli("train", *common, "--out", aware, "--rank-aware", "--score-batches", 3,
                           "--score-batch", 2, "--score-patch", 32, *same)  # fmt: skip
    assert code == 0, err
    a = json.loads(allocated.read_text())
    t = json.loads((aware / "rank_map.json").read_text())
    assert t["ranks"] == a["ranks"] and len(set(a["ranks"].values())) > 1
    assert set(t) == set(a) and t["format"] == a["format"] == RANK_MAP_FORMAT
    assert t["scores"] == pytest.approx(a["scores"], rel=1e-9)
    assert t["spearman_rho"] == pytest.approx(a["spearman_rho"])
    for key in ("budget", "used_params", "base_params", "sites"):
        assert t[key] == a[key], key
    for key in ("score", "normalise", "allocator", "r_min", "r_max", "seed", "batches", "batch"):
        assert t["settings"][key] == a["settings"][key], key
    assert t["settings"]["processes"] == 1
    tensors = read_adapter(aware / "adapter.safetensors")[0]
    assert {k.removesuffix(".lora_A") for k in tensors if k.endswith(".lora_A")} == {
        site for site, r in t["ranks"].items() if r
    }
    for site, r in t["ranks"].items():
        if r:
            assert tensors[f"{site}.lora_A"].shape[0] == r

    # --rank-map: the run's copy is the same rank map, in the same schema, plus its source
    copied = tmp_path / "copied"
    code, _, err = run_cli("train", *common, "--out", copied, "--rank-map", allocated)
    assert code == 0, err
    copy = json.loads((copied / "rank_map.json").read_text())
    assert set(copy) == set(a) and copy["source"] == str(allocated)
    assert RankAllocation.read(copied / "rank_map.json") == replace(
        RankAllocation.read(allocated), source=str(allocated)
    )
    # a hand-written map: the copy has every field, the optional ones empty
    hand = tmp_path / "hand.json"
    hand.write_text(json.dumps({"ranks": {next(iter(a["ranks"])): 2}}))
    code, _, err = run_cli("train", *common, "--out", tmp_path / "hand", "--rank-map", hand)
    assert code == 0, err
    copy = json.loads((tmp_path / "hand" / "rank_map.json").read_text())
    assert set(copy) == set(a) and copy["format"] == RANK_MAP_FORMAT
    assert (copy["scores"], copy["sites"], copy["budget"], copy["settings"]) == ({}, {}, None, {})
    assert RankAllocation.read(tmp_path / "hand" / "rank_map.json").ranks == {
        next(iter(a["ranks"])): 2
    }


def test_benchmark_row_counts_trainable_parameters(safmn_setup):
    from adaptsr.adapt.lora import inject_lora, lora_report

    model_path = str(safmn_setup[1])
    rows = [
        throughput._bench_one(model_path, mode, 1, 32, 1, 0, "cpu", 2, "reference")
        for mode in ("lora", "full")
    ]
    lora_model = inject_lora(load_model(model_path), 2)
    assert rows[0]["trainable"] == lora_report(lora_model)["total"]
    assert rows[1]["trainable"] == sum(p.numel() for p in load_model(model_path).parameters())
    assert all(r["it_s"] > 0 and r["peak_rss_mb"] >= r["rss_before_mb"] > 0 for r in rows), rows
    table = training.bench_table(rows).splitlines()
    assert len(table) == 4 and table[2].startswith(f"| {model_path} | lora | reference |")
