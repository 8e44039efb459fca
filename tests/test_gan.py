"""GAN adaptation (`--loss l1:1,gan:0.1 --ema 0.999 --gan-start N`): the U-Net discriminator
trains beside the adapters, its state and the weights' average resume exactly, the saved
adapter is the average, BatchNorm statistics stay frozen, and the default loss is today's."""

import io
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from fakes.images import write_noise_pngs, write_textured_pngs
from fakes.models import save_tiny_safmn
from fakes.training import logged_losses, resume_copy, tiny_train_config, train_keeping_checkpoints
from safetensors.torch import load_file
from torch import nn

import adaptsr
from adaptsr.adapt import train as training
from adaptsr.adapt.losses import objective as objective_module
from adaptsr.adapt.losses.discriminator import UNetDiscriminatorSN

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("gan")
    model = save_tiny_safmn(root / "tiny.safetensors")
    hr = write_textured_pngs(root / "hr", 6, np.random.default_rng(0))
    return root, model, hr


def _config(setup, **kw):
    _, model, hr = setup
    return tiny_train_config(model, **{"data": [str(hr)], **kw})


def test_discriminator_is_a_spectrally_normalised_unet_judging_every_pixel():
    torch.manual_seed(0)
    d = UNetDiscriminatorSN()
    x = torch.rand(2, 3, 32, 48)
    assert d(x).shape == (2, 1, 32, 48)
    normalised = [n for n, _ in d.named_parameters() if n.endswith("weight_orig")]
    assert len(normalised) == 8  # 3 down, 3 up, 2 extra; the first and last convs plain
    assert 4.3e6 < sum(p.numel() for p in d.parameters()) < 4.5e6  # Real-ESRGAN's size
    # the skips carry the input's detail: a change in one corner moves the map there most
    y = x.clone()
    y[:, :, :4, :4] += 0.5
    with torch.no_grad():
        diff = (d.eval()(y) - d(x)).abs()[0, 0]
    assert diff[:8, :8].mean() > diff[-8:, -8:].mean()


def test_default_loss_is_the_committed_l1_bit_for_bit(setup, tmp_path, monkeypatch):
    default = _config(setup, iters=4)
    training.train(default, tmp_path / "default", progress=False)
    training.train(_config(setup, iters=4, loss="l1:1"), tmp_path / "l1", progress=False)
    # the committed step computed F.l1_loss(sr.float(), hr) and nothing else
    monkeypatch.setattr(
        objective_module.Objective, "__call__", lambda self, sr, hr, it, ref=None: F.l1_loss(sr, hr)
    )
    training.train(default, tmp_path / "committed", progress=False)
    losses = logged_losses(tmp_path / "committed")
    assert len(losses) == 4
    assert logged_losses(tmp_path / "default") == losses == logged_losses(tmp_path / "l1")
    saved = json.loads((tmp_path / "default" / "config.json").read_text())
    assert saved["loss"] == "l1:1" and saved["ema"] == 0 and saved["gan_start"] == 0


def test_gan_and_ema_resume_exactly_and_the_saved_adapter_is_the_average(
    setup, tmp_path, monkeypatch
):
    cfg = _config(setup, iters=6, loss="l1:1,gan:0.1,ldl:1,ff:0.5", ema=0.9, gan_start=1)
    a = tmp_path / "a"
    _, copies = train_keeping_checkpoints(cfg, a)

    final = torch.load(a / "checkpoint.pt", weights_only=True)
    at2 = torch.load(io.BytesIO(copies[2]), weights_only=True)
    assert set(final["extras"]) == {"gan", "ema"}
    assert all(".lora_" in name for name in final["trainable"])  # adapters only on the generator
    d_final, d_2 = final["extras"]["gan"]["discriminator"], at2["extras"]["gan"]["discriminator"]
    assert not torch.equal(d_final["conv_in.weight"], d_2["conv_in.weight"])  # D trains
    assert final["extras"]["gan"]["optimizer"]["state"]  # with its own Adam

    # the saved adapter holds the average, not the live weights
    saved = load_file(a / "adapter.safetensors")
    names = list(final["trainable"])
    shadow = dict(zip(names, final["extras"]["ema"]["shadow"], strict=True))
    for name in final["trainable"]:
        key = name.replace(".base_layer", "")
        assert torch.equal(saved[key], shadow[name]), name
    assert any(not torch.equal(shadow[n], t) for n, t in final["trainable"].items())

    b = tmp_path / "b"
    resume_copy(a, copies[2], b)
    want = {i: v for i, v in logged_losses(a).items() if i > 2}
    assert logged_losses(b) == want and len(want) == 4
    resumed = torch.load(b / "checkpoint.pt", weights_only=True)
    for key, value in final["extras"]["gan"]["discriminator"].items():
        assert torch.equal(resumed["extras"]["gan"]["discriminator"][key], value), key


def test_gan_start_is_a_pixel_only_warm_up(setup, tmp_path):
    """Before --gan-start the losses are the pixel run's, bit for bit."""
    training.train(_config(setup, iters=3), tmp_path / "pixel", progress=False)
    gan = _config(setup, iters=3, loss="l1:1,gan:0.5", gan_start=2)
    training.train(gan, tmp_path / "gan", progress=False)
    pixel, adversarial = logged_losses(tmp_path / "pixel"), logged_losses(tmp_path / "gan")
    assert [pixel[i] for i in (1, 2)] == [adversarial[i] for i in (1, 2)]
    assert pixel[3] != adversarial[3]


def test_batchnorm_statistics_stay_frozen_under_gan_training(tmp_path):
    from spandrel.architectures.SwiftSRGAN import SwiftSRGAN

    from adaptsr.adapt.models import model_from_state_dict, save_model

    torch.manual_seed(0)
    net = SwiftSRGAN(in_channels=3, num_channels=8, num_blocks=1, upscale_factor=2)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    ckpt = tmp_path / "swift.pth"
    save_model(model_from_state_dict(net.state_dict()), ckpt)
    hr = write_noise_pngs(tmp_path / "hr", 4, 32, 32)
    cfg = tiny_train_config(ckpt, [str(hr)], iters=3, patch=16, loss="l1:1,gan:1", ema=0.5)
    training.train(cfg, tmp_path / "run", progress=False)
    base = adaptsr.load_model(ckpt)
    trained = adaptsr.load_adapter(
        adaptsr.load_model(ckpt), tmp_path / "run" / "adapter.safetensors"
    )
    buffers = {n.replace(".base_layer", ""): b for n, b in trained.named_buffers()}
    for name, value in base.named_buffers():
        assert torch.equal(buffers[name], value), name
    merged = adaptsr.merge_lora(trained)  # the merged model is the base graph
    assert {k: v.shape for k, v in merged.state_dict().items()} == {
        k: v.shape for k, v in base.state_dict().items()
    }
