import json

from adaptsr.images import read_image


def test_demo_runs_the_whole_pipeline(tmp_path, run_cli):
    out = tmp_path / "demo"
    code, stdout, err = run_cli("demo", "--out", out, "--iters", 2)
    assert code == 0, err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["train"]["iterations"] == 2
    assert summary["merge"]["max_abs_diff"] < 1e-5
    assert summary["export"]["structure_identical"] is True
    assert summary["export"]["parity_max_abs"] < 1e-4
    assert summary["upscaled"] == 4
    up = read_image(out / "upscaled" / "synthetic_000.png")
    assert up.size == (512, 512)  # 128 x 4
    assert (out / "merged.onnx").exists() and (out / "run" / "adapter.safetensors").exists()
    # a second run does not clobber the first one's outputs
    code, _, err = run_cli("demo", "--out", out, "--iters", 2)
    assert code != 0 and "not empty" in err
