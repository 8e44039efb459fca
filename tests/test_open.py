"""`open_model`: the one way to open a model for inference, typed by spec or by option."""

import subprocess
import sys

import numpy as np
import pytest
import torch
from fakes.exports import nearest_x2_onnx

from adaptsr.adapt import open as opening
from adaptsr.adapt.backend import TorchBackend
from adaptsr.adapt.open import ModelSpec, open_model
from adaptsr.core.errors import UserError
from adaptsr.serve.backends import OnnxBackend


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A tiny EDSR checkpoint, an adapter that changes its output, and a nearest-x2 ONNX."""
    from adaptsr.adapt.edsr import EDSR
    from adaptsr.adapt.lora import inject_lora, save_adapter
    from adaptsr.adapt.models import model_from_state_dict, save_model

    tmp = tmp_path_factory.mktemp("open")
    torch.manual_seed(0)
    net = EDSR(scale=2, n_resblocks=1, n_feats=8, res_scale=1.0)
    model = model_from_state_dict(net.state_dict(), name="tiny")
    ckpt = save_model(model, tmp / "tiny.safetensors")
    inject_lora(model, 2)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.1)
    adapter = save_adapter(model, tmp / "adapter.safetensors")
    onnx_path = tmp / "nearest.onnx"
    nearest_x2_onnx(onnx_path)
    return {"ckpt": str(ckpt), "adapter": str(adapter), "onnx": str(onnx_path), "adapted": model}


def test_each_kind_opens_its_backend(files, monkeypatch):
    onnx = open_model(files["onnx"], provider="cpu")
    assert isinstance(onnx, OnnxBackend) and onnx.scale == 2 and onnx.name == files["onnx"]
    base = open_model(files["ckpt"], device="cpu")
    assert isinstance(base, TorchBackend) and base.name == files["ckpt"] and base.scale == 2
    opened = []

    class FakeEngine:  # TensorRT needs a GPU: the branch is checked with a stand-in
        def __init__(self, path):
            opened.append(path)

    monkeypatch.setattr(opening, "TensorRTBackend", FakeEngine)
    assert isinstance(open_model("model.plan"), FakeEngine)
    assert isinstance(open_model(ModelSpec("anything", "tensorrt")), FakeEngine)
    assert opened == ["model.plan", "anything"]


def test_the_adapter_is_applied_however_it_is_named(files):
    x = np.random.default_rng(0).random((1, 3, 12, 10), dtype=np.float32)
    want = TorchBackend(files["adapted"], device="cpu").run(x)
    base = open_model(files["ckpt"], device="cpu").run(x)
    assert np.abs(want - base).max() > 1e-3  # the adapter changes the output
    inline = f"{files['ckpt']}+{files['adapter']}"
    for backend in (
        open_model(files["ckpt"], files["adapter"], device="cpu"),
        open_model(inline, device="cpu"),
        open_model(inline, files["adapter"], device="cpu"),  # the same adapter twice is one
        open_model(ModelSpec.from_options(files["ckpt"], files["adapter"]), device="cpu"),
    ):
        assert backend.name == inline
        np.testing.assert_allclose(backend.run(x), want, atol=1e-5)


def test_options_name_exactly_one_model(files):
    for kwargs, message in (
        ({}, "give exactly one of --model, --onnx, --engine$"),
        ({"model": "m", "onnx": "a.onnx"}, r"\(got --model and --onnx\)"),
        ({"onnx": "a.onnx", "engine": "b.plan"}, r"\(got --onnx and --engine\)"),
        ({"onnx": "a.onnx", "adapter": "a.safetensors"}, "--adapter needs --model"),
        ({"engine": "b.plan", "adapter": "a.safetensors"}, "--adapter needs --model"),
    ):
        with pytest.raises(UserError, match=message):
            ModelSpec.from_options(**kwargs)
    # the option, not the suffix, says what a file is
    assert ModelSpec.from_options(onnx="model.bin") == ModelSpec("model.bin", "onnx")
    assert ModelSpec.from_options(model="m", adapter="a") == ModelSpec("m", "pytorch", "a")


def test_a_spec_refuses_an_adapter_it_cannot_take(files):
    with pytest.raises(UserError, match="--adapter needs --model"):
        open_model(files["onnx"], files["adapter"])
    with pytest.raises(UserError, match="--adapter needs --model"):
        open_model("model.engine", "a.safetensors")
    with pytest.raises(UserError, match="names the adapter a.safetensors, --adapter another"):
        open_model("m+a.safetensors", "b.safetensors")
    assert ModelSpec.parse("m+a.safetensors") == ModelSpec("m", "pytorch", "a.safetensors")
    assert ModelSpec.parse("m+a.safetensors").base() == ModelSpec("m")
    with pytest.raises(ValueError, match="unknown model kind"):
        ModelSpec("m", "keras")


def test_opening_an_onnx_file_imports_no_torch(files):
    script = (
        "import sys\n"
        "from adaptsr.adapt.open import open_model\n"
        f"b = open_model({files['onnx']!r}, provider='cpu')\n"
        "assert b.scale == 2\n"
        "assert not [m for m in sys.modules if m.split('.')[0] in ('torch', 'spandrel')]\n"
        "print('ok')\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


def test_open_model_types_by_suffix(edsr_artifacts, tmp_path):
    assert open_model(edsr_artifacts["onnx"], provider="cpu").kind == "onnx"
    assert open_model(edsr_artifacts["ckpt"], device="cpu").kind == "pytorch"
    from adaptsr.core.errors import UserError

    with pytest.raises(UserError, match="no such engine file"):
        open_model(str(tmp_path / "missing.engine"))
