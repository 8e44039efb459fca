import os
import pickle

import numpy as np
import pytest
import torch
from fakes.cli import one_line

import adaptsr
from adaptsr.adapt.models import BUILTIN_MODELS
from adaptsr.core.errors import UserError

# Big configurations are covered by the round trip of their x4 sibling's code path; keep the
# suite fast on 2 cores by round-tripping every name but sampling the forward size.
NAMES = sorted(BUILTIN_MODELS)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_builtin_roundtrip(tmp_path, name, suffix):
    model = adaptsr.load_model(name)
    info = adaptsr.model_info(model)
    assert info.scale == int(name[-1]) and info.purpose == "SR"
    path = adaptsr.save_model(model, tmp_path / f"m{suffix}")
    again = adaptsr.load_model(path)
    again_info = adaptsr.model_info(again)
    assert (again_info.arch, again_info.scale) == (info.arch, info.scale)
    a, b = model.state_dict(), again.state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    if sum(p.numel() for p in model.parameters()) < 2_000_000:
        size = max(16, info.min_size, info.multiple_of)
        x = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            y1, y2 = model(x), again(x)
        assert y1.shape == (1, 3, size * info.scale, size * info.scale)
        assert torch.equal(y1, y2)


def test_builtin_param_counts_match_published():
    # Published sizes (papers / official repos): a wrong configuration changes these.
    expected = {
        "edsr-baseline-x4": 1.52e6,
        "edsr-x4": 43.1e6,
        "safmn-x4": 0.240e6,
        "swinir-light-x4": 0.93e6,
        "swinir-m-x4": 11.9e6,
        "drct-x4": 14.1e6,
    }
    for name, count in expected.items():
        model = BUILTIN_MODELS[name]()
        n = sum(p.numel() for p in model.parameters())
        assert abs(n - count) / count < 0.01, (name, n)


def test_edsr_official_layout_and_mean_shift():
    from adaptsr.adapt.edsr import DIV2K_RGB_MEAN

    model = adaptsr.load_model("edsr-baseline-x4")
    keys = set(model.state_dict())
    for k in ["sub_mean.weight", "head.0.weight", "body.0.body.2.weight", "body.16.weight"]:
        assert k in keys
    assert {"tail.0.0.weight", "tail.0.2.weight", "tail.1.weight"} <= keys
    # The mean shift is -255 * DIV2K mean on input, +255 * mean on output.
    bias = model.state_dict()["sub_mean.bias"]
    assert torch.allclose(bias, -255 * torch.tensor(DIV2K_RGB_MEAN))
    # A constant image: with zero convs, EDSR would return its input mean-shifted and back.
    assert model.rgb_range == 255.0


def test_edsr_mean_shift_is_identity_around_zero_body():
    from adaptsr.adapt.edsr import EDSR

    m = EDSR(scale=2, n_resblocks=1, n_feats=16)
    with torch.no_grad():
        for p in [*m.head.parameters(), *m.body.parameters(), *m.tail.parameters()]:
            p.zero_()
    x = torch.rand(1, 3, 8, 8)
    # All convs zero: output is add_mean(0) / 255 = the DIV2K mean everywhere.
    y = m(x)
    from adaptsr.adapt.edsr import DIV2K_RGB_MEAN

    assert torch.allclose(y[0, :, 0, 0], torch.tensor(DIV2K_RGB_MEAN), atol=1e-6)


def test_malicious_pickle_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("owned",))

    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        pickle.dump({"x": Evil()}, f)
    with pytest.raises(adaptsr.UserError, match="refused"):
        adaptsr.load_model(path)


def test_pickled_module_is_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"w": torch.zeros(1), "model": torch.nn.Conv2d(1, 1, 1)}, path)
    with pytest.raises(adaptsr.UserError, match="refused"):
        adaptsr.load_model(path)


def test_torchscript_needs_flag(tmp_path):
    path = tmp_path / "ts.pt"
    torch.jit.script(torch.nn.Conv2d(3, 3, 1)).save(str(path))
    with pytest.raises(adaptsr.UserError, match="TorchScript"):
        adaptsr.load_model(path)


def test_load_errors(tmp_path):
    with pytest.raises(adaptsr.UserError, match="no model file or built-in"):
        adaptsr.load_model(tmp_path / "missing.pth")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file at all")
    with pytest.raises(adaptsr.UserError, match="cannot read"):
        adaptsr.load_model(bad)
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"\x00garbage")
    with pytest.raises(adaptsr.UserError, match="cannot read|refused"):
        adaptsr.load_model(bad)
    unknown = tmp_path / "unknown.pth"
    torch.save({"foo.weight": torch.zeros(3)}, unknown)
    with pytest.raises(adaptsr.UserError, match="unknown architecture"):
        adaptsr.load_model(unknown)
    with pytest.raises(adaptsr.UserError, match="unsupported checkpoint type"):
        (tmp_path / "m.onnx").write_bytes(b"x")
        adaptsr.load_model(tmp_path / "m.onnx")


def test_wrapped_state_dict_is_canonicalised(tmp_path):
    model = adaptsr.load_model("safmn-x4")
    path = tmp_path / "wrapped.pth"
    torch.save({"params_ema": model.state_dict()}, path)
    again = adaptsr.load_model(path)
    assert adaptsr.model_info(again).arch == "SAFMN"


def test_save_refuses_overwrite(tmp_path):
    model = adaptsr.load_model("safmn-x4")
    path = adaptsr.save_model(model, tmp_path / "m.safetensors")
    with pytest.raises(adaptsr.UserError, match="already exists"):
        adaptsr.save_model(model, path)
    adaptsr.save_model(model, path, force=True)
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]  # no temp file left


@pytest.mark.usefixtures("one_thread")
def test_random_bytes_in_a_pth_are_described_and_no_unsafe_advice_given(tmp_path, run_cli):
    import pickle

    class Evil:
        def __reduce__(self):
            return (print, ("owned",))

    cases = {
        "random.pth": (np.random.default_rng(5).bytes(4000), "unrecognised data"),
        "empty.pth": (b"", "empty file"),
        "evil.pth": (pickle.dumps({"x": Evil()}), "builtins.print"),
        "half.pth": (b"\x80\x02" + np.random.default_rng(6).bytes(100), "pickle"),
    }
    for name, (data, words) in cases.items():
        path = tmp_path / name
        path.write_bytes(data)
        code, _, err = run_cli(
            "merge", "--model", path, "--adapter", path, "--out", tmp_path / "m.pth"
        )
        line = one_line(code, err, words)
        assert "weights_only" not in line and "will likely succeed" not in line


@pytest.mark.usefixtures("one_thread")
@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes are POSIX")
def test_a_model_path_that_is_a_pipe_is_refused(tmp_path):
    from adaptsr.adapt.models import load_model

    for name in ("model.pth", "model.safetensors"):
        os.mkfifo(tmp_path / name)
        with pytest.raises(UserError, match="not a regular file"):
            load_model(tmp_path / name)
