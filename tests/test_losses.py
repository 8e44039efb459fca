"""The loss terms of `adapt train --loss`, each against an independent computation, and the
spec's errors (one line each)."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from fakes.images import write_textured_pngs
from fakes.models import save_tiny_safmn
from torch import nn
from torchvision.models import vgg19

from adaptsr.adapt.losses import perceptual as perceptual_module
from adaptsr.adapt.losses.artifacts import artifact_map, ldl_loss, local_variance
from adaptsr.adapt.losses.focal_frequency import focal_frequency_loss
from adaptsr.adapt.losses.objective import Objective
from adaptsr.adapt.losses.perceptual import (
    LAYER_WEIGHTS,
    PerceptualLoss,
    VGGFeatures,
    load_vgg19_features,
)
from adaptsr.adapt.losses.spec import loss_text, parse_loss
from adaptsr.core.errors import UserError


def images(seed=0, shape=(2, 3, 16, 16)):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(shape, generator=g), torch.rand(shape, generator=g)


def test_loss_specs_parse_and_bad_ones_are_one_line(tmp_path, run_cli):
    assert parse_loss("l1:1,perceptual:1,gan:0.1") == (
        ("l1", 1.0),
        ("perceptual", 1.0),
        ("gan", 0.1),
    )
    assert parse_loss(" L1 , ff:0.5") == (("l1", 1.0), ("ff", 0.5))
    assert loss_text(parse_loss("l1:1.0,gan:0.10")) == "l1:1,gan:0.1"
    for spec, words in (
        ("l2:1", "unknown term 'l2'"),
        ("l1:1,l1:2", "l1 is given twice"),
        ("l1:x", "not a number"),
        ("l1:-1", "positive"),
        ("l1:nan", "positive"),
        ("", "empty"),
    ):
        with pytest.raises(UserError, match=words):
            parse_loss(spec)
    model = save_tiny_safmn(tmp_path / "tiny.safetensors")
    hr = write_textured_pngs(tmp_path / "hr", 2, np.random.default_rng(0))
    base = ["train", "--model", model, "--data", hr, "--device", "cpu", "--quiet"]
    for extra, words in (
        (["--loss", "l1:1,vgg:1"], "unknown term 'vgg'"),
        (["--loss", "l1:1,l1:2"], "given twice"),
        (["--loss", "l1:0"], "positive"),
        (["--loss", "l1:1,ldl:1"], "--ema"),
        (["--gan-start", "5"], "--gan-start applies"),
        (["--ema", "1.5"], "--ema must be in"),
        (["--vgg-weights", tmp_path / "v.pth"], "--vgg-weights applies"),
    ):
        code, _, err = run_cli(*base, "--out", tmp_path / "run", *extra)
        assert code == 1 and words in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "run" / "config.json").exists()


class SmallFeatures(nn.Module):
    """A feature extractor built here: two named stages."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.one = nn.Conv2d(3, 4, 3, padding=1)
        self.two = nn.Conv2d(4, 5, 3, padding=1, stride=2)

    def forward(self, x):
        a = self.one(x)
        return {"a": a, "b": self.two(F.relu(a))}


def test_perceptual_term_equals_an_independent_feature_space_computation():
    net = SmallFeatures()
    sr, hr = images()
    sr.requires_grad_(True)
    loss = PerceptualLoss(net, {"a": 0.1, "b": 1.0})(sr, hr)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        fs, fh = net((sr - mean) / std), net((hr - mean) / std)
        want = sum(w * (fs[k] - fh[k]).abs().mean() for k, w in (("a", 0.1), ("b", 1.0)))
    torch.testing.assert_close(loss.detach(), want, rtol=1e-6, atol=0)
    loss.backward()
    assert sr.grad.abs().sum() > 0 and all(p.grad is not None for p in net.parameters())
    assert LAYER_WEIGHTS == {
        "conv1_2": 0.1,
        "conv2_2": 0.1,
        "conv3_4": 1,
        "conv4_4": 1,
        "conv5_4": 1,
    }


def test_vgg_features_are_the_named_conv_outputs_before_their_relu():
    features = vgg19().features  # random weights: this checks the layer indexing only
    extractor = VGGFeatures(features, list(LAYER_WEIGHTS))
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        out = extractor(x)
        for name, index in (("conv1_2", 2), ("conv2_2", 7), ("conv3_4", 16), ("conv5_4", 34)):
            y = x
            for layer in list(features)[: index + 1]:
                y = F.relu(y) if isinstance(layer, nn.ReLU) else layer(y)
            torch.testing.assert_close(out[name], y, rtol=0, atol=0)
    assert (out["conv1_2"] < 0).any()  # before the ReLU
    assert len(extractor.features) == 35  # no deeper than conv5_4


def test_missing_vgg_weights_are_one_line_naming_the_file_and_where_to_get_it(
    tmp_path, monkeypatch, run_cli
):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    with pytest.raises(UserError) as e:
        load_vgg19_features()
    text = str(e.value)
    assert "vgg19-dcbb9e9d.pth" in text and "https://download.pytorch.org/models/" in text
    assert str(tmp_path / "hub" / "checkpoints") in text and "\n" not in text
    with pytest.raises(UserError, match="--vgg-weights .*none.pth does not exist"):
        load_vgg19_features(tmp_path / "none.pth")
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="cannot read VGG19 weights"):
        load_vgg19_features(bad)
    # a file of the right layout loads (its values are the file's, never a fresh init)
    state = vgg19().state_dict()
    good = tmp_path / "vgg.pth"
    torch.save(state, good)
    extractor = load_vgg19_features(good)
    assert torch.equal(extractor.features[0].weight, state["features.0.weight"])
    # the command: one line before any training
    model = save_tiny_safmn(tmp_path / "tiny.safetensors")
    hr = write_textured_pngs(tmp_path / "hr", 2, np.random.default_rng(0))
    code, _, err = run_cli(
        "train", "--model", model, "--data", hr, "--device", "cpu", "--quiet", "--iters", "1",
        "--patch", "32", "--batch", "2", "--workers", "0", "--out", tmp_path / "run",
        "--loss", "l1:1,perceptual:1",
    )  # fmt: skip
    assert code == 1 and "vgg19-dcbb9e9d.pth" in err and len(err.strip().splitlines()) == 1, err
    assert perceptual_module.cached_vgg19_file().parent == tmp_path / "hub" / "checkpoints"


def test_focal_frequency_loss_against_numpy():
    sr, hr = images(1, (2, 3, 8, 6))
    got = focal_frequency_loss(sr, hr)
    fs = np.fft.fft2(sr.double().numpy(), norm="ortho")
    fh = np.fft.fft2(hr.double().numpy(), norm="ortho")
    distance = np.abs(fs - fh) ** 2
    weight = np.sqrt(distance)
    weight = weight / weight.max(axis=(-2, -1), keepdims=True)
    want = (weight * distance).mean()
    assert abs(got.item() - want) <= 1e-6 * want
    assert focal_frequency_loss(hr, hr).item() == 0
    s = sr.clone().requires_grad_(True)
    focal_frequency_loss(s, hr).backward()
    assert s.grad.abs().sum() > 0


def test_ldl_artifact_map_against_a_direct_computation():
    sr, hr = images(2, (1, 3, 10, 9))
    reference = hr + 0.3 * (sr - hr)  # the EMA output closer to HR than SR: SR is penalised
    reference[..., :5, :] = (hr + 2 * (sr - hr))[..., :5, :]  # farther: SR improved there
    residual = (hr - sr).abs().sum(1)[0].double().numpy()
    padded = np.pad(residual, 3, mode="reflect")
    local = np.array(
        [[padded[i : i + 7, j : j + 7].var(ddof=1) for j in range(9)] for i in range(10)]
    )
    torch.testing.assert_close(
        local_variance((hr - sr).abs().sum(1, keepdim=True))[0, 0].double(),
        torch.from_numpy(local),
        rtol=1e-5,
        atol=1e-7,
    )
    ref_residual = (hr - reference).abs().sum(1)[0].double().numpy()
    want = residual.var(ddof=1) ** 0.2 * local
    want[residual < ref_residual] = 0
    m = artifact_map(sr, hr, reference)[0, 0].double()
    torch.testing.assert_close(m, torch.from_numpy(want), rtol=1e-5, atol=1e-7)
    assert (m[:5] == 0).all() and (m[5:] > 0).all()
    loss = ldl_loss(sr, hr, reference)
    want_loss = (torch.from_numpy(want).float() * (sr - hr)).abs().mean()
    torch.testing.assert_close(loss, want_loss, rtol=1e-5, atol=1e-8)


def test_objective_weights_terms_and_default_is_plain_l1():
    sr, hr = images(3)
    assert torch.equal(Objective(parse_loss("l1:1"))(sr, hr, 1), F.l1_loss(sr, hr))
    gan = lambda x: x.mean()  # noqa: E731
    objective = Objective(parse_loss("l1:2,ff:0.5,gan:0.1"), gan=gan, gan_start=3)
    early = objective(sr, hr, 3)
    torch.testing.assert_close(early, 2 * F.l1_loss(sr, hr) + 0.5 * focal_frequency_loss(sr, hr))
    torch.testing.assert_close(objective(sr, hr, 4), early + 0.1 * sr.mean())
