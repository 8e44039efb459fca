"""Loss specs in `adapt study`: `@loss=l1:1+gan:0.1`, `@ema`, `@ganstart` per run spec and the
study-wide --loss, --ema, --gan-start; a GAN run of a study resumes exactly."""

import importlib.util
import json
import os
import signal

import pytest
import torch
from fakes.training import study_folder

from adaptsr.adapt import study
from adaptsr.adapt.adapter_file import AdapterFile
from adaptsr.adapt.train import train
from adaptsr.adapt.train.callbacks import Callback
from adaptsr.core.errors import UserError

pytestmark = pytest.mark.usefixtures("one_thread")

GAN_RUN = "r1@loss=l1:1+gan:0.1+ldl:1@ema=0.9@ganstart=1"


def test_loss_options_parse():
    spec = study.parse_spec("r8@loss=l1:1+GAN:0.1@ema=0.999@ganstart=500")
    assert spec.option("loss") == "l1:1,gan:0.1"
    assert (spec.option("ema"), spec.option("gan_start")) == (0.999, 500)
    assert spec.folder == "r8@loss=l1-1+gan-0.1@ema=0.999@ganstart=500"
    full = study.parse_spec("full@loss=l1:1+ff:0.5")
    assert full.mode == "full" and full.option("loss") == "l1:1,ff:0.5"
    for bad, words in (
        ("full@rs", "loss options only"),
        ("r8@loss=l1:1+magic:1", "unknown term 'magic'"),
        ("r8@loss=l1:-1", "positive"),
        ("r8@ema=1", "[0, 1)"),
        ("r8@ganstart=x", "whole number"),
    ):
        with pytest.raises(UserError, match=None) as e:
            study.parse_spec(bad)
        assert words in str(e.value) and "\n" not in str(e.value), e.value
    # ',' separates runs: a loss spec written with ',' is refused, naming the fix
    with pytest.raises(UserError) as e:
        study.parse_specs("r8@loss=l1:1,gan:0.1,r4")
    assert "'+'" in str(e.value) and "gan:0.1" in str(e.value)
    assert [s.text for s in study.parse_specs("r8@loss=l1:1+gan:0.1,r4")] == [
        "r8@loss=l1:1+gan:0.1",
        "r4",
    ]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    return study_folder(tmp_path_factory.mktemp("study-loss"))


def _settings(setup, **kw):
    root, model = setup
    base = dict(
        model=str(model),
        data=[str(root / "train")],
        val=str(root / "val"),
        runs=[GAN_RUN],
        seeds=1,
        iters=4,
        batch=2,
        patch=32,
        degradation="bicubic",
        device="cpu",
    )
    return study.StudySettings(**{**base, **kw}).checked()


def test_study_wide_loss_and_spec_options(setup):
    s = _settings(setup, runs=["r1", "r1@loss=l1:1+ff:1"], loss="l1:1,gan:0.5", gan_start=2)
    wide = study.train_config(s, study.parse_spec("r1"), 0)
    assert (wide.loss, wide.gan_start, wide.ema) == ("l1:1,gan:0.5", 2, 0.0)
    own = study.train_config(s, study.parse_spec("r1@loss=l1:1+ff:1"), 0)
    assert own.loss == "l1:1,ff:1"
    # weight files go to the runs whose terms need them, and are no setting of the numbers
    w = _settings(setup, runs=["r1", "r1@loss=l1:1+dists:1"], dists_weights="w/")
    assert study.train_config(w, study.parse_spec("r1"), 0).dists_weights is None
    dists = study.train_config(w, study.parse_spec("r1@loss=l1:1+dists:1"), 0)
    assert (dists.loss, dists.dists_weights) == ("l1:1,dists:1", "w/")
    assert "dists_weights" not in w.comparable()
    assert s.comparable()["loss"] == "l1:1,gan:0.5"
    # at the defaults nothing is written: studies made before continue
    plain = _settings(setup, runs=["r1"]).comparable()
    assert not {"loss", "ema", "gan_start", "vgg_weights"} & set(plain)
    # options that do not fit a run are named before any run, with the spec
    s = _settings(setup, runs=["r1@loss=l1:1+ldl:1"])
    with pytest.raises(UserError, match=r"run spec 'r1@loss=l1:1\+ldl:1'.*--ema"):
        study.check_run(s, study.parse_spec(s.runs[0]))


def test_gan_run_of_a_study_resumes_exactly(setup, tmp_path):
    """A GAN run (discriminator, EMA, ldl, warm-up) stopped by Ctrl-C continues on the rerun
    to the adapter and score of an uninterrupted study, bit for bit."""
    settings = _settings(setup)
    whole = tmp_path / "whole"
    study.run_study(settings, whole, progress=False, say=lambda _: None)
    folder = study.parse_spec(GAN_RUN).folder + "-s0"
    config = json.loads((whole / folder / "config.json").read_text())
    assert (config["loss"], config["ema"], config["gan_start"]) == ("l1:1,gan:0.1,ldl:1", 0.9, 1)

    class CtrlCAt2(Callback):
        def on_step(self, iteration):
            if iteration == 2:
                os.kill(os.getpid(), signal.SIGINT)

    part = tmp_path / "part"
    part.mkdir()
    (part / study.SETTINGS_FILE).write_text(json.dumps(settings.comparable()))
    cfg = study.train_config(settings, study.parse_spec(GAN_RUN), 0)
    stopped = train(cfg, part / folder, progress=False, callbacks=[CtrlCAt2()])
    assert stopped.status == "interrupted" and stopped.iteration < 4
    report = study.run_study(settings, part, progress=False, say=lambda _: None)
    a, b = (AdapterFile.read(d / folder / "adapter.safetensors") for d in (whole, part))
    assert a.tensors.keys() == b.tensors.keys()
    for key, t in a.tensors.items():
        assert torch.equal(t, b.tensors[key]), key
    assert a.meta == b.meta, (a.meta, b.meta)
    want = json.loads((whole / folder / "eval.json").read_text())
    assert report["runs"][0]["psnr_y"] == want["psnr_y"]
    # the table carries the weight-free perceptual indices where piq is installed
    if importlib.util.find_spec("piq") is not None:
        assert report["runs"][0]["haarpsi"] == want["haarpsi"]
        assert "ms_gmsd" in report["runs"][0] and "ms_gmsd" in report["base"]
        assert "| HaarPSI | MS-GMSD |" in (part / "study.md").read_text()
