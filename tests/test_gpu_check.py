"""benchmarks/gpu_check/ (`make gpu-check`): its whole run, tiny on the CPU, so that a mistake
in it cannot cost GPU time; and its target checks on made-up measurements."""

from __future__ import annotations

import importlib
import json
import math
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.append(str(ROOT))  # benchmarks/ is not installed: it is imported from the tree
os.environ.setdefault("TRITON_INTERPRET", "1")  # before the kernels first load (test_kernels)

from fakes.models import save_tiny_safmn  # noqa: E402

from benchmarks.gpu_check import (  # noqa: E402
    environment,
    kernel_checks,
    layer_timing,
    projections,
    training_timing,
)
from benchmarks.lora_layers import LayerCase  # noqa: E402


@pytest.fixture(scope="module")
def tiny_safmn(tmp_path_factory):
    return save_tiny_safmn(tmp_path_factory.mktemp("gpu-check") / "tiny.safetensors")


@pytest.mark.slow
def test_quick_cpu_run_goes_through_every_stage(tiny_safmn, tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("TRITON_INTERPRET", None)  # the script sets it for --device cpu
    cmd = [sys.executable, "-m", "benchmarks.gpu_check", "--device", "cpu", "--quick"]
    cmd += ["--out", str(out), "--models", f"safmn-x4={tiny_safmn}", "--budget", "1200"]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1200, cwd=ROOT)
    assert done.returncode in (0, 1), done.stderr[-3000:]
    assert done.stdout.startswith("FAILURES (")  # failures first
    results = json.loads((out / "results.json").read_text())
    assert {"kernels", "layers", "e2e", "loop"} <= set(results["seconds"])
    # fused kernels in the interpreter against fp64, both designs
    acc = results["accuracy"]
    assert acc and all(r["one-pass"] <= 1e-5 and r["two-pass"] <= 1e-5 for r in acc), acc
    assert [r["status"] for r in results["opcheck"]] == ["ok"]
    layer = results["layers"][0]
    assert all(layer[v] > 0 for v in ("one-pass", "two-pass", "eager", "floor", "full", "lowrank"))
    e2e = {r["variant"]: r for r in results["e2e"]}
    assert e2e.pop("LoRA fused + CUDA graphs")["skipped"] == "needs a CUDA device"
    assert len(e2e) == 5 and all(r["it_s"] > 0 and r["model"] == "safmn-x4" for r in e2e.values())
    assert e2e["LoRA fused + compile"]["compiled"] == "default"
    lora = {e2e[v]["trainable"] for v in ("LoRA fused", "LoRA eager", "LoRA fused + compile")}
    full = {e2e[v]["trainable"] for v in ("full eager", "full + compile")}
    assert len(lora) == len(full) == 1 and lora != full
    assert set(results["degradation"]) == {"realesrgan", "bicubic"}
    assert {(p["model"], p["mode"]) for p in results["budgets"]} == {
        ("safmn-x4", "lora"),
        ("safmn-x4", "full"),
    }
    assert "error" not in results["loop"] and results["loop"]["last"]["iter"] == 4
    report = (out / "report.md").read_text()
    failures = results["failures"]
    assert f"## Failures ({len(failures)})" in report and "## End to end" in report
    assert not any(f.startswith(("kernels", "opcheck", "environment", "loop")) for f in failures)


def test_target_checks_report_each_miss_with_its_ratio():
    case = LayerCase("EDSR", "conv", 64, 64, 3)
    row = {"case": case, "dtype": "bfloat16", "r": 8, "auto": "two-pass", "one-pass": 2.0,
           "two-pass": 1.0, "eager": 1.2, "floor": 0.5, "lowrank": 0.25, "full": 1.0}  # fmt: skip
    misses = layer_timing.layer_misses([row])
    # eager/fused = 1.2 < 1.3; fused 1.0 > 1.2 x 0.75 = 0.9; the picked design is the faster
    assert len(misses) == 2
    assert "ratio 0.92" in misses[0] and "ratio 1.11" in misses[1]
    good = dict(row, eager=2.0, floor=0.8)
    assert layer_timing.layer_misses([good]) == []
    picked = layer_timing.layer_misses([dict(good, auto="one-pass")])
    assert "picks one-pass, 2.00x slower" in picked[0]

    def e2e(variant, mode, it_s, mem):
        return {"model": "safmn-x4", "variant": variant, "mode": mode, "it_s": it_s,
                "gpu_peak_mb": mem}  # fmt: skip

    rows = [e2e("LoRA fused + compile", "lora", 90.0, 900), e2e("full + compile", "full", 100, 800)]
    misses = training_timing.e2e_misses(rows, {"realesrgan": 1000.0}, 8)
    assert any("ratio 0.90" in m and "it/s" in m for m in misses)
    assert any("ratio 1.12" in m and "peak memory" in m for m in misses)
    # 90 it/s x 8 crops = 720 crops/s; 1000 < 2 x 720
    assert any("ratio 0.69" in m and "Real-ESRGAN" in m for m in misses)

    plans = projections.budgets(rows, {"realesrgan": 1000.0}, 8)
    lora = next(p for p in plans if p["mode"] == "lora")
    assert lora["model_h"] == pytest.approx(100_000 / 90 / 3600)
    assert lora["with_degradation_h"] == pytest.approx(100_000 * (1 / 90 + 8 / 1000) / 3600)
    minutes = lora["with_degradation_h"] * 60  # 31.9 minutes
    assert projections.budget_misses(plans) == [
        f"budgets: SAFMN 100k LoRA iterations take {minutes:.1f} min with the degradation "
        f"({lora['model_h'] * 60:.1f} min without) > 15 min (ratio {minutes / 15:.2f})"
    ]
    full = next(p for p in plans if p["mode"] == "full")
    assert full["iters"] == 500_000 and full["paper_h"] == 9


def test_kernel_accuracy_misses_compare_with_the_eager_error():
    # a design fails above both its dtype's bound (bf16: 3e-2) and twice the eager error
    row = {"dtype": "bfloat16", "case": "c", "one-pass": 0.05, "two-pass": 0.01, "eager": 0.02}
    assert kernel_checks.accuracy_misses([row]) == [
        "kernels: c bfloat16 one-pass: rel error 5.0e-02 > 4.0e-02 (ratio 1.25)"
    ]
    assert kernel_checks.accuracy_misses([dict(row, eager=0.03)]) == []
    nan = kernel_checks.accuracy_misses([dict(row, **{"two-pass": math.nan})])
    assert len(nan) == 2 and "two-pass: rel error nan" in nan[1]


def test_prepare_site_unpacks_missing_wheels_and_views_the_tree(tmp_path, monkeypatch):
    # the GPU machine lacks spandrel: a missing module comes from its wheel in .whl/, and the
    # tree is importable as adaptsr (kernels/ as adaptsr.kernels) without an install
    wheels = tmp_path / "whl"
    wheels.mkdir()
    with zipfile.ZipFile(wheels / "gpu_check_probe-1.0-py3-none-any.whl", "w") as archive:
        archive.writestr("gpu_check_probe/__init__.py", "VALUE = 42\n")
    monkeypatch.setattr(environment, "WHEELS", wheels)
    monkeypatch.setattr(environment, "BUNDLED", ("gpu_check_probe", "gpu_check_absent"))
    monkeypatch.setattr(environment, "OPTIONAL", {})
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setenv("PYTHONPATH", "")
    problems = environment.prepare_site(tmp_path / "out")
    assert len(problems) == 1 and "gpu_check_absent is missing" in problems[0]
    assert importlib.import_module("gpu_check_probe").VALUE == 42
    site = tmp_path / "out" / "site"
    assert os.environ["PYTHONPATH"] == str(site)
    assert (site / "adaptsr" / "kernels" / "fused.py").resolve() == ROOT / "kernels" / "fused.py"
    code = "import adaptsr.kernels.fused as f, adaptsr.adapt.lora as lora; print(f.__file__)"
    env = {**os.environ, "PYTHONPATH": str(site)}
    cmd = [sys.executable, "-c", code]  # not from the tree's root, as on the GPU machine
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path)
    assert done.stdout.strip() == str(site / "adaptsr" / "kernels" / "fused.py"), done.stderr
