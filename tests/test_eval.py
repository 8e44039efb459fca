"""`adapt eval`: pairing, numbers against a direct computation, outputs and bad input."""

import csv
import json

import cv2
import numpy as np
import pytest
import torch
from fakes.cli import one_line
from skimage.metrics import peak_signal_noise_ratio

from adaptsr.adapt import metrics
from adaptsr.adapt.models import load_model
from adaptsr.core.errors import UserError

MODEL = "safmn-x4"  # tiny and x4; input multiple of 8 (exercises padding)


def _hr(seed, h=40, w=48):
    rng = np.random.default_rng(seed)
    base = rng.random((max(1, h // 8), max(1, w // 8), 3)).astype(np.float32)
    img = cv2.resize(base, (w, h), interpolation=cv2.INTER_CUBIC)
    return np.clip(img + rng.normal(0, 0.03, img.shape), 0, 1)


def _write(path, rgb):
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = (np.clip(rgb, 0, 1) * 255 + 0.5).astype(np.uint8)
    cv2.imwrite(str(path), arr[:, :, ::-1] if arr.ndim == 3 else arr)


def _lr(hr, scale=4):
    h, w = hr.shape[:2]
    return cv2.resize(hr, (w // scale, h // scale), interpolation=cv2.INTER_AREA)


@pytest.fixture
def pairs(tmp_path):
    """HR/LR folders with three images, one of them a grayscale file."""
    hr_dir, lr_dir = tmp_path / "hr", tmp_path / "lr"
    for i, name in enumerate(["a", "b", "c"]):
        hr = _hr(i)
        if name == "c":
            hr = np.repeat(hr.mean(axis=2, keepdims=True), 3, axis=2)
            _write(hr_dir / f"{name}.png", hr[:, :, 0])
        else:
            _write(hr_dir / f"{name}.png", hr)
        _write(lr_dir / f"{name}.png", _lr(hr))
    return hr_dir, lr_dir


def _read(path):
    return cv2.imread(str(path), cv2.IMREAD_COLOR)[:, :, ::-1].astype(np.float32) / 255


def test_eval_numbers_match_a_direct_computation(run_cli, pairs, tmp_path):
    hr_dir, lr_dir = pairs
    out = tmp_path / "out"
    code, stdout, err = run_cli(
        "eval", "--model", MODEL, "--lr", lr_dir, "--hr", hr_dir, "--scale", 4, "--quiet",
        "--device", "cpu", "--no-perceptual",
        "--save", out / "sr", "--report", out / "r.json", "--csv", out / "r.csv",
        "--compare", out / "cmp.png",
    )  # fmt: skip
    assert code == 0, err
    assert "PSNR-Y" in stdout and "bicubic" in stdout and "model" in stdout
    report = json.loads((out / "r.json").read_text())
    assert [im["name"] for im in report["images"]] == ["a", "b", "c"]
    model = load_model(MODEL)
    for im in report["images"]:
        # the model run by hand (SAFMN needs sides that are multiples of 8: pad, then crop)
        lr = _read(lr_dir / f"{im['name']}.png")
        x = torch.from_numpy(lr).permute(2, 0, 1)[None]
        x = torch.nn.functional.pad(x, (0, 8 - x.shape[3] % 8, 0, 8 - x.shape[2] % 8), "reflect")
        with torch.no_grad():
            y = model(x)[0, :, : lr.shape[0] * 4, : lr.shape[1] * 4].clamp(0, 1)
        sr = y.permute(1, 2, 0).numpy()
        gray = im["name"] == "c"
        hr = _read(hr_dir / f"{im['name']}.png")
        ya = metrics.y_channel(sr, gray)[4:-4, 4:-4]
        yb = metrics.y_channel(hr, gray)[4:-4, 4:-4]
        ref = peak_signal_noise_ratio(yb, ya, data_range=255)
        assert im["psnr_y"] == pytest.approx(ref, abs=1e-3)
        # the saved SR image reproduces the reported numbers exactly
        saved = _read(out / "sr" / f"{im['name']}.png")
        assert im["psnr_y"] == pytest.approx(metrics.psnr_y(saved, hr, 4, gray), abs=1e-9)
        assert im["ssim_y"] == pytest.approx(metrics.ssim_y(saved, hr, 4, gray), abs=1e-9)
    mean = np.mean([i["psnr_y"] for i in report["images"]])
    assert report["mean"]["psnr_y"] == pytest.approx(mean, abs=1e-12)
    assert set(report["baselines"]) == {"bicubic"}
    rows = list(csv.DictReader((out / "r.csv").open()))
    assert [r["name"] for r in rows] == ["a", "b", "c"]
    assert float(rows[1]["model_ssim_y"]) == pytest.approx(report["images"][1]["ssim_y"], abs=1e-4)
    grid = cv2.imread(str(out / "cmp.png"))
    # bicubic | model | HR columns, one row per image: 40-px crops zoomed x4, 4-px gaps
    assert grid.shape[:2] == (22 + 3 * (160 + 4), 3 * 160 + 2 * 4)
    # existing outputs are kept without --force
    code, _, err = run_cli("eval", "--model", MODEL, "--lr", lr_dir, "--hr", hr_dir,
                           "--report", out / "r.json", "--quiet")  # fmt: skip
    assert code == 1 and "already exists" in err


def test_adapter_scores_base_and_adapted(run_cli, pairs, tmp_path):
    lora = pytest.importorskip("adaptsr.adapt.lora")
    model = load_model(MODEL)
    lora.inject_lora(model, 2)
    torch.manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    lora.save_adapter(model, tmp_path / "ad.safetensors")
    hr_dir, lr_dir = pairs
    rep = tmp_path / "r.json"
    code, stdout, err = run_cli(
        "eval", "--model", MODEL, "--adapter", tmp_path / "ad.safetensors", "--lr", lr_dir,
        "--hr", hr_dir, "--report", rep, "--compare", tmp_path / "c.png", "--quiet",
        "--no-perceptual", "--device", "cpu",
    )  # fmt: skip
    assert code == 0, err
    assert "adapted" in stdout and "base" in stdout
    report = json.loads(rep.read_text())
    assert report["mean"]["psnr_y"] != pytest.approx(report["baselines"]["base"]["psnr_y"])
    plain = tmp_path / "plain.json"
    run_cli("eval", "--model", MODEL, "--lr", lr_dir, "--hr", hr_dir, "--report", plain,
            "--quiet", "--no-perceptual", "--device", "cpu")  # fmt: skip
    base = json.loads(plain.read_text())["mean"]
    assert report["baselines"]["base"]["psnr_y"] == pytest.approx(base["psnr_y"], abs=1e-9)
    assert cv2.imread(str(tmp_path / "c.png")).shape[1] == 4 * 160 + 3 * 4  # 4 columns


def test_pairing_conventions(tmp_path):
    from adaptsr.adapt.evaluate import find_pairs

    hr, lr = _hr(0, 16, 16), _hr(0, 4, 4)
    _write(tmp_path / "div2k" / "hr" / "0001.png", hr)
    _write(tmp_path / "div2k" / "lr" / "0001x4.png", lr)
    pairs = find_pairs(tmp_path / "div2k" / "hr", tmp_path / "div2k" / "lr", 4)
    assert [(p.name, p.lr.name) for p in pairs] == [("0001", "0001x4.png")]
    real = tmp_path / "realsr"
    _write(real / "Canon_001_HR.png", hr)
    _write(real / "Canon_001_LR4.png", lr)
    _write(real / "Canon_001_LR2.png", _hr(0, 8, 8))
    pairs = find_pairs(real, real, 4)
    assert [(p.name, p.hr.name, p.lr.name) for p in pairs] == [
        ("Canon_001_HR", "Canon_001_HR.png", "Canon_001_LR4.png")
    ]
    # --hr alone on a DIV2K root: the layouts of training (adaptsr.adapt.layouts)
    root = tmp_path / "DIV2K"
    _write(root / "DIV2K_valid_HR" / "0801.png", hr)
    _write(root / "DIV2K_valid_LR_bicubic" / "X4" / "0801x4.png", lr)
    pairs = find_pairs(root, root, 4)
    assert [(p.name, p.lr.name) for p in pairs] == [("0801", "0801x4.png")]
    with pytest.raises(UserError, match="no LR images: .* holds no DIV2K-style or .*RealSR-style"):
        find_pairs(tmp_path / "div2k" / "hr", tmp_path / "div2k" / "hr", 4)


def test_realsr_folder_and_hr_only(run_cli, tmp_path):
    real = tmp_path / "real"
    hr = _hr(3)
    _write(real / "x_HR.png", hr)
    _write(real / "x_LR4.png", _lr(hr))
    code, stdout, err = run_cli("eval", "--model", MODEL, "--hr", real, "--quiet",
                                "--no-perceptual", "--device", "cpu")  # fmt: skip
    assert code == 0, err
    assert "1 image(s)" in stdout
    # HR-only with the bicubic degradation equals real pairs made with the same imresize
    from adaptsr.adapt.degradations import Degrader

    hr_dir, lr_dir = tmp_path / "h", tmp_path / "l"
    _write(hr_dir / "y.png", hr)
    x = torch.from_numpy(_read(hr_dir / "y.png")).permute(2, 0, 1)[None]
    _write(lr_dir / "y.png", Degrader("bicubic", 4)(x)[0].permute(1, 2, 0).numpy())
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    common = ("--model", MODEL, "--hr", hr_dir, "--quiet", "--no-perceptual", "--device", "cpu")
    assert run_cli("eval", *common, "--degradation", "bicubic", "--report", a)[0] == 0
    assert run_cli("eval", *common, "--lr", lr_dir, "--report", b)[0] == 0
    ma, mb = json.loads(a.read_text())["mean"], json.loads(b.read_text())["mean"]
    assert ma["psnr_y"] == pytest.approx(mb["psnr_y"], abs=1e-6)


def test_corrupt_images_are_skipped_or_fatal(run_cli, pairs):
    hr_dir, lr_dir = pairs
    (lr_dir / "b.png").write_bytes(b"not a png")
    args = ("eval", "--model", MODEL, "--lr", lr_dir, "--hr", hr_dir, "--quiet",
            "--no-perceptual", "--no-baselines", "--device", "cpu")  # fmt: skip
    code, stdout, err = run_cli(*args)
    assert code == 0 and "2 image(s)" in stdout and "skipped 1 image(s)" in err and "b.png" in err
    code, _, err = run_cli(*args, "--strict")
    assert code == 1 and "b.png" in err and "Traceback" not in err


def _one_line(code, err, *words):
    assert code != 0
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for w in words:
        assert w in lines[0], lines[0]


def test_bad_input_is_one_clear_line(run_cli, pairs, tmp_path):
    hr_dir, lr_dir = pairs
    base = ("eval", "--model", MODEL, "--quiet", "--no-perceptual")
    _one_line(*run_cli(*base, "--hr", tmp_path / "nope", "--lr", lr_dir)[::2], "no such folder")
    (tmp_path / "empty").mkdir()
    _one_line(*run_cli(*base, "--hr", tmp_path / "empty", "--lr", lr_dir)[::2], "no images")
    _one_line(*run_cli(*base, "--hr", hr_dir, "--lr", lr_dir, "--scale", 2)[::2], "--scale 2")
    _one_line(*run_cli(*base, "--hr", hr_dir)[::2], "--degradation")
    _one_line(
        *run_cli(*base, "--hr", hr_dir, "--lr", lr_dir, "--degradation", "bicubic")[::2], "not both"
    )
    # an HR image without LR
    _write(hr_dir / "d.png", _hr(9))
    _one_line(*run_cli(*base, "--hr", hr_dir, "--lr", lr_dir)[::2], "d.png", "without an LR")
    # LR size that disagrees with the scale names the file
    _write(lr_dir / "d.png", _hr(9, 12, 12))
    _one_line(*run_cli(*base, "--hr", hr_dir, "--lr", lr_dir)[::2], "d.png", "does not match HR")


def test_modcrop_remainder_is_accepted(run_cli, tmp_path):
    hr = _hr(5, 42, 51)  # 42x51 HR -> 10x12 LR at x4: the standard mod-crop
    _write(tmp_path / "h" / "m.png", hr)
    _write(tmp_path / "l" / "m.png", _lr(hr[:40, :48]))
    code, stdout, err = run_cli("eval", "--model", MODEL, "--hr", tmp_path / "h", "--lr",
                                tmp_path / "l", "--quiet", "--no-perceptual")  # fmt: skip
    assert code == 0, err


def test_hr_only_realesrgan_is_seeded(run_cli, tmp_path):
    from adaptsr.adapt.evaluate import make_degrade

    hr = _hr(6, 64, 64)
    degrade = make_degrade("realesrgan", 4, seed=1)
    lr = degrade(hr, 0)
    assert lr.shape == (16, 16, 3)
    np.testing.assert_array_equal(lr, make_degrade("realesrgan", 4, seed=1)(hr, 0))
    assert not np.array_equal(lr, degrade(hr, 1))  # each image its own seed
    _write(tmp_path / "h" / "p.png", hr)
    path = tmp_path / "r.json"
    code, _, err = run_cli("eval", "--model", MODEL, "--hr", tmp_path / "h", "--degradation",
                           "realesrgan", "--seed", 1, "--report", path, "--quiet",
                           "--no-perceptual", "--device", "cpu")  # fmt: skip
    assert code == 0, err
    report = json.loads(path.read_text())
    assert report["degradation"] == "realesrgan" and report["seed"] == 1 and report["lr"] is None


def test_tiled_inference_is_used_with_tile(run_cli, tmp_path):
    hr = _hr(7, 96, 96)
    _write(tmp_path / "h" / "t.png", hr)
    _write(tmp_path / "l" / "t.png", _lr(hr))
    means = []
    for tile in (0, 16):  # LR 24x24: whole, or four overlapping 16x16 tiles
        path = tmp_path / f"t{tile}.json"
        code, _, err = run_cli("eval", "--model", MODEL, "--hr", tmp_path / "h", "--lr",
                               tmp_path / "l", "--tile", tile, "--report", path, "--quiet",
                               "--no-perceptual", "--no-baselines")  # fmt: skip
        assert code == 0, err
        means.append(json.loads(path.read_text())["mean"]["psnr_y"])
    assert means[0] != means[1] and abs(means[0] - means[1]) < 1.0


@pytest.mark.usefixtures("one_thread")
def test_eval_outputs_that_collide_and_images_too_small_to_score(edsr_files, tmp_path, run_cli):
    images = edsr_files["images"]
    common = ("eval", "--model", edsr_files["ckpt"], "--hr", images, "--degradation", "bicubic",
              "--quiet", "--no-perceptual", "--device", "cpu")  # fmt: skip
    report = tmp_path / "r.json"
    code, _, err = run_cli(*common, "--report", report, "--csv", report, "--force")
    one_line(code, err, "would write the same place")
    saved = tmp_path / "saved"
    code, _, err = run_cli(*common, "--save", saved, "--compare", saved / "0.png", "--force")
    one_line(code, err, "--save", "--compare")
    assert not report.exists() and not saved.exists()

    tiny = tmp_path / "tiny"
    tiny.mkdir()
    cv2.imwrite(str(tiny / "a.png"), np.zeros((1, 32, 3), np.uint8))  # 32x1: no LR row at x2
    cv2.imwrite(str(tiny / "b.png"), np.zeros((24, 24, 3), np.uint8))
    small = (*common[:3], "--hr", tiny, *common[5:])
    code, out, err = run_cli(*small)
    assert code == 0 and "1 image(s)" in out and "a.png: 32x1 is too small" in err
    one_line(*run_cli(*small, "--strict")[::2], "too small to score at x2")
