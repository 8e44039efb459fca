"""The serve package as deployed: it imports without torch (its modules' own behaviour is in
test_backends.py, test_upscale.py, test_bench_run.py, test_timing.py, ...)."""

import subprocess
import sys

SERVE_MODULES = ["backends", "backend_bench", "bench_run", "engine_timing", "timing", "upscale"]


def test_serve_imports_without_torch():
    """The deployment side (numpy, OpenCV, ONNX Runtime or TensorRT) must not need torch."""
    mods = [f"adaptsr.serve.{m}" for m in SERVE_MODULES]
    mods += ["adaptsr.core.images", "adaptsr.core.tiling", "adaptsr.core.artifacts"]
    mods += ["adaptsr.cli.commands.upscale", "adaptsr.cli.commands.bench"]
    code = (
        "import sys\n"
        + "".join(f"import {m}\n" for m in mods)
        + "heavy = ('torch', 'onnxruntime', 'tensorrt', 'spandrel')\n"
        + "heavy = [m for m in heavy if m in sys.modules]\n"
        + "assert not heavy, heavy\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
