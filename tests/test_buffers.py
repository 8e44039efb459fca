"""Buffers of every dtype and rank, normalisation and stochastic layers under LoRA, and scores of
re-parameterised architectures: failure classes that the built-in families never exercise."""

import numpy as np
import pytest
import torch
from fakes.images import write_noise_pngs
from torch import nn

import adaptsr
from adaptsr.adapt.allocate import allocate_ranks, score_sites
from adaptsr.adapt.archs import build_small
from adaptsr.adapt.lora import adapter_train_mode, base_fingerprint, lora_layers
from adaptsr.adapt.models import model_from_state_dict, save_model
from adaptsr.core.errors import UserError

pytestmark = pytest.mark.usefixtures("one_thread")


def _swiftsrgan_checkpoint(path):
    """A tiny SwiftSRGAN x2 (BatchNorm with 0-dim int64 `num_batches_tracked`), with running
    statistics that are not the initial ones."""
    from spandrel.architectures.SwiftSRGAN import SwiftSRGAN

    torch.manual_seed(0)
    net = SwiftSRGAN(in_channels=3, num_channels=8, num_blocks=1, upscale_factor=2)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
            m.num_batches_tracked.fill_(7)
    save_model(model_from_state_dict(net.state_dict()), path)
    return path


def _randomise_adapters(model, seed=1):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in lora_layers(model).values():
            for a, b, _ in layer.adapters().values():
                a.copy_(torch.randn(a.shape, generator=g) * 0.1)
                b.copy_(torch.randn(b.shape, generator=g) * 0.1)


class _Buffers(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.register_buffer("count", torch.tensor(3))  # 0-dim int64
        self.register_buffer("mask", torch.tensor([[True, False], [False, True]]))
        self.register_buffer("gain", torch.tensor(0.5, dtype=torch.bfloat16))  # 0-dim bf16
        self.register_buffer("table", torch.arange(4.0), persistent=False)

    def forward(self, x):
        return self.conv(x) * self.gain.float() + self.table.sum()


def test_fingerprint_covers_buffers_of_every_dtype_and_rank():
    model = _Buffers()
    first = base_fingerprint(model)
    for name, change in (
        ("count", lambda m: m.count.fill_(4)),
        ("mask", lambda m: m.mask.logical_not_()),
        ("gain", lambda m: m.gain.fill_(0.25)),
    ):
        other = _Buffers()
        other.load_state_dict(model.state_dict())
        change(other)
        assert base_fingerprint(other) != first, name
    # non-persistent buffers are not in a checkpoint (the constructor rebuilds them): the
    # fingerprint is of what a checkpoint holds
    other = _Buffers()
    other.load_state_dict(model.state_dict())
    other.table.zero_()
    assert base_fingerprint(other) == first
    adaptsr.inject_lora(model, 2)
    assert base_fingerprint(model) == first  # an injected model has its base's fingerprint
    adaptsr.merge_lora(model)
    assert model.table.tolist() == [0.0, 1.0, 2.0, 3.0] and model.count.dim() == 0


def test_batchnorm_checkpoint_adapts_reloads_merges_and_exports(tmp_path):
    ckpt = _swiftsrgan_checkpoint(tmp_path / "swift.pth")
    base = adaptsr.load_model(ckpt)
    base_state = {k: v.clone() for k, v in base.state_dict().items()}
    model = adaptsr.load_model(ckpt)
    adaptsr.inject_lora(model, 2)
    _randomise_adapters(model)
    adaptsr.save_adapter(model, tmp_path / "a.safetensors")
    x = torch.rand(1, 3, 12, 12)
    with torch.no_grad():
        want = model(x)
    again = adaptsr.load_model(ckpt)
    adaptsr.load_adapter(again, tmp_path / "a.safetensors")
    with torch.no_grad():
        assert torch.equal(again(x), want)
    adaptsr.merge_lora(again)
    merged = again.state_dict()
    assert {k: (v.shape, v.dtype) for k, v in merged.items()} == {
        k: (v.shape, v.dtype) for k, v in base_state.items()
    }
    for k, v in base_state.items():
        if "bn." in k:  # buffers pass through the merge untouched
            assert torch.equal(merged[k], v), k
    with torch.no_grad():
        torch.testing.assert_close(again(x), want, rtol=1e-5, atol=1e-5)
    from adaptsr.export.onnx import export_onnx

    report = export_onnx(again, tmp_path / "m.onnx", tile=(16, 16))
    assert report.parity.passed


def test_lora_training_leaves_base_buffers_untouched(tmp_path):
    from adaptsr.adapt import train as training
    from adaptsr.adapt.lora import load_adapter

    ckpt = _swiftsrgan_checkpoint(tmp_path / "swift.pth")
    hr = write_noise_pngs(tmp_path / "hr", 4, 32, 32)
    cfg = training.TrainConfig(
        model=str(ckpt),
        data=[str(hr)],
        iters=3,
        batch=2,
        patch=16,
        workers=0,
        device="cpu",
        degradation="bicubic",
        log_every=1,
        val_every=0,
    )
    training.train(cfg, tmp_path / "run", progress=False)
    base = adaptsr.load_model(ckpt)
    trained = load_adapter(adaptsr.load_model(ckpt), tmp_path / "run" / "adapter.safetensors")
    assert any(bool(b.detach().abs().sum() > 0) for _, b, _ in _adapters(trained))  # it trained
    buffers = dict(trained.named_buffers())
    for name, value in base.named_buffers():
        key = name.replace("cnn.pointwise.", "cnn.pointwise.base_layer.")
        assert torch.equal(buffers.get(name, buffers.get(key)), value), name


def _adapters(model):
    return [t for layer in lora_layers(model).values() for t in layer.adapters().values()]


def test_adapter_train_mode_freezes_statistics_and_stochastic_layers():
    torch.manual_seed(0)
    swin = build_small("SwinIR", depths=[2], drop_rate=0.5, drop_path_rate=0.5)
    adapter_train_mode(swin)
    x = torch.rand(1, 3, 8, 8)
    with torch.no_grad():
        assert torch.equal(swin(x), swin(x))  # no dropout, no drop-path
    swin.train()
    with torch.no_grad():
        assert not torch.equal(swin(x), swin(x))  # (the same model is stochastic in train mode)
    span = build_small("SPAN")
    adapter_train_mode(span)
    assert span.training and span.conv_1.training  # the training-time branches run
    bn = nn.Sequential(nn.Conv2d(3, 3, 1), nn.BatchNorm2d(3))
    adapter_train_mode(bn)
    bn(torch.rand(2, 3, 4, 4))
    assert int(bn[1].num_batches_tracked) == 0 and torch.equal(bn[1].running_mean, torch.zeros(3))


def _span():
    torch.manual_seed(0)
    net = build_small("SPAN")
    return model_from_state_dict(net.state_dict(), name="SPAN")


def _batches(n=2, scale=2, size=8):
    g = torch.Generator().manual_seed(0)
    return [
        (torch.rand(1, 3, size, size, generator=g), torch.rand(1, 3, size * scale, size * scale))
        for _ in range(n)
    ]


def test_reparameterised_sites_score_in_the_mode_adapters_train_in():
    model = _span()
    scores = score_sites(model, _batches(), "grad").scores
    assert sum(v > 0 for v in scores.values()) == len(scores)
    assert not model.training  # the mode is restored
    allocation = allocate_ranks(model, _batches(), "r2")
    assert allocation.used <= allocation.budget


class _MostlyDead(nn.Module):
    def __init__(self):
        super().__init__()
        self.live = nn.Conv2d(3, 3, 3, padding=1)
        self.dead = nn.ModuleList(nn.Conv2d(3, 3, 3, padding=1) for _ in range(3))

    def forward(self, x):
        return self.live(x) + 0 * sum(c(x) for c in self.dead)


def test_mostly_zero_scores_are_refused():
    with pytest.raises(UserError, match="3 of 4 site scores are zero or not finite"):
        allocate_ranks(_MostlyDead(), _batches(scale=1), "r2")


def test_rank_aware_training_refuses_uninformative_scores(monkeypatch, tmp_path, run_cli):
    from adaptsr.adapt import allocate

    def dead(model, *args, **kwargs):
        names = [s.name for s in adaptsr.lora_sites(model)]
        return allocate.SiteScores(dict.fromkeys(names, 0.0), [], None)

    monkeypatch.setattr(allocate, "score_sites", dead)
    ckpt = tmp_path / "span.safetensors"
    save_model(_span(), ckpt)
    hr = write_noise_pngs(tmp_path / "hr", 2, 32, 32)
    code, _, err = run_cli(
        "train", "--model", ckpt, "--data", hr, "--out", tmp_path / "run", "--rank-aware",
        "--budget", "r2", "--iters", "1", "--patch", "16", "--score-batches", "1",
        "--score-batch", "1", "--score-patch", "16", "--workers", "0", "--degradation", "bicubic",
    )  # fmt: skip
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert code == 1 and len(errors) == 1 and "82 of 82 site scores are zero" in errors[0]
    assert "Traceback" not in err and not (tmp_path / "run" / "adapter.safetensors").exists()
    bad = {"a": float("nan"), "b": float("nan"), "c": 1.0}
    with pytest.raises(UserError, match="2 of 3"):
        allocate._check_informative(bad, "grad")


def _drunet():
    """A tiny DRUNet: spandrel feeds it the image plus a generated noise-level channel."""
    from spandrel.architectures.DRUNet import DRUNet

    torch.manual_seed(0)
    return DRUNet(in_nc=4, out_nc=3, nc=[8, 16, 32, 64])


def test_model_with_a_call_function_runs_it_and_keeps_the_architecture_keys(tmp_path):
    from spandrel import ModelLoader

    net = _drunet()
    path = tmp_path / "drunet.pth"
    torch.save(net.state_dict(), path)
    model = adaptsr.load_model(path)
    x = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        # spandrel's own call (noise map, then the model; it clamps to [0, 1])
        want = ModelLoader().load_from_file(path)(x.clone())
        np.testing.assert_allclose(model(x).clamp(0, 1).numpy(), want.numpy(), atol=1e-6)
    assert list(model.state_dict()) == list(net.state_dict())
    assert adaptsr.model_info(model).purpose == "Restoration"  # spandrel's label, not SR

    adaptsr.inject_lora(model, 2)
    _randomise_adapters(model)
    with torch.no_grad():
        adapted = model(x)
    adaptsr.merge_lora(model)
    with torch.no_grad():
        np.testing.assert_allclose(model(x).numpy(), adapted.numpy(), atol=1e-5)
    merged = tmp_path / "merged.safetensors"
    save_model(model, merged)
    reloaded = adaptsr.load_model(merged)  # through spandrel: the keys are the architecture's
    with torch.no_grad():
        np.testing.assert_allclose(reloaded(x).numpy(), adapted.numpy(), atol=1e-5)
    # A state dict with the architecture's keys loads back in place (full fine-tuning resume).
    fresh = adaptsr.load_model(path)
    fresh.load_state_dict(reloaded.state_dict())
    with torch.no_grad():
        np.testing.assert_array_equal(fresh(x).numpy(), reloaded(x).numpy())
