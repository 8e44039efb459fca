"""Both a regular and an editable install import the four components under adaptsr.*."""

import os
import subprocess
import sys
from pathlib import Path

from adaptsr.cli.app import COMMANDS

ROOT = Path(__file__).resolve().parents[1]
COMPONENTS = ["adaptsr.adapt", "adaptsr.kernels", "adaptsr.export", "adaptsr.serve"]


def test_editable_install_maps_components():
    import importlib

    for name in COMPONENTS:
        mod = importlib.import_module(name)
        folder = name.split(".")[1]
        assert Path(mod.__file__).resolve().parent == ROOT / folder


def test_every_module_resolves_through_the_source_tree():
    """Editors and static checkers resolve `adaptsr.x.y` by looking for adaptsr/x/y.py: each layer
    folder is linked into adaptsr/, so every module is found there, as the same file."""
    for folder in ("core", "kernels", "serve", "adapt", "export", "cli"):
        for path in (ROOT / folder).rglob("*.py"):
            linked = ROOT / "adaptsr" / path.relative_to(ROOT)
            assert linked.is_file() and linked.resolve() == path.resolve(), linked
    kept = (ROOT / "adaptsr").iterdir()
    assert sorted(p.name for p in kept if not p.is_symlink() and p.name != "__pycache__") == [
        "__init__.py"
    ], "adaptsr/ holds only the public API and the links to the layer folders"


def test_regular_install_has_no_top_level_collisions(tmp_path):
    target = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(target),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
    )
    top = sorted(p.name for p in target.iterdir() if not p.name.endswith(".dist-info"))
    assert "kernels" not in top and "export" not in top and "serve" not in top, top
    assert "adaptsr" in top
    code = (
        "import adaptsr.adapt, adaptsr.kernels, adaptsr.export, adaptsr.serve, adaptsr.cli.app; "
        "print(adaptsr.adapt.__file__)"
    )
    env = {**os.environ, "PYTHONPATH": str(target)}
    r = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path
    )
    assert r.returncode == 0, r.stderr
    assert str(target) in r.stdout
    # the pretrained built-ins' weights ship inside the package
    from adaptsr.adapt.models import PRETRAINED

    for pre in PRETRAINED.values():
        shipped = target / "adaptsr" / "adapt" / "weights" / pre.file
        assert shipped.is_file() and shipped.stat().st_size > 100_000


def test_import_adaptsr_does_not_import_torch():
    code = "import sys, adaptsr, adaptsr.cli.app, adaptsr.serve; print('torch' in sys.modules)"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert r.stdout.strip() == "False"


def test_help_lists_every_command_without_torch():
    """`adapt --help` imports every command module: none may need torch to be listed."""
    code = (
        "import sys\n"
        "from adaptsr.cli.app import COMMANDS, main\n"
        "try:\n"
        "    main(['--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "print('torch' in sys.modules, len(COMMANDS))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert r.stdout.strip().splitlines()[-1] == f"False {len(COMMANDS)}"


def test_every_public_name_resolves_where_the_api_map_says():
    """The lazy public API (adaptsr/__init__.py) keeps working when modules move: each name
    resolves, and is the object its module defines."""
    import importlib

    import adaptsr

    for name, module in adaptsr._API.items():
        assert getattr(adaptsr, name) is getattr(importlib.import_module(module), name), name
    assert set(adaptsr.__all__) == {"__version__", *adaptsr._API}
