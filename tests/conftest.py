"""Fixtures shared by the test files. Stand-ins for TensorRT and the CUDA runtime, tiny models
and small files made the way adaptsr makes them are in tests/fakes/ (importable as `fakes`:
pytest puts this folder on sys.path)."""

import os
import sys
import tempfile

import pytest
from fakes.tensorrt import GPU, FakeTensorRT

from adaptsr.export import tensorrt as trt_export

# Small thread counts keep the suite predictable on 2-core CI machines.
os.environ.setdefault("OMP_NUM_THREADS", "2")
# An empty weights cache of the suite's own: weights a developer fetched never change a test.
os.environ["ADAPTSR_CACHE"] = tempfile.mkdtemp(prefix="adaptsr-test-cache-")


@pytest.fixture
def one_thread():
    """One torch thread for the test (tests that time or compare runs use it)."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture
def fake_trt(monkeypatch):
    """Install a FakeTensorRT (and a fake GPU) for the duration of a test: `fake_trt(**kwargs)`
    returns the fake, whose `calls` record what TensorRT was asked."""

    def install(**kwargs):
        fake = FakeTensorRT(**kwargs)
        monkeypatch.setitem(sys.modules, "tensorrt", fake)
        monkeypatch.setattr(trt_export, "gpu_info", lambda: dict(GPU))
        return fake

    return install


@pytest.fixture
def run_cli(capsys):
    """Run `adapt ARGS...` in-process; return (exit code, stdout, stderr)."""
    from adaptsr.cli.app import main

    def run(*args):
        code = 0
        try:
            main([str(a) for a in args])
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
        out, err = capsys.readouterr()
        return code, out, err

    return run


@pytest.fixture
def engine_sidecar():
    """An engine sidecar as `adapt export trt` writes it; keyword arguments replace fields."""
    from dataclasses import replace

    from adaptsr.core.contracts import EngineProfile, EngineSidecar

    example = EngineSidecar(
        engine="m.engine",
        onnx="m.onnx",
        onnx_sha256="",
        onnx_input=[1, 3, "height", "width"],
        tensorrt_version="10.3.0.26",
        gpu="NVIDIA Jetson AGX Orin",
        compute_capability="8.7",
        precision="fp16",
        onnx_precision="fp16",
        route="strongly-typed",
        strongly_typed=True,
        fp32_constrained_layers=0,
        refittable=False,
        profile=EngineProfile("input", (1, 3, 16, 16), (1, 3, 256, 256), (1, 3, 512, 512)),
        adapter_fingerprint=None,
        base_fingerprint=None,
        build_seconds=1.5,
        built_at="2026-12-05T10:00:00+00:00",
        build_command="adapt export trt --onnx m.onnx --out m.engine",
        metadata={"scale": "4", "size_requirements": '{"min_size": 8, "multiple_of": 4}'},
    )
    return lambda **changes: replace(example, **changes)


@pytest.fixture
def default_pixel_limit(monkeypatch):
    """The default image pixel limit for the test: a command's `--max-pixels` sets it for the
    process (adaptsr.core.images.MAX_PIXELS_ENV) and must not leak into the next test."""
    from adaptsr.core.images import MAX_PIXELS, MAX_PIXELS_ENV

    monkeypatch.setenv(MAX_PIXELS_ENV, str(MAX_PIXELS))


@pytest.fixture(scope="module")
def edsr_files(tmp_path_factory):
    """Files for commands to read: {"ckpt": a one-block EDSR x2 checkpoint, "adapter": a rank-2
    adapter for it with random B, "images": a folder of three 24x20 PNGs, "root": their folder}."""
    import torch
    from fakes.images import write_noise_pngs
    from fakes.models import one_block_edsr

    from adaptsr.adapt.lora import inject_lora, save_adapter
    from adaptsr.adapt.models import save_model

    root = tmp_path_factory.mktemp("edsr_files")
    ckpt = save_model(one_block_edsr(), root / "tiny.safetensors")
    adapted = inject_lora(one_block_edsr(), 2)
    with torch.no_grad():
        for name, p in adapted.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.01)
    adapter = save_adapter(adapted, root / "adapter.safetensors")
    images = write_noise_pngs(root / "images", 3, 20, 24)
    return {"root": root, "ckpt": str(ckpt), "adapter": str(adapter), "images": images}


@pytest.fixture(scope="module")
def train_hr(tmp_path_factory):
    """A folder of four textured 32x32 PNGs to train on."""
    import cv2
    import numpy as np

    hr = tmp_path_factory.mktemp("train") / "hr"
    hr.mkdir()
    rng = np.random.default_rng(7)
    for i in range(4):
        small = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
        cv2.imwrite(str(hr / f"{i}.png"), cv2.resize(small, (32, 32)))
    return hr


@pytest.fixture(scope="module")
def edsr_artifacts(tmp_path_factory):
    """The tiny EDSR x2 (fakes.models.tiny_edsr) as "model", its "ckpt", and ONNX exports:
    "onnx" (with scale and size metadata), "bare" (none) and "static" (32x32 input)."""
    import json

    from fakes.exports import export_torch
    from fakes.models import tiny_edsr

    from adaptsr.adapt.models import save_model

    root = tmp_path_factory.mktemp("artifacts")
    model = tiny_edsr()
    ckpt = save_model(model, root / "tiny.safetensors")
    size = json.dumps({"min_size": 8, "multiple_of": 1})
    return {
        "model": model,
        "ckpt": str(ckpt),
        "onnx": str(
            export_torch(
                model, root / "tiny.onnx", metadata={"scale": 2, "size_requirements": size}
            )
        ),
        "bare": str(export_torch(model, root / "bare.onnx")),
        "static": str(export_torch(model, root / "static.onnx", static=(32, 32))),
    }


@pytest.fixture(scope="module")
def safmn_setup(tmp_path_factory):
    """(folder, a tiny SAFMN x4 checkpoint (5k parameters), 8 textured 48x48 images to train on)."""
    import numpy as np
    from fakes.images import write_textured_pngs
    from fakes.models import save_tiny_safmn

    root = tmp_path_factory.mktemp("train")
    model = save_tiny_safmn(root / "tiny.safetensors")
    hr = write_textured_pngs(root / "hr", 8, np.random.default_rng(0))
    return root, model, hr
