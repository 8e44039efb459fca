"""Fixtures shared by the test files. Stand-ins for TensorRT and the CUDA runtime, tiny models
and small files made the way adaptsr makes them are in tests/fakes/ (importable as `fakes`:
pytest puts this folder on sys.path)."""

import os
import sys

import pytest
from fakes.tensorrt import GPU, FakeTensorRT

from adaptsr.export import tensorrt as trt_export

# Small thread counts keep the suite predictable on 2-core CI machines.
os.environ.setdefault("OMP_NUM_THREADS", "2")


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
