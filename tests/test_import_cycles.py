"""No import circle among the project's modules (issue 28: kernels/bench.py and roofline.py
made one with triton_lora.py, core/fileio.py and images.py another). Imports are read from the
source at any depth, function-level ones included, as tests/test_layers.py reads them."""

from __future__ import annotations

from test_layers import imports, module_files


def import_graph() -> dict[str, set[str]]:
    """module -> the project modules it imports."""
    files = module_files()
    known = set(files)
    graph = {}
    for module, path in files.items():
        found = {target for _, target in imports(path, module, known) if target in known}
        graph[module] = found - {module}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str]:
    """One import circle as [a, b, ..., a], or [] when the graph has none (depth-first search,
    a module on the current path reached again closes a circle)."""
    done: set[str] = set()
    path: list[str] = []
    on_path: set[str] = set()

    def visit(node: str) -> list[str]:
        path.append(node)
        on_path.add(node)
        for target in sorted(graph.get(node, ())):
            if target in on_path:
                return path[path.index(target) :] + [target]
            if target not in done:
                cycle = visit(target)
                if cycle:
                    return cycle
        path.pop()
        on_path.discard(node)
        done.add(node)
        return []

    for start in sorted(graph):
        if start not in done:
            cycle = visit(start)
            if cycle:
                return cycle
    return []


def test_the_project_has_no_import_circle():
    assert find_cycle(import_graph()) == []


def test_the_kernels_graph_is_read_whole():
    # the check sees the edges that matter: dispatch reaches the custom ops, which reach the
    # Triton kernels (function-level), which read the cost model
    graph = import_graph()
    assert "adaptsr.kernels.fused" in graph["adaptsr.kernels.dispatch"]
    assert "adaptsr.kernels.triton_lora" in graph["adaptsr.kernels.fused"]
    assert "adaptsr.kernels.roofline" in graph["adaptsr.kernels.triton_lora"]


def test_find_cycle_reports_a_circle_and_accepts_a_tree():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set(), "d": {"b", "c"}}) == []
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"x": {"y"}, "y": {"y2"}, "y2": {"y"}}) == ["y", "y2", "y"]
