"""The package layers (docs/design.md): every import points down, and the deployment side runs
without torch.

Layers, lowest first, one top-level folder each: core < kernels < serve < adapt < export < the
face (`cli/`: the command line, its commands, the demo; and `adaptsr/`, the lazy public API).
"""

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from fakes.exports import nearest_x2_onnx

ROOT = Path(__file__).resolve().parents[1]
# Each layer is one top-level folder, lowest first; it imports as adaptsr.<folder> (pyproject's
# package-dir). `adaptsr/` itself holds only the public API, which reaches every layer lazily.
FOLDERS = ("core", "kernels", "serve", "adapt", "export", "cli")
CORE, KERNELS, SERVE, ADAPT, EXPORT, FACE = range(6)
LAYER_NAMES = ("core", "kernels", "serve", "adapt", "export", "face")
# modules that must never import torch, spandrel or triton (TensorRT machines have none)
TORCH_FREE_EXPORT = (
    "ab_check",
    "fp16",
    "fp16_proof",
    "parity",
    "plan",
    "structure",
    "tensorrt",
    "trt_inspect",
    "trt_plan",
    "trt_verify",
)
HEAVY = ("torch", "torchvision", "spandrel", "triton")
# core reads and writes images and plans tiles: no model runtimes, no plotting
NOT_IN_CORE = (*HEAVY, "onnx", "onnxruntime", "tensorrt", "polygraphy", "safetensors", "matplotlib")


def module_files() -> dict[str, Path]:
    """Every project module: dotted name -> file."""
    out = {}
    for folder in ("adaptsr", *FOLDERS):
        package = "adaptsr" if folder == "adaptsr" else f"adaptsr.{folder}"
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = list(path.relative_to(ROOT / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join([package, *parts])] = path
    return out


def layer_of(module: str) -> int:
    """The layer is the module's folder: the segment after `adaptsr.`; `adaptsr` alone (the
    public API) is the face."""
    folder = module.split(".")[1] if module.count(".") else "cli"
    return FOLDERS.index(folder) if folder in FOLDERS else FACE


def imports(path: Path, module: str, known: set[str]):
    """(line, imported module) for every import in a file, at any depth, including
    `import_module("...")` and `lazy_import("...")` calls; `from pkg import name` counts as
    pkg.name when that is a module."""
    tree = ast.parse(path.read_text(), str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative import
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                full = f"{base}.{alias.name}"
                yield node.lineno, full if full in known else base
        elif (
            isinstance(node, ast.Call)
            and getattr(node.func, "id", getattr(node.func, "attr", None))
            in ("import_module", "lazy_import")
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            yield node.lineno, node.args[0].value


def layer_violations() -> list[str]:
    files = module_files()
    known = set(files)
    bad = []
    for module, path in files.items():
        here = layer_of(module)
        for line, target in imports(path, module, known):
            where = f"{path.relative_to(ROOT)}:{line}"
            top = target.split(".")[0]
            if (here == CORE and top in NOT_IN_CORE) or (
                top in HEAVY
                and (here == SERVE or module.removeprefix("adaptsr.export.") in TORCH_FREE_EXPORT)
            ):
                bad.append(f"{where}: {module} ({LAYER_NAMES[here]}) imports {target}")
            if not target.startswith("adaptsr"):
                continue
            there = layer_of(target)
            if there > here:
                bad.append(
                    f"{where}: {module} ({LAYER_NAMES[here]}) imports {target} "
                    f"({LAYER_NAMES[there]}, a higher layer)"
                )
    return bad


def test_every_import_points_down():
    assert layer_violations() == []


def test_the_layer_check_catches_upward_and_function_level_imports(tmp_path, monkeypatch):
    """The check itself can fail: a serve module reaching into adapt inside a function, and a
    core module importing torch, are both reported with file and line."""
    fake = tmp_path / "repo"
    for folder in ("adaptsr", *FOLDERS):
        (fake / folder).mkdir(parents=True)
        (fake / folder / "__init__.py").write_text("")
    (fake / "serve" / "sneaky.py").write_text(
        "import numpy\n\n\ndef f():\n    from adaptsr.adapt.models import load_model\n"
    )
    (fake / "core" / "core_thing.py").write_text("import torch\n\n\ndef f():\n    import onnx\n")
    (fake / "core" / "errors.py").write_text("")
    (fake / "kernels" / "fine.py").write_text("from adaptsr.core import errors\n")
    (fake / "adapt" / "also_fine.py").write_text("from adaptsr.serve import backends\n")
    (fake / "export" / "lazy.py").write_text(
        "from importlib import import_module\nimport_module('adaptsr.cli.commands.train')\n"
    )
    (fake / "serve" / "later.py").write_text("torch = lazy_import('torch')\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", fake)
    found = layer_violations()
    assert found == [
        "core/core_thing.py:1: adaptsr.core.core_thing (core) imports torch",
        "core/core_thing.py:5: adaptsr.core.core_thing (core) imports onnx",
        "serve/later.py:1: adaptsr.serve.later (serve) imports torch",
        "serve/sneaky.py:5: adaptsr.serve.sneaky (serve) imports adaptsr.adapt.models "
        "(adapt, a higher layer)",
        "export/lazy.py:2: adaptsr.export.lazy (export) imports adaptsr.cli.commands.train "
        "(face, a higher layer)",
    ]


BLOCKED_RUN = textwrap.dedent(
    """
    import importlib, importlib.abc, pkgutil, sys
    import numpy as np

    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in {heavy!r}:
                raise ImportError(f"blocked: {{name}}")
            return None

    sys.meta_path.insert(0, Block())
    import adaptsr
    for folder in ("adaptsr.core", "adaptsr.serve"):
        for info in pkgutil.iter_modules(importlib.import_module(folder).__path__):
            if not info.ispkg:
                importlib.import_module(f"{{folder}}.{{info.name}}")
    for name in {export!r}:
        importlib.import_module(f"adaptsr.export.{{name}}")
    import adaptsr.cli.app, adaptsr.cli.commands
    # `adapt --help` loads every command
    for info in pkgutil.iter_modules(adaptsr.cli.commands.__path__):
        importlib.import_module(f"adaptsr.cli.commands.{{info.name}}")

    from adaptsr.core.images import Image, read_image, write_image
    rng = np.random.default_rng(0)
    write_image(Image(rng.random((20, 28, 3), dtype=np.float32), None, 8, False), {src!r})
    adaptsr.cli.app.main(["upscale", {src!r}, "--onnx", {onnx!r}, "--out", {out!r}])
    got = read_image({out!r} + "/in.png").rgb
    want = read_image({src!r}).rgb.repeat(2, 0).repeat(2, 1)
    assert got.shape == (40, 56, 3), got.shape
    assert np.abs(got - want).max() < 1e-6, np.abs(got - want).max()
    assert not [m for m in sys.modules if m.split(".")[0] in {heavy!r}]
    print("ok")
    """
)


def test_deployment_side_runs_with_torch_spandrel_and_triton_blocked(tmp_path):
    pytest.importorskip("onnxruntime")
    onnx_path = tmp_path / "nearest.onnx"
    nearest_x2_onnx(onnx_path)
    script = BLOCKED_RUN.format(
        heavy=HEAVY,
        export=TORCH_FREE_EXPORT,
        src=str(tmp_path / "in.png"),
        onnx=str(onnx_path),
        out=str(tmp_path / "out"),
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().endswith("ok")


def folder_edges() -> set[tuple[str, str]]:
    """Which layer folder imports which: (importer, imported), `adaptsr` being the public API."""

    def folder(module: str) -> str:
        name = module.split(".")[1] if module.count(".") else "adaptsr"
        return name if name in FOLDERS else "adaptsr"

    files = module_files()
    edges = set()
    for module, path in files.items():
        for _, target in imports(path, module, set(files)):
            if target.split(".")[0] == "adaptsr" and folder(module) != folder(target):
                edges.add((folder(module), folder(target)))
    return edges


def test_the_module_graph_in_the_design_notes_is_the_real_one():
    """docs/design.md draws the folder graph (a mermaid block); it must be the one the imports
    make, so the picture a newcomer reads first cannot drift from the code."""
    text = (ROOT / "docs" / "design.md").read_text()
    block = text.split("```mermaid", 1)[1].split("```", 1)[0]
    lines = block.replace(" ", "").splitlines()
    drawn = {tuple(line.split("-->")) for line in lines if "-->" in line}
    assert drawn == folder_edges()
