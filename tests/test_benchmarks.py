"""The benchmarks outside the package (benchmarks/): the GPU runs them; their layer shapes,
reports and code paths are checked here, the kernels through the Triton interpreter."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

# before the kernels module is first imported (see test_kernels.py)
os.environ.setdefault("TRITON_INTERPRET", "1")
ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.append(str(ROOT))  # benchmarks/ is not installed: it is imported from the tree

from benchmarks import lora_layers, roofline_table  # noqa: E402

needs_interpreter = pytest.mark.skipif(
    os.environ.get("TRITON_INTERPRET") != "1", reason="the Triton interpreter is off"
)


def test_bench_cases_cover_the_four_models():
    cases = lora_layers.layer_cases()
    assert {c.model for c in cases} == {"EDSR", "SAFMN", "SwinIR-light", "SwinIR-M"}
    edsr = next(c for c in cases if c.model == "EDSR")
    assert (edsr.c_in, edsr.c_out, edsr.k) == (64, 64, 3)
    assert edsr.input_shape() == (8, 64, 64, 64)
    assert edsr.flops() == 2 * 8 * 64 * 64 * 64 * 64 * 9
    qkv = next(c for c in cases if c.model == "SwinIR-M" and c.qkv)
    assert qkv.input_shape() == (8, 4096, 180) and qkv.c_out == 540 and qkv.lora_rank(8) == 24
    w, bias, a, b, scale = lora_layers.make_lora(qkv, 2, "cpu", torch.float32)
    assert a.shape == (6, 180) and b.shape == (540, 6) and scale.shape == (6,)
    assert torch.count_nonzero(b[:180, 2:]) == 0  # block diagonal


def test_bench_report_renders_every_row():
    case = lora_layers.layer_cases()[0]
    row = {"case": case, "dtype": "float32", "r": 8, "auto": "two-pass", "one-pass": 1.8,
           "two-pass": 1.2, "eager": 2.4, "floor": 1.0, "full": 1.5}  # fmt: skip
    meta = dict(
        gpu="NVIDIA H100", torch="2.x", triton="3.x", cuda="13.0", date="2026-11-26",
        command="python -m benchmarks.lora_layers", tf32=False, cudnn_tf32=False, runs=50,
    )  # fmt: skip
    text = lora_layers.render_report(meta, [dict(row, check=3e-7)])
    assert "NVIDIA H100" in text and "python -m benchmarks.lora_layers" in text
    line = next(x for x in text.splitlines() if x.startswith("| EDSR"))
    assert "| 1.200 (two-pass) | 1.800 | 2.400 | 1.000 | 1.500 | 1.200 | 2.000 | 1.250 |" in line
    assert line.endswith("| 3.0e-07 |")


def test_bench_without_cuda_exits_with_one_line(capsys, monkeypatch, tmp_path):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert lora_layers.main(["--out", str(tmp_path / "k.md")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no CUDA device" in err
    assert not (tmp_path / "k.md").exists()


@needs_interpreter
def test_bench_layer_runs_every_variant_on_cpu():
    # the timing loop and the fp64 check on a tiny input through the interpreter
    case = lora_layers.LayerCase("tiny", "conv", 16, 18, 3)
    assert lora_layers.auto_design(case, 2, torch.float32, batch=1, patch=5) in lora_layers.VARIANTS
    times = lora_layers.bench_layer(
        case, 2, lora_layers.VARIANTS, "cpu", torch.float32, runs=1, warmup=0, batch=1, patch=5,
        min_bytes=0,
    )  # fmt: skip
    assert set(times) == set(lora_layers.VARIANTS) and all(t > 0 for t in times.values())
    assert lora_layers.check_layer(lora_layers.LayerCase("tiny", "qkv", 16, 48, qkv=True), 2, "cpu",
                             torch.float32) <= 1e-5  # fmt: skip


def test_roofline_table_prints(capsys):
    assert roofline_table.main([]) == 0
    rows = [x for x in capsys.readouterr().out.splitlines() if x.startswith("| SwinIR-M")]
    assert len(rows) == 6
    assert roofline_table.main(["A100"]) == 2
