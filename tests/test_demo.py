import json

import pytest

from adaptsr.cli.demo_pipeline import DemoSettings, run_demo
from adaptsr.core.images import read_image


@pytest.mark.slow
def test_short_demo_adapts_the_bundled_backbone_and_gains(tmp_path, run_cli):
    """A shortened demo: every stage runs, the report has its keys, the adapted model beats
    the base on the held-out photos, and a second run does not clobber the first."""
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
    assert "held-out" in lines[-2]

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
