"""The upscale pipeline's one plan step: `adapt upscale` checks its options once
(serve.upscale.plan_upscale) and the library runs the plan without checking them again."""

import numpy as np
import pytest
from fakes.exports import nearest_x2_onnx

from adaptsr.core import tiling
from adaptsr.core.errors import UserError
from adaptsr.core.images import Image, read_image, write_image
from adaptsr.serve import upscale
from adaptsr.serve.backends import OnnxBackend


@pytest.fixture
def job(tmp_path):
    """Three images of two sizes and a nearest-x2 ONNX model."""
    rng = np.random.default_rng(0)
    folder = tmp_path / "in"
    folder.mkdir()
    for name, (h, w) in (("a.png", (20, 28)), ("b.png", (20, 28)), ("c.png", (33, 17))):
        rgb = rng.random((h, w, 3), dtype=np.float32)
        write_image(Image(rgb=rgb, alpha=None, bit_depth=8, gray=False), folder / name)
    onnx = tmp_path / "nearest.onnx"
    nearest_x2_onnx(onnx)
    return folder, onnx


def _count(monkeypatch, module, name, calls):
    real = getattr(module, name)

    def counted(*args, **kwargs):
        calls.append(name)
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, counted)


def test_a_run_plans_once_and_lays_out_tiles_once_per_size(run_cli, job, monkeypatch):
    folder, onnx = job
    calls = []
    for module in (upscale, tiling):  # wherever the library might check the options again
        for name in ("choose_tile", "layout_tiles", "plan_tiles"):
            if hasattr(module, name):
                _count(monkeypatch, module, name, calls)
    _count(monkeypatch, upscale, "plan_upscale", calls)
    out = folder.parent / "out"
    args = ("upscale", folder, "--out", out, "--onnx", onnx, "--provider", "cpu", "--tile", "16")
    code, stdout, err = run_cli(*args)
    assert code == 0 and "wrote 3 image(s)" in stdout, err
    assert calls.count("plan_upscale") == 1 and calls.count("choose_tile") == 1
    assert calls.count("layout_tiles") == 2 and "plan_tiles" not in calls  # two distinct sizes
    for name in ("a.png", "c.png"):
        src = read_image(folder / name).rgb
        np.testing.assert_allclose(
            read_image(out / name).rgb, src.repeat(2, 0).repeat(2, 1), atol=1e-6
        )


def test_the_library_trusts_the_plan(job, monkeypatch):
    folder, onnx = job
    backend = OnnxBackend(onnx, provider="cpu")
    plan = upscale.plan_upscale([folder], folder.parent / "out", lambda: backend, tile=16)
    assert plan.tiles == tiling.TileChoice((16, 16), 4) and len(plan.jobs) == 3

    def refuse(*args, **kwargs):
        raise AssertionError("options checked again after the plan")

    for module in (upscale, tiling):
        monkeypatch.setattr(module, "choose_tile", refuse)
    monkeypatch.setattr(upscale, "check_batch", refuse)
    summary = upscale.run_upscale(plan, progress=False)
    assert len(summary.written) == 3 and not summary.failed
    assert read_image(folder.parent / "out" / "c.png").size == (66, 34)


def test_planning_refuses_before_the_model_loads_and_before_any_write(job, tmp_path):
    folder, onnx = job
    opened = []

    def load():
        opened.append(True)
        return OnnxBackend(onnx, provider="cpu")

    out = tmp_path / "out"
    with pytest.raises(UserError, match="no such file or folder"):
        upscale.plan_upscale([folder / "missing.png"], out, load)
    assert not opened  # bad paths fail before the model loads
    for kwargs, message in (
        ({"tile": 16, "overlap": 8}, "less than half the tile"),
        ({"tile": -1}, "--tile must be 0"),
        ({"batch": 0}, "--batch must be >= 1"),
    ):
        with pytest.raises(UserError, match=message):
            upscale.plan_upscale([folder], out, load, **kwargs)
    assert not out.exists()
