import errno
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest
import torch
from fakes.images import write_textured_pngs
from fakes.models import save_tiny_safmn
from fakes.training import logged_losses, tiny_train_config

from adaptsr.adapt import train as training
from adaptsr.adapt.allocation_settings import AllocationSettings
from adaptsr.adapt.lora import lora_sites, read_adapter
from adaptsr.adapt.models import load_model
from adaptsr.adapt.train import model as train_model
from adaptsr.adapt.train import state as train_state
from adaptsr.adapt.train import throughput
from adaptsr.core.errors import UserError

# One intra-op thread: tiny convs on a busy 2-core machine run several times faster, and the
# subprocesses below use the same count, which bit-exact comparisons need.
pytestmark = pytest.mark.usefixtures("one_thread")


ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A tiny SAFMN x4 checkpoint (5k parameters) and 8 textured 48x48 images."""
    root = tmp_path_factory.mktemp("train")
    model = save_tiny_safmn(root / "tiny.safetensors")
    hr = write_textured_pngs(root / "hr", 8, np.random.default_rng(0))
    return root, model, hr


def _config(setup, **kw):
    _, model, hr = setup
    return tiny_train_config(model, **{"data": [str(hr)], **kw})


def test_schedules_follow_the_paper():
    def lrs(mode, iters):
        opt = torch.optim.Adam([torch.zeros(1, requires_grad=True)], lr=1.0)
        cfg = training.TrainConfig(model="m", mode=mode, iters=iters).resolved()
        sched = train_model.make_scheduler(opt, cfg)
        out = []
        for _ in range(iters):
            out.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
        return out

    lora = lrs("lora", 100)  # x0.75 after 50, 75 and 90 iterations
    assert lora[49] == 1.0 and lora[50] == 0.75 and lora[74] == 0.75
    assert lora[75] == pytest.approx(0.75**2) and lora[90] == pytest.approx(0.75**3)
    full = lrs("full", 100)  # halved after 50, 80, 90, 95
    assert [full[i] for i in (49, 50, 80, 90, 95, 99)] == [1, 0.5, 0.25, 0.125, 0.0625, 0.0625]
    cfg = training.TrainConfig(model="m").resolved()
    assert (cfg.lr, cfg.degradation) == (1e-3, "realesrgan")
    cfg = training.TrainConfig(model="m", mode="pretrain").resolved()
    assert (cfg.lr, cfg.degradation) == (2e-4, "bicubic")


def test_resume_from_a_checkpoint_replays_exactly(setup, tmp_path, monkeypatch):
    """Real-ESRGAN degradation (random), flips and crops: the checkpoint at iteration 2,
    resumed, gives bit-identical losses for iterations 3 and 4; validation keeps best/last."""
    cfg = _config(setup, iters=4, degradation="realesrgan", val_split=1, val_every=2)
    copies = {}
    write = train_state.write_checkpoint

    def keep_copy(state, path):
        write(state, path)
        copies.setdefault(state["iteration"], path.read_bytes())

    monkeypatch.setattr(train_state, "write_checkpoint", keep_copy)
    a = tmp_path / "a"
    result = training.train(cfg, a, progress=False)
    monkeypatch.setattr(train_state, "write_checkpoint", write)
    assert result.status == "finished" and (a / "adapter.safetensors").exists()
    assert (a / "adapter-best.safetensors").exists() and result.best["iter"] in (2, 4)
    vals = [json.loads(x) for x in (a / "log.jsonl").read_text().splitlines()]
    assert [v["iter"] for v in vals if v.get("event") == "val"] == [2, 4]

    b = tmp_path / "b"
    b.mkdir()
    shutil.copy(a / "config.json", b / "config.json")
    (b / "checkpoint.pt").write_bytes(copies[2])
    training.train(training.resume_config(b, {}), b, resume=True, progress=False)
    assert logged_losses(b) == {3: logged_losses(a)[3], 4: logged_losses(a)[4]}


@pytest.mark.slow
def test_sigint_then_kill9_then_resume_matches_uninterrupted_run(setup, tmp_path):
    cfg = _config(setup, iters=24, save_every=3)
    ref = tmp_path / "ref"
    training.train(cfg, ref, progress=False)
    expected = logged_losses(ref)
    assert len(expected) == 24

    run = tmp_path / "run"
    args = [f"--{k.replace('_', '-')}={v}" for k, v in cfg.to_dict().items() if k in _FLAGS]

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


_FLAGS = ("model", "iters", "batch", "patch", "workers", "device", "degradation", "save_every")
_FLAGS += ("log_every", "val_every")


@pytest.mark.slow
def test_ddp_two_processes_match_one_process(setup, tmp_path):
    cfg = _config(setup, iters=3, batch=4, save_every=0)
    single = tmp_path / "single"
    training.train(cfg, single, progress=False)
    ddp = tmp_path / "ddp"
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in cfg.to_dict().items() if k in _FLAGS]
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


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(setup, tmp_path):
    cfg = _config(setup, mode="full", lr=1e30, iters=20, save_every=1)
    with pytest.raises(UserError, match="not finite at iteration (\\d+).*last good checkpoint"):
        training.train(cfg, tmp_path / "run", progress=False)
    state = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert all(
        torch.isfinite(t).all() for t in state["trainable"].values() if t.is_floating_point()
    )


def test_full_disk_while_checkpointing_keeps_the_previous_one(setup, tmp_path, monkeypatch):
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
        training.train(_config(setup, iters=4), tmp_path / "run", progress=False)
    monkeypatch.setattr(torch, "save", real_save)
    assert train_state.read_checkpoint(tmp_path / "run" / "checkpoint.pt")["iteration"] == 2
    assert [p.name for p in (tmp_path / "run").iterdir() if p.name.endswith(".tmp")] == []


def test_full_mode_and_rank_aware_outputs(setup, tmp_path):
    from adaptsr.adapt.models import load_model

    full = tmp_path / "full"
    training.train(_config(setup, mode="full", iters=2), full, progress=False)
    trained = load_model(full / "model.safetensors")
    base = load_model(_config(setup).model)
    changed = [
        k for k, v in trained.state_dict().items() if not torch.equal(v, base.state_dict()[k])
    ]
    assert changed  # every weight trains in full mode

    aware = tmp_path / "aware"
    cfg = _config(
        setup, iters=2, rank_aware=True, budget="r2", score_batches=2, score_batch=2, score_patch=32
    )
    training.train(cfg, aware, progress=False)
    allocation = json.loads((aware / "rank_map.json").read_text())
    tensors = read_adapter(aware / "adapter.safetensors")[0]
    for site, rank in allocation["ranks"].items():
        if rank:
            assert tensors[f"{site}.lora_A"].shape[0] == rank
    used = sum(t.numel() for t in tensors.values())
    assert 0 < used <= allocation["budget"]["params"]


def test_cli_config_file_precedence_and_run_dir_rules(setup, tmp_path, run_cli):
    root, model, hr = setup
    conf = tmp_path / "train.toml"
    conf.write_text(
        f'model = "{model}"\ndata = "{hr}"\niters = 2\nbatch = 2\npatch = 32\nworkers = 0\n'
        'device = "cpu"\ndegradation = "bicubic"\nrank = 2\nlr = 0.5\n'
    )
    run = tmp_path / "run"
    code, out, err = run_cli("train", "--config", conf, "--out", run, "--lr", "0.01", "--quiet")
    assert code == 0, err
    saved = json.loads((run / "config.json").read_text())
    assert saved["lr"] == 0.01 and saved["rank"] == 2 and saved["iters"] == 2
    code, _, err = run_cli("train", "--config", conf, "--out", run, "--quiet")
    assert code == 1 and "already holds a run" in err and "--resume" in err
    code, _, err = run_cli("train", "--out", run, "--resume", "--lr", "0.1")
    assert code == 1 and "--lr differs from the run being resumed" in err
    code, out, err = run_cli("train", "--out", run, "--resume", "--quiet")
    assert code == 0 and "already finished" in out
    code, _, err = run_cli("train", "--out", tmp_path / "none", "--resume")
    assert code == 1 and "nothing to resume" in err
    bad = tmp_path / "bad.json"
    bad.write_text('{"itters": 3}')
    code, _, err = run_cli("train", "--config", bad, "--out", tmp_path / "x")
    assert code == 1 and "unknown setting 'itters'" in err
    code, _, err = run_cli(
        "train", "--model", model, "--data", hr, "--out", tmp_path / "y", "--patch", "36"
    )
    assert code == 1 and "LR crops of 9 px" in err


def test_paired_data_pretrain_and_validation_folder(setup, tmp_path):
    """RealSR-style pairs for training and validation; pretrain re-initialises the weights."""
    from adaptsr.adapt.lora import base_fingerprint
    from adaptsr.adapt.models import load_model

    rng = np.random.default_rng(1)
    for folder, n in (("pairs", 3), ("val", 1)):
        (tmp_path / folder).mkdir()
        for i in range(n):
            lr = rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)
            cv2.imwrite(str(tmp_path / folder / f"x{i}_LR4.png"), lr)
            cv2.imwrite(str(tmp_path / folder / f"x{i}_HR.png"), cv2.resize(lr, (48, 48)))
    cfg = _config(
        setup,
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


def test_benchmark_row_counts_trainable_parameters(setup):
    from adaptsr.adapt.lora import inject_lora, lora_report
    from adaptsr.adapt.models import load_model

    model_path = str(setup[1])
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


def test_bad_inputs_never_cost_the_previous_run(setup, tmp_path, run_cli):
    root, model, hr = setup
    run = tmp_path / "run"
    common = ["--model", model, "--out", run, "--iters", 2, "--batch", 2, "--patch", 32,
              "--workers", 0, "--device", "cpu", "--degradation", "bicubic", "--quiet"]  # fmt: skip
    sites = [s.name for s in lora_sites(load_model(model))]
    ranks = tmp_path / "ranks.json"
    ranks.write_text(json.dumps({"ranks": {sites[0]: 2, sites[1]: 1}}))
    code, _, err = run_cli("train", "--data", hr, "--rank-map", ranks, *common)
    assert code == 0, err
    adapter = (run / "adapter.safetensors").read_bytes()
    # --force with a typo in --data: one line, and the finished run is still there
    code, _, err = run_cli("train", "--data", tmp_path / "typo", "--force", *common)
    assert code == 1 and "no such folder" in err
    assert (run / "adapter.safetensors").read_bytes() == adapter
    # the run keeps its own copy of the rank map: editing the original cannot break a resume
    assert json.loads((run / "rank_map.json").read_text())["ranks"] == {sites[0]: 2, sites[1]: 1}
    ranks.write_text(json.dumps({"ranks": {sites[0]: 8}}))
    code, out, err = run_cli("train", "--out", run, "--resume", "--quiet")
    assert code == 0 and "already finished" in out, err
    # one clear line each: a bad device, --val with --val-split, a wrong type in a config file
    for args, message in [
        (["--data", hr, "--device", "tpu", "--force"], "device"),
        (["--data", hr, "--val", hr, "--val-split", 1, "--force"], "not both"),
    ]:
        code, _, err = run_cli("train", *common[:-3], *args)
        assert code == 1 and message in err and len(err.strip().splitlines()) == 1, err
    conf = tmp_path / "c.json"
    conf.write_text(json.dumps({"model": str(model), "data": str(hr), "iters": "many"}))
    code, _, err = run_cli("train", "--config", conf, "--out", tmp_path / "c")
    assert code == 1 and "iters has the wrong type" in err
    # a damaged config.json in a run folder is one line too
    (run / "config.json").write_text("{broken")
    code, _, err = run_cli("train", "--out", run, "--resume")
    assert code == 1 and "cannot parse config" in err


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


def test_train_state_round_trip_restores_every_stream(setup):
    import random

    a = _lora_state(setup[1], 2, seed=0)
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
    b = _lora_state(setup[1], 2, seed=1)  # other adapters, other degrader seed
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


def test_checkpoint_of_another_rank_is_a_clear_error(setup, tmp_path, run_cli):
    import re

    two, four = _lora_state(setup[1], 2), _lora_state(setup[1], 4)
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
        _lora_state(setup[1], 2).load_state_dict(saved)
    with pytest.raises(UserError, match="from a --mode full run, not lora"):
        two.load_state_dict(_lora_state(setup[1], 0, mode="full").state_dict())
    # through the command line: a checkpoint copied from a rank-2 run into a rank-4 run
    runs = {r: tmp_path / f"r{r}" for r in (2, 4)}
    for r, run in runs.items():
        training.train(_config(setup, iters=1, rank=r), run, progress=False)
    shutil.copy(runs[2] / "checkpoint.pt", runs[4] / "checkpoint.pt")
    code, _, err = run_cli("train", "--out", runs[4], "--resume", "--quiet")
    assert code == 1 and len(err.strip().splitlines()) == 1, err
    assert "do not match this model's adapters" in err and f"{theirs} in the checkpoint" in err


def test_callbacks_see_every_event_in_order(setup, tmp_path):
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
    cfg = _config(setup, iters=3, log_every=2, val_split=1, val_every=2)
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


def test_rank_aware_training_allocates_as_adapt_allocate(setup, tmp_path, run_cli):
    from dataclasses import replace

    from adaptsr.adapt.rankmap import RANK_MAP_FORMAT, RankAllocation

    _, model, _ = setup
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


def test_rank_aware_options_are_checked(setup):
    for kw, message in [
        (dict(score="fisher"), "--score applies to --rank-aware"),
        (dict(r_max=4), "--r-max applies to --rank-aware"),
        (dict(rank_aware=True, budget="r2", r_min=5, r_max=4), "--r-min 5 is above --r-max 4"),
        (dict(rank_aware=True, budget="r2", score_patch=0), "--score-patch must be at least 1"),
        (dict(rank_aware=True, budget="r2", allocator="x"), "unknown allocator 'x'"),
    ]:
        with pytest.raises(UserError, match=message):
            _config(setup, **kw).resolved()
    values = {"score": "activation", "r_min": 0, "score_batch": 4, "rank_aware": True}
    cfg = training.config_from_dict({**values, "budget": "r2", "model": "m"})
    assert cfg.resolved().allocation.score == "activation"
    assert cfg.allocation == AllocationSettings(
        budget="r2", score="activation", r_min=0, score_batch=4
    )
    # the same settings as a nested table; config.json keeps them flat, in their old places
    nested = {"rank_aware": True, "model": "m", "allocation": {**values, "budget": "r2"}}
    nested["allocation"].pop("rank_aware")
    assert training.config_from_dict(nested) == cfg
    flat = cfg.to_dict()
    assert "allocation" not in flat and flat["r_min"] == 0 and flat["budget"] == "r2"
    keys = list(flat)
    assert keys[keys.index("rank_aware") + 1 : keys.index("alpha")] == [
        "budget", "score_batches", "score_batch", "score_patch", "score", "normalise",
        "allocator", "r_min", "r_max",
    ]  # fmt: skip
    assert training.config_from_dict(flat) == cfg
    with pytest.raises(UserError, match="unknown setting 'allocation'"):
        training.config_from_dict({"allocation": 3})
    with pytest.raises(UserError, match="r_min has the wrong type"):
        training.config_from_dict({"r_min": "0"})


@pytest.mark.slow
def test_ddp_rank_aware_processes_share_one_allocation(setup, tmp_path):
    """Each process scores its slice of every batch; the averaged scores give every process
    the same ranks (DistributedDataParallel refuses processes with different parameters)."""
    _, model, hr = setup
    run = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    cmd += ["-m", "adaptsr.cli.app", "train", "--out", str(run), "--quiet", f"--data={hr}",
            f"--model={model}", "--iters=1", "--batch=2", "--patch=32", "--workers=0",
            "--device=cpu", "--degradation=bicubic", "--rank-aware", "--budget=r2",
            "--score=fisher", "--r-min=0", "--score-batches=2", "--score-batch=2",
            "--score-patch=32"]  # fmt: skip
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


def test_trainer_setup_step_and_hooks_in_order(setup, tmp_path):
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
    cfg = _config(setup, iters=4, log_every=2, save_every=3).resolved()
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


def test_a_loader_worker_error_is_one_line_naming_the_file(setup, tmp_path):
    """An image that breaks after the scan fails in a loader process: the error reaching the
    caller is the worker's own UserError line, not PyTorch's traceback text."""
    folder = tmp_path / "hr"
    shutil.copytree(setup[2], folder)

    class BreakImages(training.Callback):
        def on_start(self, record):  # after the scan, before the first batch is loaded
            for path in folder.glob("*.png"):
                path.write_bytes(b"not an image any more")

    cfg = _config(setup, data=[str(folder)], workers=1, iters=2)
    with pytest.raises(UserError) as caught:
        training.train(cfg, tmp_path / "run", progress=False, callbacks=[BreakImages()])
    message = str(caught.value)
    assert type(caught.value) is UserError and "\n" not in message, message
    assert re.fullmatch(f"cannot read image {re.escape(str(folder))}/\\d{{3}}\\.png: corrupt or "
                        "not an image", message), message  # fmt: skip


def test_training_batches_carry_a_worker_user_error_whole(tmp_path):
    from adaptsr.adapt.data import BatchPlan, CropDataset
    from adaptsr.adapt.train.batches import LoaderFailure, training_batches

    class Failing(CropDataset):
        def __getitem__(self, key):
            if key[0] == 1:
                raise UserError(f"cannot read image {tmp_path}/1.png: gone")
            return {"hr": torch.full((3, 4, 4), float(key[0]))}

    dataset = Failing([None, None], 4, 1)
    plan = BatchPlan(2, 1, seed=0, start=0, stop=2)
    order = [plan.keys(i)[0][0] for i in range(2)]
    batches = training_batches(dataset, plan, workers=1, pin=False)
    if order[0] == 0:
        assert next(batches)["hr"].shape == (1, 3, 4, 4)
    with pytest.raises(UserError) as caught:
        next(batches)
    assert str(caught.value) == f"cannot read image {tmp_path}/1.png: gone"
    assert LoaderFailure("x").error().args == ("x",)
