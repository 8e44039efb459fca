"""`adapt bench`: latency, throughput and memory of one artifact, and a base against a candidate."""

import json

import pytest
import torch
from fakes.cli import only_line
from fakes.exports import export_torch

pytestmark = pytest.mark.usefixtures("one_thread")


def test_bench_reports_latency_throughput_and_memory(run_cli, edsr_artifacts):
    code, out, err = run_cli(
        "bench",
        edsr_artifacts["ckpt"],
        edsr_artifacts["onnx"],
        "--size",
        "32",
        "48",
        "--runs",
        "3",
        "--warmup",
        "1",
        "--device",
        "cpu",
        "--provider",
        "cpu",
        "--json",
    )
    assert code == 0, err
    rows = json.loads(out)
    assert [r["kind"] for r in rows] == ["pytorch", "onnx"]
    for r in rows:
        lat = r["latency"]
        assert lat["runs"] == 3 and 0 < lat["median_ms"] <= lat["p90_ms"]
        assert r["out_mp_per_s"] == pytest.approx(32 * 48 * 4 / 1e6 / (lat["median_ms"] / 1e3))
        assert r["peak_rss_mb"] > 10 and r["peak_gpu_mb"] is None and r["tiles"] == 1
    code, out, err = run_cli(
        "bench",
        edsr_artifacts["onnx"],
        "--size",
        "64",
        "64",
        "--runs",
        "1",
        "--tile",
        "32",
        "--overlap",
        "4",
        "--provider",
        "cpu",
    )
    assert code == 0, err
    assert "median ms" in out and " 9 " in out  # 64 px in 32 px tiles with overlap: 3x3 tiles
    code, out, err = run_cli(
        "bench",
        edsr_artifacts["onnx"],
        "--size",
        "64",
        "64",
        "--runs",
        "6",
        "--tile",
        "32",
        "--vs-untiled",
        "--provider",
        "cpu",
        "--json",
    )
    assert code == 0, err
    eff = json.loads(out)[0]["tiling_efficiency"]
    assert eff["rounds"] == 6 and 0 < eff["ci_low"] <= eff["ratio"] <= eff["ci_high"]
    assert (
        "tiled/untiled throughput"
        in run_cli(
            "bench",
            edsr_artifacts["onnx"],
            "--size",
            "40",
            "40",
            "--runs",
            "6",
            "--tile",
            "32",
            "--vs-untiled",
            "--provider",
            "cpu",
        )[1]
    )


def test_bench_base_candidate_comparison(run_cli, edsr_artifacts, tmp_path):
    args = ("--size", "32", "32", "--rounds", "8", "--max-rounds", "8", "--warmup", "1")
    args += ("--provider", "cpu")
    code, out, err = run_cli(
        "bench",
        "--base",
        edsr_artifacts["onnx"],
        "--candidate",
        edsr_artifacts["bare"],
        *args,
        "--json",
    )
    d = json.loads(out)
    assert d["kind"] == "onnx" and d["rounds"] == 8 and d["tolerance"] == 0.02
    assert d["structure"]["identical"]  # the same graph; only the metadata differs
    assert d["ci_low"] <= d["ratio"] <= d["ci_high"]
    inside = d["ci_low"] >= 0.98 and d["ci_high"] <= 1.02
    outside = d["ci_high"] < 0.98 or d["ci_low"] > 1.02
    assert d["verdict"] == ("PASS" if inside else "FAIL" if outside else "INCONCLUSIVE")
    assert code == (0 if d["verdict"] == "PASS" else 1), err
    # a graph that differs (one residual block instead of two) fails whatever the timing says
    from adaptsr.adapt.edsr import EDSR
    from adaptsr.adapt.models import model_from_state_dict

    torch.manual_seed(0)
    one_block = EDSR(scale=2, n_resblocks=1, n_feats=16, res_scale=1.0)
    other = export_torch(model_from_state_dict(one_block.state_dict()), tmp_path / "other.onnx")
    code, out, _ = run_cli("bench", "--base", edsr_artifacts["bare"], "--candidate", other, *args)
    assert code == 1
    graph = next(line for line in out.splitlines() if line.startswith("graph, proven:"))
    assert graph.endswith(": FAIL") and "#" in graph, out
    assert any(line.startswith("latency, measured: ratio") for line in out.splitlines())


def test_bench_bad_input_is_one_clear_line(run_cli, edsr_artifacts):
    code, _, err = run_cli(
        "bench", "--base", edsr_artifacts["ckpt"], "--candidate", edsr_artifacts["onnx"]
    )
    only_line(code, err, "same backend")
    code, _, err = run_cli("bench", "--base", edsr_artifacts["onnx"])
    only_line(code, err, "--base and --candidate go together")
    code, _, err = run_cli("bench")
    only_line(code, err, "nothing to benchmark")
    code, _, err = run_cli("bench", edsr_artifacts["onnx"], "--size", "4", "4", "--provider", "cpu")
    only_line(code, err, "not accepted")
    code, _, err = run_cli("bench", "missing.onnx")
    only_line(code, err, "no such ONNX file")
    code, _, err = run_cli("bench", "--base", edsr_artifacts["onnx"],
                           "--candidate", edsr_artifacts["bare"],
                           "--rounds", "4", "--provider", "cpu")  # fmt: skip
    only_line(code, err, "at least 6 rounds")
