"""The check's Python environment on the GPU machine: the working tree as the `adaptsr` package
and the bundled wheels, unpacked into DIR/site (no torch here: this runs before any model code
is imported)."""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
WHEELS = ROOT / ".whl"
# what the model stages import beyond torch and Triton; the bundle holds wheels for these
BUNDLED = ("spandrel", "einops", "safetensors", "typing_extensions")
OPTIONAL = {"torchvision": "spandrel's model registry", "cv2": "the training-loop stage"}


def prepare_site(out: Path) -> list[str]:
    """DIR/site: the working tree as the adaptsr package, and whatever of BUNDLED is missing,
    installed from .whl/. Returns the problems found (one line each)."""
    site = out / "site"
    view = site / "adaptsr"
    view.mkdir(parents=True, exist_ok=True)
    for entry in (ROOT / "adaptsr").iterdir():
        if entry.name != "__pycache__":
            _link(view / entry.name, entry)
    for name in ("adapt", "kernels", "export", "serve"):
        _link(view / name, ROOT / name)
    sys.path.insert(0, str(site))
    os.environ["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(site), os.environ.get("PYTHONPATH")])
    )
    importlib.invalidate_caches()
    problems = []
    missing = [m for m in BUNDLED if importlib.util.find_spec(m) is None]
    wheels = [w for m in missing for w in _wheels(m)]
    for wheel in wheels:
        # these wheels are pure Python or abi3 with no scripts: unpacking one into a folder
        # on the path is its installation (no pip needed on the GPU machine)
        with zipfile.ZipFile(wheel) as archive:
            archive.extractall(site)
    importlib.invalidate_caches()
    for m in BUNDLED:
        if importlib.util.find_spec(m) is None:
            problems.append(
                f"environment: {m} is missing and .whl/ has no wheel for it (run `make "
                "gpu-check-bundle` where the package index is reachable, carry .whl/)"
            )
    for m, needed_by in OPTIONAL.items():
        if importlib.util.find_spec(m) is None:
            problems.append(f"environment: {m} is missing: {needed_by} cannot run")
    return problems


def _link(path: Path, target: Path) -> None:
    if path.is_symlink() or path.exists():
        if path.is_symlink() and path.resolve() == target.resolve():
            return
        path.unlink()
    path.symlink_to(target)


def _wheels(module: str) -> list[Path]:
    stem = module.replace("-", "_").lower()
    return sorted(p for p in WHEELS.glob("*.whl") if p.name.lower().startswith(stem + "-"))
