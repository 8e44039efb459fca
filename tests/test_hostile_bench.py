"""`adapt bench` where the POSIX-only `resource` module is missing (Windows): the bench module
imports, times a backend and reports its peak memory as unavailable ("-" in the table, null in
JSON) instead of crashing at import."""

import importlib.util
import json
import sys

import pytest
from test_bench_run import Nearest

from adaptsr.serve import backend_bench, bench_run


def _no_proc(path, *args, **kwargs):
    raise FileNotFoundError(path)  # as on a system without /proc


@pytest.fixture
def without_resource(monkeypatch):
    """A fresh copy of the bench module imported where `import resource` fails."""
    monkeypatch.setitem(sys.modules, "resource", None)  # None in sys.modules: ImportError
    name = "backend_bench_without_resource"
    spec = importlib.util.spec_from_file_location(name, backend_bench.__file__)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, name, module)
    spec.loader.exec_module(module)
    monkeypatch.setattr(module, "open", _no_proc, raising=False)
    return module


def test_bench_runs_and_reports_memory_unavailable_without_resource(without_resource):
    assert without_resource.resource is None
    result = without_resource.bench_backend(Nearest("a.onnx"), (16, 24), runs=2, warmup=1)
    assert result.latency.runs == 2 and result.out_mp_per_s > 0
    assert result.peak_rss_mb is None
    assert json.loads(json.dumps(result.to_dict()))["peak_rss_mb"] is None
    row = bench_run.bench_table([bench_run.BenchRow(result)]).splitlines()[1]
    assert row.split()[-2:] == ["-", "-"]  # RSS MB and GPU MB: unavailable


def test_without_proc_the_lifetime_peak_is_read_where_resource_is(monkeypatch):
    monkeypatch.setattr(backend_bench, "open", _no_proc, raising=False)
    result = backend_bench.bench_backend(Nearest("a.onnx"), (16, 24), runs=2, warmup=1)
    assert result.peak_rss_mb > 1  # ru_maxrss: this Python process holds megabytes
    row = bench_run.bench_table([bench_run.BenchRow(result)]).splitlines()[1]
    assert row.split()[-2:] == [f"{result.peak_rss_mb:.0f}", "-"]
