"""House rules a newcomer can rely on (docs/design.md): short files and functions, thin commands
that never open a model themselves."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCE_FOLDERS = ("adaptsr", "core", "kernels", "serve", "adapt", "export", "cli", "benchmarks")
MAX_FILE_LINES = 500
MAX_FUNCTION_LINES = 80
MAX_COMMAND_LINES = 1200
# what opening a model looks like; a command calls the one library function that does it
OPENERS = {
    "load_model",
    "build_model",
    "inject_lora",
    "merge_lora",
    "load_adapter",
    "TorchBackend",
    "OnnxBackend",
    "TensorRTBackend",
}


def sources(root: Path) -> list[Path]:
    """Every Python source file of the package and its tools (links into adaptsr/ skipped)."""
    found = []
    for folder in SOURCE_FOLDERS:
        for path in sorted((root / folder).rglob("*.py")):
            if not any(part.is_symlink() for part in [path, *path.parents] if part != root):
                found.append(path)
    return found


def long_files(root: Path) -> list[str]:
    out = []
    for path in sources(root):
        n = len(path.read_text().splitlines())
        if n > MAX_FILE_LINES:
            out.append(f"{path.relative_to(root)}: {n} lines")
    return out


def long_functions(root: Path) -> list[str]:
    out = []
    for path in sources(root):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    out.append(f"{path.relative_to(root)}:{node.lineno} {node.name}: {n} lines")
    return out


def commands_opening_models(root: Path) -> list[str]:
    out = []
    for path in sorted((root / "cli" / "commands").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Call):
                name = getattr(node.func, "id", getattr(node.func, "attr", None))
                if name in OPENERS:
                    out.append(f"{path.relative_to(root)}:{node.lineno} calls {name}")
    return out


def test_no_source_file_over_500_lines():
    assert long_files(ROOT) == []


def test_no_function_over_80_lines():
    assert long_functions(ROOT) == []


def test_commands_are_thin_and_never_open_a_model():
    total = sum(len(p.read_text().splitlines()) for p in (ROOT / "cli" / "commands").glob("*.py"))
    assert total < MAX_COMMAND_LINES, total
    assert commands_opening_models(ROOT) == []


def test_the_house_checks_can_fail(tmp_path):
    """Each check reports a file that breaks its rule, with the place."""
    commands = tmp_path / "cli" / "commands"
    commands.mkdir(parents=True)
    body = "\n".join(f"    x{i} = {i}" for i in range(85))
    (tmp_path / "core").mkdir()
    (tmp_path / "core" / "long.py").write_text(f"def f():\n{body}\n" + "\n" * 500)
    (commands / "train.py").write_text("def run(spec):\n    return load_model(spec)\n")
    assert long_files(tmp_path) == ["core/long.py: 586 lines"]
    assert long_functions(tmp_path) == ["core/long.py:1 f: 86 lines"]
    assert commands_opening_models(tmp_path) == ["cli/commands/train.py:2 calls load_model"]
