"""`adapt eval --onnx/--engine`: a deployed artifact is scored with the same metrics and report
as the PyTorch model it was exported from."""

import json

import cv2
import numpy as np
import pytest
import torch

from adaptsr.adapt.archs import build_small
from adaptsr.adapt.models import model_from_state_dict, save_model
from adaptsr.core.images import synthetic_image
from adaptsr.export.onnx import export_onnx


def _write(path, rgb):
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = (np.clip(rgb, 0, 1) * 255 + 0.5).astype(np.uint8)
    cv2.imwrite(str(path), arr[:, :, ::-1])


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A small x2 EDSR as a checkpoint and as its dynamic ONNX export, and LR/HR pairs."""
    tmp = tmp_path_factory.mktemp("deployed")
    torch.manual_seed(3)
    net = build_small("EDSR")  # x2, 2 blocks of 16 features
    model = model_from_state_dict(net.state_dict(), name="small-edsr")
    ckpt = save_model(model, tmp / "edsr.safetensors")
    onnx_path = tmp / "edsr.onnx"
    export_onnx(model, onnx_path, dynamic=True)
    for i, (h, w) in enumerate([(40, 48), (32, 56)]):
        hr = synthetic_image(h, w, seed=i).transpose(1, 2, 0)
        _write(tmp / "hr" / f"im{i}.png", hr)
        _write(tmp / "lr" / f"im{i}.png", cv2.resize(hr, (w // 2, h // 2), cv2.INTER_AREA))
    return tmp, ckpt, onnx_path


@pytest.mark.slow
def test_onnx_scores_like_the_pytorch_model(run_cli, exported):
    tmp, ckpt, onnx_path = exported
    reports = {}
    for flag, artifact in (("--model", ckpt), ("--onnx", onnx_path)):
        report = tmp / f"report{flag}.json"
        code, out, err = run_cli(
            "eval", flag, artifact, "--hr", tmp / "hr", "--lr", tmp / "lr", "--quiet",
            "--no-perceptual", "--device", "cpu", "--report", report, "--force",
        )  # fmt: skip
        assert code == 0, err
        reports[flag] = json.loads(report.read_text())
    torch_r, onnx_r = reports["--model"], reports["--onnx"]
    assert onnx_r["artifact"] == "onnx" and torch_r["artifact"] == "pytorch"
    assert onnx_r["model"] == str(onnx_path) and onnx_r["scale"] == 2
    assert onnx_r["count"] == torch_r["count"] == 2
    assert set(onnx_r["mean"]) == set(torch_r["mean"]) and "psnr_y" in onnx_r["mean"]
    for key, value in torch_r["mean"].items():  # ORT is within 1e-4 of PyTorch per pixel
        assert onnx_r["mean"][key] == pytest.approx(value, abs=1e-3), key
    for a, b in zip(onnx_r["images"], torch_r["images"], strict=True):
        assert a["name"] == b["name"] and a["psnr_y"] == pytest.approx(b["psnr_y"], abs=1e-3)
    assert onnx_r["baselines"] == torch_r["baselines"]
    # random weights: the model is far from bicubic, so the agreement above is not vacuous
    assert abs(onnx_r["mean"]["psnr_y"] - onnx_r["baselines"]["bicubic"]["psnr_y"]) > 1


@pytest.mark.slow
def test_deployed_artifact_argument_errors(run_cli, exported):
    tmp, ckpt, onnx_path = exported
    common = ("--hr", tmp / "hr", "--lr", tmp / "lr", "--quiet", "--no-perceptual")
    for args, message in (
        (("--onnx", onnx_path, "--adapter", ckpt), "--adapter needs --model"),
        (("--onnx", onnx_path, "--model", ckpt), "give exactly one of --model, --onnx, --engine"),
        ((), "give exactly one of --model, --onnx, --engine"),
        (("--onnx", onnx_path, "--scale", 4), "--scale 4 does not match the model's scale (x2)"),
    ):
        code, _, err = run_cli("eval", *args, *common)
        assert code == 1 and err.startswith("error: ") and message in err, err
        assert err.count("\n") == 1
