"""The `dists` loss term: DISTS from local weights only (a folder, adaptsr's weights folder or
torch's cache), equal to piq's DISTS on the same weights. The weights here are random, made and
written by the test: a user's run never gets random ones."""

import json
import types

import pytest
import torch
from torch import nn

from adaptsr.adapt import metrics
from adaptsr.adapt.losses.dists import CHANNELS, VGG16_PLAN, find_weights, load_dists
from adaptsr.adapt.losses.objective import build_objective
from adaptsr.adapt.losses.spec import parse_loss
from adaptsr.core.errors import UserError

piq = pytest.importorskip("piq")


def torchvision_like_vgg16_features() -> nn.Sequential:
    """VGG16's feature stack as torchvision numbers it (max pooling, as in the released net)."""
    layers, channels = [], 3
    for step in (*VGG16_PLAN, "M"):
        if step == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(channels, step, 3, padding=1), nn.ReLU(inplace=True)]
            channels = step
    return nn.Sequential(*layers)


def write_weights(folder, normalised=False, seed=0):
    """Random VGG16 features (torchvision's key names) and random DISTS alpha and beta."""
    torch.manual_seed(seed)
    features = torchvision_like_vgg16_features()
    state = {f"features.{k}": v for k, v in features.state_dict().items()}
    torch.save(state, folder / "vgg16-397923af.pth")
    n = sum(CHANNELS)
    alpha, beta = torch.rand(1, n, 1, 1), torch.rand(1, n, 1, 1)
    if normalised:  # as the released weights: identical images score 0
        total = alpha.sum() + beta.sum()
        alpha, beta = alpha / total, beta / total
    else:
        alpha, beta = alpha * 1e-3, beta * 1e-3
    torch.save({"alpha": alpha, "beta": beta}, folder / "dists_weights.pt")
    return features


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    folder = tmp_path_factory.mktemp("dists")
    return folder, write_weights(folder)


def piq_dists(folder, features, sr, hr):
    """piq's DISTS with the test's weights: its VGG16 is the test's, its alpha and beta read
    from the folder through torch's hub (never downloaded)."""
    original = piq.perceptual.vgg16
    piq.perceptual.vgg16 = lambda **_: types.SimpleNamespace(features=features)
    try:
        with metrics.local_hub(folder):
            net = piq.DISTS(reduction="mean")
    finally:
        piq.perceptual.vgg16 = original
    with torch.no_grad():
        return float(net(sr, hr))


@pytest.mark.parametrize("shape", [(2, 48, 40), (1, 262, 270)])
def test_the_term_equals_piqs_dists(weights, shape):
    folder, features = weights
    n, h, w = shape
    g = torch.Generator().manual_seed(1)
    hr = torch.rand(n, 3, h, w, generator=g)
    sr = (hr + 0.1 * torch.randn(n, 3, h, w, generator=g)).clamp(0, 1)
    loss = load_dists(folder)
    ours = float(loss(sr, hr))
    assert ours == pytest.approx(piq_dists(folder, features, sr, hr), rel=1e-5, abs=1e-7)
    assert ours != pytest.approx(float(loss(hr, hr)), abs=1e-6)  # the term sees the difference


def test_gradient_reaches_the_output_only(weights):
    folder, _ = weights
    loss = load_dists(folder)
    hr = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    sr = (hr * 0.8).requires_grad_(True)
    loss(sr, hr).backward()
    assert sr.grad is not None and sr.grad.abs().sum() > 0
    assert all(p.grad is None and not p.requires_grad for p in loss.parameters())
    loss.train()
    assert not loss.training and not loss.features.training  # a fixed feature space


def test_identical_images_score_zero_with_normalised_weights(tmp_path):
    write_weights(tmp_path, normalised=True, seed=3)
    hr = torch.rand(2, 3, 40, 40, generator=torch.Generator().manual_seed(4))
    assert float(load_dists(tmp_path)(hr, hr)) == pytest.approx(0.0, abs=1e-5)


def test_the_objective_weighs_the_term(weights):
    folder, _ = weights
    assert dict(parse_loss("l1:1,dists:0.5")) == {"l1": 1.0, "dists": 0.5}
    objective = build_objective("l1:1,dists:0.5", None, 0, None, "cpu", dists_weights=folder)
    g = torch.Generator().manual_seed(5)
    hr = torch.rand(2, 3, 32, 32, generator=g)
    sr = torch.rand(2, 3, 32, 32, generator=g)
    want = (sr - hr).abs().mean() + 0.5 * load_dists(folder)(sr, hr)
    torch.testing.assert_close(objective(sr, hr, 1), want)


def test_missing_weights_are_one_line_naming_the_file(tmp_path, monkeypatch, weights):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UserError) as e:
        find_weights(empty)
    text = str(e.value)
    assert "vgg16-397923af.pth" in text and "download.pytorch.org" in text and "\n" not in text
    # without a folder: adaptsr's weights folder, then torch's cache, and the flag to give one
    monkeypatch.setenv("ADAPTSR_WEIGHTS", str(empty))
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    with pytest.raises(UserError, match="--dists-weights") as e:
        build_objective("l1:1,dists:1", None, 0, None, "cpu")
    assert str(empty) in str(e.value) and "\n" not in str(e.value)
    # one file present, the other missing: the missing one is named
    folder, _ = weights
    (empty / "vgg16-397923af.pth").symlink_to(folder / "vgg16-397923af.pth")
    with pytest.raises(UserError, match="needs dists_weights.pt"):
        find_weights(empty)
    (empty / "dists_weights.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="cannot read DISTS weights"):
        load_dists(empty)


def test_adapt_train_with_a_dists_term(weights, safmn_setup, tmp_path, run_cli):
    folder, _ = weights
    _, model, hr = safmn_setup
    base = ["train", "--model", model, "--data", hr, "--device", "cpu", "--quiet",
            "--iters", "2", "--batch", "2", "--patch", "32", "--degradation", "bicubic",
            "--workers", "0"]  # fmt: skip
    run = tmp_path / "run"
    code, _, err = run_cli(
        *base, "--out", run, "--loss", "l1:1,dists:0.5", "--dists-weights", folder
    )
    assert code == 0, err
    config = json.loads((run / "config.json").read_text())
    assert (config["loss"], config["dists_weights"]) == ("l1:1,dists:0.5", str(folder))
    assert (run / "adapter.safetensors").is_file()
    empty = tmp_path / "empty"
    empty.mkdir()
    for extra, words in (
        (["--loss", "l1:1,dists:1", "--dists-weights", empty], "vgg16-397923af.pth"),
        (["--dists-weights", folder], "--dists-weights applies"),
    ):
        code, _, err = run_cli(*base, "--out", tmp_path / "bad", *extra)
        assert code == 1 and words in err and len(err.strip().splitlines()) == 1, err
