"""core/lazy.py: a missing optional dependency is one line."""

import subprocess
import sys


def test_a_missing_optional_dependency_is_one_line_naming_what_to_install():
    """A deployment install without torch gets a UserError naming torch, not a traceback."""
    script = (
        "import importlib.abc, sys\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] == 'torch':\n"
        "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "from adaptsr.core.errors import UserError\n"
        "from adaptsr.core.lazy import lazy_import\n"
        "torch = lazy_import('torch')\n"
        "try:\n"
        "    torch.zeros\n"
        "except UserError as e:\n"
        "    print(e)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.stdout.strip() == (
        "this needs torch (the training install: pip install adaptsr), which is not installed"
    ), done.stderr[-2000:]
