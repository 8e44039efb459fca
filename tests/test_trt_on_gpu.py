"""Real TensorRT builds, verification, timing, refit and engine-level zero overhead; marked
`tensorrt` and skipped without TensorRT, cuda-python and an NVIDIA GPU."""

import json
import subprocess

import pytest
from fakes.models import tiny_edsr

from adaptsr.core.artifacts import engine_info_path
from adaptsr.export import parity
from adaptsr.export.onnx import export_onnx
from adaptsr.export.tensorrt import build_engine, refit_engine
from adaptsr.export.trt_verify import photo_batch
from adaptsr.serve.backends import OnnxBackend, TensorRTBackend
from adaptsr.serve.engine_timing import time_engine


def _tensorrt_and_gpu() -> bool:
    try:
        import tensorrt  # noqa: F401
        from cuda.bindings import runtime  # noqa: F401
    except ImportError:
        return False
    try:
        return subprocess.run(["nvidia-smi"], capture_output=True).returncode == 0
    except FileNotFoundError:
        return False


needs_gpu = pytest.mark.skipif(
    not _tensorrt_and_gpu(), reason="needs TensorRT, cuda-python and an NVIDIA GPU"
)


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    """Two weight sets of one architecture (what two adapters merged into one base are), each
    exported fp32 and fp16 with dynamic size and batch."""
    tmp = tmp_path_factory.mktemp("trt")
    out = {}
    for name, seed in (("a", 1), ("b", 2)):
        for precision in ("fp32", "fp16"):
            path = tmp / f"{name}.{precision}.onnx"
            export_onnx(tiny_edsr(seed), path, dynamic=True, dynamic_batch=True,
                        fp16=precision == "fp16")  # fmt: skip
            out[name, precision] = path
    return tmp, out


SHAPES = {"min_hw": (16, 16), "opt_hw": (64, 64), "max_hw": (128, 128), "batch": (1, 2, 4)}


@pytest.mark.tensorrt
@needs_gpu
def test_real_engine_verifies_and_times(exports):

    tmp, onnx = exports
    engine = tmp / "a.engine"
    info = build_engine(onnx["a", "fp16"], engine, fp16=True, reference=onnx["a", "fp32"],
                        force=True, **SHAPES)  # fmt: skip
    v = info.verify
    assert v.passed and v.min_psnr_db >= 45
    assert [c.shape for c in v.checks] == [[1, 3, 16, 16], [2, 3, 64, 64], [4, 3, 128, 128]]
    backend = TensorRTBackend(engine)
    assert backend.scale == 2 and backend.max_batch == 4
    x = photo_batch((3, 3, 40, 56))
    ref = OnnxBackend(onnx["a", "fp32"], provider="cpu").run(x)
    assert parity.psnr(backend.run(x), ref) >= 45  # batch 3: split into 3 of at most 4
    for graph in (False, True):
        t = time_engine(backend, (2, 3, 64, 64), runs=10, warmup=2, cuda_graph=graph)
        assert t.compute.median_ms > 0 and t.h2d.median_ms > 0 and t.d2h.median_ms > 0
    side = json.loads(engine_info_path(engine).read_text())
    assert side["compute_capability"] and side["gpu"] and side["route"] == "strongly-typed"


@pytest.mark.tensorrt
@needs_gpu
def test_real_refit_and_engine_level_zero_overhead(exports):
    tmp, onnx = exports
    base = tmp / "base.engine"
    info = build_engine(onnx["b", "fp16"], base, fp16=True, reference=onnx["b", "fp32"],
                        base_onnx=onnx["a", "fp16"], refittable=True, force=True,
                        timing_cache=tmp / "cache.bin", **SHAPES)  # fmt: skip
    assert info.zero_overhead.verdict == "PASS" and info.zero_overhead.detailed
    refit = refit_engine(base, onnx["a", "fp16"], tmp / "refit.engine",
                         reference=onnx["a", "fp32"], force=True)  # fmt: skip
    assert refit.verify.passed and refit.refit_seconds < info.build_seconds
    x = photo_batch((1, 3, 48, 48))
    got = TensorRTBackend(tmp / "refit.engine").run(x)
    want_a = OnnxBackend(onnx["a", "fp32"], provider="cpu").run(x)
    want_b = OnnxBackend(onnx["b", "fp32"], provider="cpu").run(x)
    assert parity.psnr(got, want_a) >= 45 and parity.psnr(got, want_b) < 40  # a's weights


@pytest.mark.tensorrt
@needs_gpu
def test_real_fp16_flag_route_on_tensorrt_10(exports):
    import tensorrt

    if int(tensorrt.__version__.split(".")[0]) >= 11:
        pytest.skip("TensorRT 11 has no FP16 builder flag")
    tmp, onnx = exports
    info = build_engine(onnx["a", "fp32"], tmp / "flag.engine", fp16=True, route="fp16-flag",
                        force=True, **SHAPES)  # fmt: skip
    assert info.verify.passed and info.precision == "fp16"
