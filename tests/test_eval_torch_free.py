"""`adapt eval` of a deployed model without torch, the numpy metrics it scores with (checked
against the torch ones, an independent implementation), and pairs too small to score."""

import json
import subprocess
import sys
import textwrap

import cv2
import numpy as np
import pytest
import torch
from fakes.exports import nearest_x2_onnx

from adaptsr.adapt import metrics as torch_metrics
from adaptsr.adapt.imresize import imresize
from adaptsr.serve import metrics

HEAVY = ("torch", "torchvision", "spandrel", "triton")


def _image(rng, h, w):
    base = rng.random((max(1, h // 6), max(1, w // 6), 3)).astype(np.float32)
    img = cv2.resize(base, (w, h), interpolation=cv2.INTER_CUBIC)
    return np.clip(img + rng.normal(0, 0.05, img.shape), 0, 1).astype(np.float32)


def _write(path, rgb):
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), (np.clip(rgb, 0, 1) * 255 + 0.5).astype(np.uint8)[:, :, ::-1])


@pytest.mark.parametrize("gray", [False, True])
@pytest.mark.parametrize("crop", [0, 2, 4])
def test_numpy_metrics_match_the_torch_ones(gray, crop):
    rng = np.random.default_rng(crop + 10 * gray)
    for h, w in ((32, 40), (27, 19), (64, 64)):
        hr = _image(rng, h, w)
        sr = np.clip(hr + rng.normal(0, 0.04, hr.shape), 0, 1).astype(np.float32)
        t_sr, t_hr = (torch.from_numpy(a).permute(2, 0, 1) for a in (sr, hr))
        psnr = metrics.psnr_y(sr, hr, crop, gray)
        ssim = metrics.ssim_y(sr, hr, crop, gray)
        assert psnr == pytest.approx(float(torch_metrics.psnr_y_torch(t_sr, t_hr, crop, gray)),
                                     abs=1e-4)  # fmt: skip
        assert ssim == pytest.approx(float(torch_metrics.ssim_y_torch(t_sr, t_hr, crop, gray)),
                                     abs=1e-5)  # fmt: skip
        assert 15 < psnr < 40 and 0.2 < ssim < 0.999  # neither identical nor unrelated


def test_numpy_bicubic_is_matlab_imresize():
    rng = np.random.default_rng(0)
    for scale in (2, 3, 4):
        lr = rng.random((7, 11, 3))
        want = imresize(torch.from_numpy(lr).permute(2, 0, 1), scale).permute(1, 2, 0).numpy()
        got = metrics.bicubic_upscale(lr, scale)
        assert got.shape == (7 * scale, 11 * scale, 3)
        np.testing.assert_allclose(got, np.clip(want, 0, 1), atol=1e-6)
        assert np.abs(got - np.kron(lr, np.ones((scale, scale, 1)))).max() > 0.05  # not nearest


@pytest.fixture
def onnx_pairs(tmp_path):
    """An x2 nearest-neighbour ONNX, two scorable pairs and one too small to score at x2
    (a 12x12 HR: 8x8 after the 2-px border, less than SSIM's 11-px window)."""
    rng = np.random.default_rng(5)
    for name, (h, w) in {"a": (40, 48), "b": (32, 36), "tiny": (12, 12)}.items():
        hr = _image(rng, h, w)
        _write(tmp_path / "hr" / f"{name}.png", hr)
        _write(tmp_path / "lr" / f"{name}.png", cv2.resize(hr, (w // 2, h // 2), cv2.INTER_AREA))
    return tmp_path, nearest_x2_onnx(tmp_path / "x2.onnx")


def _expected(tmp_path, name):
    """The scores computed by hand: nearest x2 of the 8-bit LR against the 8-bit HR."""
    read = lambda p: cv2.imread(str(p))[:, :, ::-1].astype(np.float32) / 255  # noqa: E731
    hr, lr = read(tmp_path / "hr" / f"{name}.png"), read(tmp_path / "lr" / f"{name}.png")
    sr = lr.repeat(2, 0).repeat(2, 1)
    return metrics.psnr_y(sr, hr, 2), metrics.ssim_y(sr, hr, 2)


BLOCKED_EVAL = textwrap.dedent(
    """
    import importlib.abc, sys

    class Block(importlib.abc.MetaPathFinder):  # as if torch were not installed
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in {heavy!r}:
                raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
            return None

    sys.meta_path.insert(0, Block())
    import adaptsr.cli.app
    try:
        adaptsr.cli.app.main(sys.argv[1:])
    finally:
        assert not [m for m in sys.modules if m.split(".")[0] in {heavy!r}]
    """
).format(heavy=HEAVY)


def _blocked_eval(*args):
    return subprocess.run(
        [sys.executable, "-c", BLOCKED_EVAL, "eval", *map(str, args)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_eval_scores_an_onnx_file_without_torch(onnx_pairs):
    pytest.importorskip("onnxruntime")
    tmp, model = onnx_pairs
    report = tmp / "r.json"
    done = _blocked_eval(
        "--onnx", model, "--hr", tmp / "hr", "--lr", tmp / "lr", "--report", report,
        "--csv", tmp / "r.csv", "--quiet", "--provider", "cpu",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    r = json.loads(report.read_text())
    assert r["artifact"] == "onnx" and [im["name"] for im in r["images"]] == ["a", "b"]
    for im in r["images"]:
        psnr, ssim = _expected(tmp, im["name"])
        assert im["psnr_y"] == pytest.approx(psnr, abs=1e-6)
        assert im["ssim_y"] == pytest.approx(ssim, abs=1e-7)
    assert r["baselines"]["bicubic"]["psnr_y"] != pytest.approx(r["mean"]["psnr_y"], abs=0.1)
    # the too-small pair is skipped by name, the perceptual metrics with what to install
    assert "tiny.png: 12x12 is too small to score at x2" in done.stderr
    assert "LPIPS and DISTS skipped: they need torch" in done.stderr

    done = _blocked_eval("--onnx", model, "--hr", tmp / "hr", "--degradation", "bicubic")
    assert done.returncode == 1 and done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith("error: --degradation needs torch")


def test_a_pair_too_small_for_ssim_is_skipped_by_name_for_every_backend(run_cli, onnx_pairs):
    tmp, model = onnx_pairs
    common = ("--hr", tmp / "hr", "--lr", tmp / "lr", "--quiet", "--no-perceptual")
    code, out, err = run_cli("eval", "--onnx", model, "--provider", "cpu", *common)
    assert code == 0, err
    assert "2 image(s)" in out and "tiny.png: 12x12 is too small to score at x2" in err
    code, _, err = run_cli("eval", "--onnx", model, "--provider", "cpu", *common, "--strict")
    assert code == 1 and err.count("\n") == 1 and "tiny.png: 12x12 is too small" in err

    # PyTorch, x4: a 16x16 HR leaves 8x8 after the 4-px border; the limit is 20 (19, rounded
    # up to a multiple of the scale, since the HR is cropped to LR x 4)
    x4 = tmp / "x4"
    rng = np.random.default_rng(1)
    for name, side in (("ok", 20), ("small", 16)):
        hr = _image(rng, side, side)
        _write(x4 / "hr" / f"{name}.png", hr)
        _write(x4 / "lr" / f"{name}.png", cv2.resize(hr, (side // 4, side // 4), cv2.INTER_AREA))
    code, out, err = run_cli(
        "eval", "--model", "safmn-x4", "--hr", x4 / "hr", "--lr", x4 / "lr", "--quiet",
        "--no-perceptual", "--device", "cpu",
    )  # fmt: skip
    assert code == 0, err
    assert "1 image(s)" in out and "small.png: 16x16 is too small to score at x4" in err
    assert "at least 20 px" in err
