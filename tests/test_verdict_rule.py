"""One zero-overhead rule for bench, the export and the demo: graph identity is proven and is the
verdict; latency is measured and labelled so, and never changes the verdict."""

from types import SimpleNamespace

import pytest

from adaptsr.cli.commands.export import export_lines
from adaptsr.cli.demo_pipeline import _proof_lines, _report, report_markdown
from adaptsr.serve.timing import overhead_lines, zero_overhead_verdict


def _latency(verdict, ratio=1.01, lo=0.97, hi=1.05, needed=None):
    return SimpleNamespace(
        ratio=ratio, ci_low=lo, ci_high=hi, rounds=30, tolerance=0.02, verdict=verdict,
        rounds_needed=needed,
    )  # fmt: skip


@pytest.mark.parametrize("latency", ["PASS", "FAIL", "INCONCLUSIVE"])
def test_the_verdict_is_the_proof_whatever_the_timing(latency):
    assert zero_overhead_verdict(True) == "PASS" and zero_overhead_verdict(False) == "FAIL"
    lines = overhead_lines("12 nodes, 3,456 parameters", True, _latency(latency, needed=90))
    assert lines[0] == "graph, proven: 12 nodes, 3,456 parameters: PASS"
    assert lines[1].startswith("latency, measured: ratio 1.0100 (95% CI 0.9700-1.0500, 30 rounds")
    assert lines[1].endswith(f"): {latency}; about 90 rounds would decide")
    assert lines[-1].startswith("zero overhead: PASS (proven by graph identity")
    assert ("timing noise" in " ".join(lines)) == (latency != "PASS")
    failed = overhead_lines("12 nodes", False, _latency("PASS"))
    assert failed[0].endswith(": FAIL") and failed[-1].startswith("zero overhead: FAIL")


def _export_report(latency_verdict):
    structure = SimpleNamespace(identical=True, nodes=[12, 12], params=[3456, 3456])
    return SimpleNamespace(
        onnx="m.onnx",
        architecture="SAFMN",
        metadata={"precision": "fp32"},
        parity=SimpleNamespace(max_abs=1e-6, mean_abs=1e-7, checks=[1, 2]),
        fp16=None,
        zero_overhead=SimpleNamespace(structure=structure, latency=_latency(latency_verdict)),
    )


def test_export_and_demo_say_the_same(tmp_path):
    """An inconclusive timing beside an identical graph: PASS, and the latency is a measurement
    (the demo used to print INCONCLUSIVE and then 'zero overhead: PASS' without saying why; a
    FAIL timing turned its verdict into FAIL)."""
    for latency in ("INCONCLUSIVE", "FAIL"):
        export = _export_report(latency)
        printed = export_lines(export)
        assert any(line.startswith("graph, proven: 12 nodes") for line in printed)
        assert any(line.startswith("latency, measured: merged/base 1.0100") for line in printed)
        assert printed[-1].startswith("zero overhead: PASS (proven by graph identity")
        demo = _proof_lines(export)
        assert demo[0].startswith("zero overhead: PASS, proven: graph identical")
        assert demo[1] == next(line for line in printed if line.startswith("latency, measured"))
        cfg = SimpleNamespace(model="m", device="cpu", budget="r4", score_warmup=100)
        means = {k: {"psnr_y": 30.0, "ssim_y": 0.9} for k in ("bicubic", "base", "adapted")}
        result = SimpleNamespace(rows=[])
        allocation = SimpleNamespace(used=10, base_params=1000)
        calibration = SimpleNamespace(
            blur=SimpleNamespace(sigma=1.4),
            noise=SimpleNamespace(sigma=15.2),
            jpeg=SimpleNamespace(quality=None),
        )
        merge = {"max_abs_diff": 0.0}
        report = _report(cfg, 7, means, result, calibration, allocation, merge, export, 1.0)
        z = report["zero_overhead"]
        assert (z["verdict"], z["proven"], z["latency_verdict"]) == ("PASS", True, latency)
        assert report["iterations"] == 7  # the iterations that ran, not the ones asked for
        text = report_markdown(report)
        assert "Proven: the merged ONNX graph is identical" in text
        assert "Measured, not part of the proof: latency merged/base 1.010" in text
        assert "(merged.report.json)" in text
        assert report["score_warmup"] == 100 and "after\n100 warm-up steps" in text
        assert "| calibrated from its 0 photos (`camera.toml`) | 1.40 | 15.20 | none |" in text
