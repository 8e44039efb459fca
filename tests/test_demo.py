import json

import pytest

from adaptsr.cli.demo_pipeline import DemoSettings, run_demo
from adaptsr.core.fileio import tomllib  # tomli on Python 3.10
from adaptsr.core.images import read_image


@pytest.mark.slow
def test_short_demo_adapts_the_bundled_backbone_and_gains(tmp_path, run_cli):
    """A shortened demo: every stage runs, the report has its keys, the calibration read the
    camera from its photos and the training used that file, the adapted model beats the base on
    the camera's photos, and a second run does not clobber the first."""
    out = tmp_path / "demo"
    settings = DemoSettings(
        model="adaptsr-safmn-x4",
        iters=40,
        score_batches=2,
        latency_rounds=6,
        device="cpu",
        score_warmup=2,  # (the demo: 100) enough to check it runs and is recorded
    )
    lines = []
    report = run_demo(out, settings=settings, say=lines.append, progress=False)
    saved = json.loads((out / "report.json").read_text())
    assert saved == json.loads(json.dumps(report))
    for key in ("psnr_y", "ssim_y"):
        assert key in saved["base"] and key in saved["adapted"] and key in saved["bicubic"]
    assert saved["adapter_params"] > 0 and saved["images"] == 5
    assert saved["score_warmup"] == 2
    assert "after\n2 warm-up steps" in (out / "report.md").read_text()
    assert saved["adapted"]["psnr_y"] > saved["base"]["psnr_y"]
    assert saved["gain_db"] == pytest.approx(saved["adapted"]["psnr_y"] - saved["base"]["psnr_y"])
    assert saved["zero_overhead"]["structure_identical"] is True
    assert saved["merge_max_abs_diff"] < 1e-4 and saved["onnx_parity_max_abs"] < 1e-4
    for name in ("report.md", "compare.png", "rank_map.png", "rank_map.json", "merged.onnx"):
        assert (out / name).stat().st_size > 0
    compare = read_image(out / "compare.png")
    assert compare.size[0] > 5 * 96  # a row of crops per held-out photo
    assert "On the camera's 5 photos" in lines[-2]

    # The camera (blur 1, noise 15, JPEG 75) as calibrated from its photos, and used
    calibrated = tomllib.loads((out / "camera.toml").read_text())
    cam, read = saved["camera"], saved["calibrated"]
    assert read["jpeg_quality"] == cam["jpeg_quality"] == calibrated["jpeg_quality"]
    assert read["noise_sigma"] == pytest.approx(cam["noise_sigma"], rel=0.1)
    assert read["blur_sigma"] == pytest.approx(calibrated["blur_sigma"], abs=1e-4)
    assert 0.75 <= read["blur_sigma"] <= 1.75  # measured 1.44: their own soft edges
    trained = json.loads((out / "run" / "config.json").read_text())["degradation"]
    assert trained["type"] == "camera"
    for key in ("blur_sigma", "noise_sigma", "jpeg_quality"):
        assert trained[key] == pytest.approx(calibrated[key], abs=1e-4)
    assert sorted(p.name for p in (out / "data" / "camera").iterdir()) == sorted(
        p.name for p in (out / "data" / "eval").iterdir()
    )

    code, _, err = run_cli("demo", "--out", out, "--iters", 1)
    assert code != 0 and "not empty" in err


def test_demo_checks_its_arguments_before_writing(tmp_path, run_cli):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "thesis.txt").write_text("keep me")
    code, _, err = run_cli("demo", "--out", foreign, "--force")
    assert code != 0 and "did not write" in err
    assert sorted(p.name for p in foreign.iterdir()) == ["thesis.txt"]

    fresh = tmp_path / "fresh"
    code, _, err = run_cli("demo", "--out", fresh, "--model", "no-such-model")
    assert code != 0 and "no-such-model" in err
    assert not fresh.exists()
