"""`adapt train --accumulate K` (gradient accumulation), `--val-save-images N` (LR | SR | HR
pictures in the run folder and TensorBoard) and TOML config files without tomllib."""

import json
import os
import subprocess
import sys
import textwrap

import cv2
import numpy as np
import pytest
import torch
from fakes.training import logged_losses, resume_copy, tiny_train_config, train_keeping_checkpoints
from safetensors.torch import load_file

from adaptsr.adapt import train as training
from adaptsr.adapt.train import val_images
from adaptsr.adapt.train.distributed import Dist
from adaptsr.adapt.train.loop import Trainer
from adaptsr.core.errors import UserError

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    """Paired x2 data (no random degradation: a batch's loss depends only on its crops)."""
    root = tmp_path_factory.mktemp("pairs")
    (root / "hr").mkdir()
    (root / "lr").mkdir()
    rng = np.random.default_rng(3)
    for i in range(6):
        hr = cv2.resize(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8), (32, 32))
        cv2.imwrite(str(root / "hr" / f"{i}.png"), hr)
        cv2.imwrite(str(root / "lr" / f"{i}.png"), cv2.resize(hr, (16, 16)))
    return root


def _paired(edsr_files, pairs, **changes):
    cfg = tiny_train_config(edsr_files["ckpt"], [], patch=16, **changes)
    cfg.lr_dir, cfg.hr_dir = str(pairs / "lr"), str(pairs / "hr")
    return cfg


def _adapter(run):
    return load_file(str(run / "adapter.safetensors"))


def test_accumulated_micro_batches_give_the_large_batch_adapter(edsr_files, pairs, tmp_path):
    """K=2 micro-batches of 2 take the samples one batch of 4 takes: the mean loss, the
    gradients and so the adapter agree to fp32 rounding."""
    large = training.train(_paired(edsr_files, pairs, batch=4), tmp_path / "a", progress=False)
    accumulated = _paired(edsr_files, pairs, batch=2, accumulate=2)
    small = training.train(accumulated, tmp_path / "b", progress=False)
    assert large.status == small.status == "finished" and small.iteration == 6
    a, b = _adapter(tmp_path / "a"), _adapter(tmp_path / "b")
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=1e-4, atol=1e-6)
    expected, got = logged_losses(tmp_path / "a"), logged_losses(tmp_path / "b")
    assert got.keys() == expected.keys() == set(range(1, 7))  # one iteration per optimizer step
    for it in expected:
        assert got[it] == pytest.approx(expected[it], rel=1e-5)
    assert json.loads((tmp_path / "b" / "config.json").read_text())["accumulate"] == 2
    # the schedule counts optimizer steps: both runs end at the same learning rate
    state = [
        torch.load(p / "checkpoint.pt", weights_only=True) for p in (tmp_path / "a", tmp_path / "b")
    ]
    assert state[0]["scheduler"]["last_epoch"] == state[1]["scheduler"]["last_epoch"] == 6


def test_each_optimizer_step_sees_the_mean_gradient(edsr_files, pairs, tmp_path):
    """The gradients of one step, not only Adam's (scale-free) update: summed micro-batch
    gradients without the 1/K would be twice those of the large batch."""
    grads = []
    for name, cfg in (("a", _paired(edsr_files, pairs, batch=4)),
                      ("b", _paired(edsr_files, pairs, batch=2, accumulate=2))):  # fmt: skip
        run = tmp_path / name
        run.mkdir()
        trainer = Trainer(cfg.resolved(), run, False, False, Dist(), torch.device("cpu"))
        trainer.setup()
        trainer.step()
        grads.append(
            {n: p.grad.clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
        )
    assert grads[0].keys() == grads[1].keys() and any(g.abs().sum() > 0 for g in grads[0].values())
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], rtol=1e-4, atol=1e-7)


def test_a_resumed_accumulating_run_replays_exactly(tmp_path, monkeypatch, train_hr, edsr_files):
    """Random degradation per micro-batch, an EMA and validation: the checkpoint at iteration
    2 (what a kill -9 after it leaves), resumed, gives the uninterrupted losses bit for bit."""
    cfg = tiny_train_config(
        edsr_files["ckpt"], [str(train_hr)], patch=16, iters=4, batch=1, accumulate=3,
        degradation="realesrgan", ema=0.9, val_split=1, val_every=2,
    )  # fmt: skip
    a = tmp_path / "a"
    _, copies = train_keeping_checkpoints(cfg, a)
    b = tmp_path / "b"
    resume_copy(a, copies[2], b)
    assert logged_losses(b) == {3: logged_losses(a)[3], 4: logged_losses(a)[4]}
    for name, tensor in _adapter(a).items():
        assert torch.equal(_adapter(b)[name], tensor)
    with pytest.raises(UserError, match="--accumulate differs"):
        training.resume_config(b, {"accumulate": 1})


def test_accumulate_is_checked(edsr_files, pairs):
    for bad in (0, -1):
        with pytest.raises(UserError, match="--accumulate must be at least 1"):
            _paired(edsr_files, pairs, accumulate=bad).resolved()
    with pytest.raises(UserError, match="--val-save-images must be >= 0"):
        _paired(edsr_files, pairs, val_save_images=-1).resolved()


def test_validation_pictures_are_lr_sr_hr_side_by_side(edsr_files, train_hr, tmp_path):
    cfg = tiny_train_config(
        edsr_files["ckpt"], [str(train_hr)], patch=16, iters=4, batch=1,
        val_split=2, val_every=2, val_save_images=5,
    )  # fmt: skip
    run = tmp_path / "run"
    training.train(cfg, run, progress=False)
    folders = sorted(p.name for p in (run / "val-images").iterdir())
    assert folders == ["iter_000002", "iter_000004"]  # no scratch folder left behind
    files = sorted(p.name for p in (run / "val-images" / "iter_000004").iterdir())
    assert files == ["00-2.png", "01-3.png"]  # the two validation images (fewer than 5)
    picture = cv2.imread(str(run / "val-images" / "iter_000004" / "00-2.png"))[..., ::-1]
    gap = val_images.GAP
    assert picture.shape == (32, 3 * 32 + 2 * gap, 3)  # 32x32 HR: LR x2 | SR | HR
    hr = cv2.imread(str(train_hr / "2.png"))[..., ::-1]
    assert np.array_equal(picture[:, -32:], hr)  # the target, as read
    left = picture[:, :32].astype(int)
    assert np.array_equal(left[0::2, 0::2], left[1::2, 1::2])  # nearest: 2x2 blocks
    assert (picture[:, 32 : 32 + gap] == 255).all()
    assert json.loads((run / "config.json").read_text())["val_save_images"] == 5


def test_tensorboard_shows_the_pictures(edsr_files, train_hr, tmp_path):
    accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    cfg = tiny_train_config(
        edsr_files["ckpt"], [str(train_hr)], patch=16, iters=2, batch=1,
        val_split=1, val_every=2, val_save_images=1,
    )  # fmt: skip
    training.train(cfg, tmp_path / "run", progress=False)
    events = accumulator.EventAccumulator(str(tmp_path / "run" / "tensorboard"))
    events.Reload()
    assert events.Tags()["images"] == ["val_images/00-3"]
    (image,) = events.Images("val_images/00-3")
    assert image.step == 2 and (image.width, image.height) == (3 * 32 + 2 * val_images.GAP, 32)


def test_pictures_may_be_turned_on_when_resuming(edsr_files, train_hr, tmp_path):
    cfg = tiny_train_config(
        edsr_files["ckpt"], [str(train_hr)], patch=16, iters=4, batch=1, save_every=2,
        val_split=1, val_every=2,
    )  # fmt: skip
    run = tmp_path / "run"
    cfg.iters = 2
    training.train(cfg, run, progress=False)
    assert not (run / "val-images").exists()
    resumed = training.resume_config(run, {"val_save_images": 1})
    resumed.iters = 4  # as the test's shortcut: a longer run, resumed
    training.train(resumed, run, resume=True, progress=False)
    assert sorted(p.name for p in (run / "val-images").iterdir()) == ["iter_000004"]


def test_file_names_keep_safe_characters_in_validation_order():
    assert val_images.file_name(3, "a/b c:d") == "03-a_b_c_d.png"
    assert val_images.file_name(0, "...") == "00-image.png"


def test_toml_config_without_tomllib_reads_with_tomli(tmp_path):
    """Python 3.10 has no tomllib: the package reads TOML with tomli (a dependency there)."""
    (tmp_path / "run.toml").write_text('model = "m.pth"\niters = 7\naccumulate = 2\n')
    script = textwrap.dedent(
        f"""
        import sys, types, tomllib
        tomli = types.ModuleType("tomli")
        tomli.loads = lambda text: {{**tomllib.loads(text), "seed": 11}}  # marks its use
        sys.modules["tomli"], sys.modules["tomllib"] = tomli, None  # import tomllib fails
        from adaptsr.adapt.train.config import config_from_dict, read_config_file
        c = config_from_dict(read_config_file({str(tmp_path / "run.toml")!r}))
        print(c.iters, c.accumulate, c.seed)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["7", "2", "11"]


@pytest.mark.slow
def test_accumulating_on_two_processes_matches_the_large_batch_on_one(edsr_files, pairs, tmp_path):
    """Under DDP the gradients are averaged once per step (no_sync on the earlier micro-batches):
    2 processes x 2 micro-batches of 1 take the samples of one batch of 4."""
    one = tmp_path / "one"
    training.train(_paired(edsr_files, pairs, batch=4, iters=3), one, progress=False)
    two = tmp_path / "two"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    cmd += ["-m", "adaptsr.cli.app", "train", "--out", str(two), "--quiet",
            f"--model={edsr_files['ckpt']}", f"--lr-dir={pairs / 'lr'}", f"--hr-dir={pairs / 'hr'}",
            "--iters=3", "--batch=2", "--accumulate=2", "--patch=16", "--workers=0",
            "--device=cpu", "--save-every=2", "--log-every=1", "--val-every=0"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads((two / "log.jsonl").read_text().splitlines()[0])["world"] == 2
    expected, got = logged_losses(one), logged_losses(two)
    assert sorted(got) == [1, 2, 3]
    for it in expected:
        assert got[it] == pytest.approx(expected[it], rel=1e-5)
    for name, tensor in _adapter(one).items():
        torch.testing.assert_close(_adapter(two)[name], tensor, rtol=1e-4, atol=1e-6)
