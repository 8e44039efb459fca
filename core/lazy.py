"""Lazy imports, declared once at a module's top: `onnx = lazy_import("onnx")`.

The module is imported on first attribute access, so a reader sees every dependency in a
module's first lines while `import adaptsr`, `adapt --help` and the torch-free deployment side
stay light. A dependency that is not installed is one line naming what to install, raised when
it is first used (tests/test_layers.py reads these calls as imports).
"""

from __future__ import annotations

import importlib
import sys
from types import ModuleType
from typing import Any

from adaptsr.core.errors import UserError

# top-level package -> what provides it, for the one-line error
_PROVIDERS = {
    "torch": "torch (the training install: pip install adaptsr)",
    "torchvision": "torchvision (the training install: pip install adaptsr)",
    "spandrel": "spandrel (the training install: pip install adaptsr)",
    "triton": "triton (comes with a CUDA build of torch)",
    "tensorrt": "TensorRT (JetPack, or pip install tensorrt)",
    "cuda": "cuda-python matching TensorRT's CUDA (pip install cuda-python)",
    "onnxruntime": "onnxruntime (or onnxruntime-gpu)",
}


class LazyModule:
    """Stands for a module until an attribute is read; then it reads the module's attribute.

    Nothing is cached here: `sys.modules` is the one record of what was imported, so a module
    replaced there (a test's stand-in for TensorRT) is what the next access sees."""

    def __init__(self, name: str):
        self._name = name

    def _load(self) -> ModuleType:
        module = sys.modules.get(self._name)
        if module is not None:
            return module
        try:
            return importlib.import_module(self._name)
        except ModuleNotFoundError as e:
            top = (e.name or "").split(".")[0]
            if top not in _PROVIDERS:
                raise  # not an optional dependency: a packaging bug, not the user's
            raise UserError(f"this needs {_PROVIDERS[top]}, which is not installed") from e

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._load(), attr)

    def __repr__(self) -> str:
        state = "imported" if self._name in sys.modules else "not imported yet"
        return f"<lazy module {self._name!r} ({state})>"


def lazy_import(name: str) -> Any:
    """A stand-in for `import name` that imports on first use (typed Any: modules that need
    their dependency's types import it under `if TYPE_CHECKING:` as well)."""
    return LazyModule(name)
