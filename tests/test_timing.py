import time

import numpy as np
import pytest

from adaptsr.core.errors import UserError
from adaptsr.serve.timing import compare, measure, median_ci, verdict


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


def test_verdict_decides_from_the_interval_not_the_point_estimate():
    # the point estimate is 1.0, but the interval 0.909-1.107 does not show equivalence
    # half-width 0.099 must shrink to the margin 0.02: (0.099 / 0.02)^2 = 24.5 times the rounds
    assert verdict(1.0, 0.909, 1.107, 0.02, 30) == ("INCONCLUSIVE", 736)
    assert verdict(1.004, 0.99, 1.015, 0.02, 30) == ("PASS", None)
    assert verdict(1.10, 1.05, 1.15, 0.02, 30) == ("FAIL", None)
    assert verdict(0.90, 0.85, 0.97, 0.02, 30) == ("FAIL", None)
    # straddling the upper edge: more rounds would tell which side the ratio is on
    state, needed = verdict(1.03, 1.01, 1.05, 0.02, 40)
    assert state == "INCONCLUSIVE" and needed == 160
    assert verdict(1.02, 1.0, 1.04, 0.02, 40) == ("INCONCLUSIVE", None)  # on the edge itself


def test_an_inconclusive_comparison_runs_on_to_the_rounds_it_needs(monkeypatch):
    """Scripted timings: ratios cycle through 0.97..1.03 around 1. Six rounds give the interval
    0.97-1.03 (inconclusive; 14 rounds estimated); extended to 18, it is 0.98-1.02: PASS."""
    import itertools

    from adaptsr.serve import timing

    ratios = itertools.cycle([0.97, 1.03, 0.99, 1.01, 1.0, 1.0, 0.98, 1.02])
    monkeypatch.setattr(timing, "_timed", lambda fn, sync: 1.0 if fn() == "b" else next(ratios))
    first = compare(lambda: "b", lambda: "c", rounds=6, warmup=0)
    assert (first.verdict, first.rounds_needed, first.rounds) == ("INCONCLUSIVE", 14, 6)
    ratios = itertools.cycle([0.97, 1.03, 0.99, 1.01, 1.0, 1.0, 0.98, 1.02])
    longer = compare(lambda: "b", lambda: "c", rounds=6, warmup=0, max_rounds=100)
    assert (longer.rounds, longer.ci_low, longer.ci_high) == (18, 0.98, 1.02)
    assert longer.verdict == "PASS"
    ratios = itertools.cycle([0.97, 1.03, 0.99, 1.01, 1.0, 1.0, 0.98, 1.02])
    capped = compare(lambda: "b", lambda: "c", rounds=6, warmup=0, max_rounds=10)
    assert capped.rounds == 10 and capped.verdict == "INCONCLUSIVE"


def test_compare_needs_rounds_for_an_interval():
    with pytest.raises(UserError, match="at least 6 rounds"):
        compare(lambda: None, lambda: None, rounds=5, warmup=0)
    with pytest.raises(ValueError):
        median_ci(np.ones(5))


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
