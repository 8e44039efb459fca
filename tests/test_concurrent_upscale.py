"""Two upscales into one folder: an output another run wrote whole while this one worked stands,
as any existing output does, and is no failure; no half-written file is ever left."""

import subprocess
import sys

import cv2
import numpy as np
from fakes.exports import nearest_x2_onnx
from fakes.images import write_noise_pngs

from adaptsr.serve import upscale
from adaptsr.serve.backends import OnnxBackend


def _check_outputs(src, out):
    names = sorted(p.name for p in src.iterdir())
    assert sorted(p.name for p in out.iterdir()) == names  # no partial file left
    for name in names:
        want = cv2.imread(str(src / name)).repeat(2, 0).repeat(2, 1)
        assert np.array_equal(cv2.imread(str(out / name)), want), name  # whole and right


def test_an_output_written_by_another_run_meanwhile_is_skipped(tmp_path, monkeypatch):
    src = write_noise_pngs(tmp_path / "src", 3, 24, 24, name="{:02d}.png")
    out = tmp_path / "out"
    model = nearest_x2_onnx(tmp_path / "x2.onnx")
    plan = upscale.plan_upscale([src], out, lambda: OnnxBackend(model, provider="cpu"))
    encode, calls = upscale.encode_pixels, []

    def other_run_finishes_first(pixels, suffix):
        """While this run encodes 01.png, the other run renames its whole 01.png into place."""
        calls.append(suffix)
        if len(calls) == 2:
            out.mkdir(exist_ok=True)
            theirs = cv2.imread(str(src / "01.png")).repeat(2, 0).repeat(2, 1)
            cv2.imwrite(str(out / "01.png"), theirs)
        return encode(pixels, suffix)

    monkeypatch.setattr(upscale, "encode_pixels", other_run_finishes_first)
    summary = upscale.run_upscale(plan, progress=False, report=lambda line: None)
    assert summary.failed == []
    assert [p.name for p in summary.written] == ["00.png", "02.png"]
    assert [p.name for p in summary.skipped] == ["01.png"]
    _check_outputs(src, out)


def test_an_output_written_after_the_plan_looked_is_skipped_not_failed(tmp_path, monkeypatch):
    """The other run renames its whole 01.png into place after this run's loop saw no 01.png
    and before this run starts on it: skipped, not 'already exists'."""
    src = write_noise_pngs(tmp_path / "src", 2, 24, 24, name="{:02d}.png")
    out = tmp_path / "out"
    model = nearest_x2_onnx(tmp_path / "x2.onnx")
    plan = upscale.plan_upscale([src], out, lambda: OnnxBackend(model, provider="cpu"))
    write = upscale._write_upscaled

    def other_run_lands_first(backend, source, dst, *args):
        if dst.name == "01.png":
            out.mkdir(exist_ok=True)
            cv2.imwrite(str(dst), cv2.imread(str(source)).repeat(2, 0).repeat(2, 1))
        return write(backend, source, dst, *args)

    monkeypatch.setattr(upscale, "_write_upscaled", other_run_lands_first)
    summary = upscale.run_upscale(plan, progress=False, report=lambda line: None)
    assert summary.failed == []
    assert [p.name for p in summary.written] == ["00.png"]
    assert [p.name for p in summary.skipped] == ["01.png"]
    _check_outputs(src, out)


def test_two_concurrent_upscales_into_one_folder_both_succeed(tmp_path):
    src = write_noise_pngs(tmp_path / "src", 12, 320, 320, name="{:02d}.png")
    out = tmp_path / "out"
    model = nearest_x2_onnx(tmp_path / "x2.onnx")
    command = [sys.executable, "-m", "adaptsr.cli.app", "upscale", str(src), "--out", str(out),
               "--onnx", str(model), "--provider", "cpu"]  # fmt: skip
    runs = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(2)]  # fmt: skip
    results = [(run.wait(timeout=120), *run.communicate()) for run in runs]
    written = 0
    for code, stdout, stderr in results:
        assert code == 0, stderr
        assert "failed" not in stderr, stderr
        written += int(stdout.split("wrote ")[1].split()[0])
    assert 12 <= written <= 24
    _check_outputs(src, out)
