import time

import numpy as np

from adaptsr.serve.timing import compare, measure, median_ci


def _sleeper(seconds):
    return lambda: time.sleep(seconds)


def test_compare_detects_a_slower_candidate():
    c = compare(_sleeper(0.002), _sleeper(0.004), rounds=12, warmup=1)
    assert 1.6 < c.ratio < 2.6 and not c.passed
    assert c.ci_low <= c.ratio <= c.ci_high


def test_compare_passes_identical_work():
    work = np.random.default_rng(0).random((256, 256))
    c = compare(lambda: work @ work, lambda: work @ work, rounds=40, warmup=3, tolerance=0.25)
    assert 0.75 < c.ratio < 1.25 and c.passed
    assert c.to_dict()["verdict"] == "PASS"


def test_median_ci_covers_median_of_known_sample():
    values = np.arange(1, 101, dtype=float)  # median 50.5
    lo, hi = median_ci(values)
    assert lo < 50.5 < hi
    # The interval for n=100 at 95% spans ranks 40..61 (textbook order statistics).
    assert (lo, hi) == (40.0, 61.0)


def test_measure_counts_runs():
    calls = []
    stats, times = measure(lambda: calls.append(1), runs=5, warmup=2)
    assert len(calls) == 7 and stats.runs == 5 and times.shape == (5,)
    assert stats.median_ms <= stats.p90_ms


def test_onnx_sessions_do_not_spin(tmp_path):
    """Spinning worker threads of one session slow the other in an alternating comparison."""
    import onnx
    from onnx import TensorProto, helper

    from adaptsr.export.parity import session
    from adaptsr.serve.backends import OnnxBackend

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 8, 8])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.metadata_props.add(key="scale", value="1")
    path = tmp_path / "id.onnx"
    onnx.save(model, path)
    key = "session.intra_op.allow_spinning"
    assert session(path).get_session_options().get_session_config_entry(key) == "0"
    backend = OnnxBackend(path, provider="cpu")
    assert backend.session.get_session_options().get_session_config_entry(key) == "0"
