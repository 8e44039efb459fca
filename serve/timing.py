"""Latency measurement shared by `adapt bench` and the export's zero-overhead check (numpy only).

Two artifacts are compared by running them alternately on the same inputs, in a random order
within each round, so that clock boosts, thermal drift and caches hit both alike. The verdict
is an equivalence test on the median of the per-round ratios candidate/base, with a
distribution-free 95% confidence interval for that median (order statistics of the binomial):
PASS when the whole interval lies within 1 +- tolerance, FAIL when it lies wholly outside, and
INCONCLUSIVE otherwise, with an estimate of the rounds that would decide.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np

from adaptsr.core.errors import UserError

MIN_ROUNDS = 6  # fewer rounds give no confidence interval of the median
MAX_ROUNDS = 200  # default cap when an inconclusive comparison is extended


def SELF_TIMED() -> None:
    """Pass as `sync` when each timed call returns its own duration in seconds."""


@dataclass
class Latency:
    median_ms: float
    p90_ms: float
    mean_ms: float
    runs: int

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Comparison:
    ratio: float  # median over rounds of candidate time / base time
    ci_low: float
    ci_high: float
    confidence: float
    base: Latency
    candidate: Latency
    rounds: int
    tolerance: float
    verdict: str  # PASS, FAIL or INCONCLUSIVE (see the module docstring)
    rounds_needed: int | None = None  # INCONCLUSIVE: about how many rounds would decide

    @property
    def passed(self) -> bool:
        return self.verdict == "PASS"

    def to_dict(self) -> dict:
        return {**asdict(self), "passed": self.passed}


def verdict(ratio: float, lo: float, hi: float, tolerance: float, rounds: int):
    """(verdict, rounds needed or None) of the equivalence rule for a median ratio and its CI."""
    if 1 - tolerance <= lo and hi <= 1 + tolerance:
        return "PASS", None
    if hi < 1 - tolerance or lo > 1 + tolerance:
        return "FAIL", None
    # The interval narrows as 1/sqrt(rounds): enough rounds put it wholly on one side of the
    # nearest tolerance edge, at the distance the point estimate has from that edge.
    margin = abs(tolerance - abs(ratio - 1.0))
    half = (hi - lo) / 2
    if margin <= 1e-6 or half <= 0:  # the ratio sits on the edge: no number of rounds decides
        return "INCONCLUSIVE", None
    return "INCONCLUSIVE", max(rounds + 1, math.ceil(rounds * (half / margin) ** 2))


def _timed(fn: Callable[[], object], sync: Callable[[], None] | None) -> float:
    if sync is SELF_TIMED:  # fn measures itself (GPU events) and returns seconds
        return float(fn())  # type: ignore[arg-type]
    if sync:
        sync()
    start = time.perf_counter()
    fn()
    if sync:
        sync()
    return time.perf_counter() - start


def latency(times_s: np.ndarray | list[float]) -> Latency:
    t = np.asarray(times_s, dtype=np.float64) * 1e3
    return Latency(
        median_ms=float(np.median(t)),
        p90_ms=float(np.percentile(t, 90)),
        mean_ms=float(t.mean()),
        runs=int(t.size),
    )


def measure(
    fn: Callable[[], object],
    runs: int = 20,
    warmup: int = 3,
    sync: Callable[[], None] | None = None,
) -> tuple[Latency, np.ndarray]:
    """Warm up, then time `runs` calls; returns the summary and the raw times in seconds."""
    if runs < 1:
        raise ValueError("runs must be at least 1")
    for _ in range(warmup):
        fn()
    times = np.array([_timed(fn, sync) for _ in range(runs)])
    return latency(times), times


def median_ci(values: np.ndarray, confidence: float = 0.95) -> tuple[float, float]:
    """Distribution-free confidence interval of the median from order statistics."""
    v = np.sort(np.asarray(values, dtype=np.float64))
    n = v.size
    if n < MIN_ROUNDS:
        raise ValueError(f"a confidence interval of the median needs {MIN_ROUNDS}+ values")
    z = {0.9: 1.645, 0.95: 1.96, 0.99: 2.576}.get(confidence, 1.96)
    # 1-based ranks j = n/2 - z sqrt(n)/2 (rounded down), k = 1 + n/2 + z sqrt(n)/2 (rounded up)
    lo = max(0, int(math.floor(n / 2 - z * math.sqrt(n) / 2)) - 1)
    hi = min(n - 1, int(math.ceil(1 + n / 2 + z * math.sqrt(n) / 2)) - 1)
    return float(v[lo]), float(v[hi])


def compare(
    run_base: Callable[[], object],
    run_candidate: Callable[[], object],
    rounds: int = 30,
    warmup: int = 3,
    tolerance: float = 0.02,
    sync: Callable[[], None] | None = None,
    seed: int = 0,
    max_rounds: int | None = None,
) -> Comparison:
    """Alternate base and candidate `rounds` times; the verdict of the equivalence rule.

    With `max_rounds`, an INCONCLUSIVE verdict is looked at once more: the rounds it would take
    (a quarter more, for safety; at most `max_rounds` in all) are run and the verdict is taken
    again over every round. Two looks, not a look per round, so the 95% stays close to 95%.
    """
    if rounds < MIN_ROUNDS:
        raise UserError(f"an A/B comparison needs at least {MIN_ROUNDS} rounds, got {rounds}")
    for _ in range(warmup):
        run_base()
        run_candidate()
    rng = np.random.default_rng(seed)
    base_t: list[float] = []
    cand_t: list[float] = []

    def alternate(n: int) -> None:
        for candidate_first in rng.integers(0, 2, size=n):
            if candidate_first:
                cand_t.append(_timed(run_candidate, sync))
                base_t.append(_timed(run_base, sync))
            else:
                base_t.append(_timed(run_base, sync))
                cand_t.append(_timed(run_candidate, sync))

    alternate(rounds)
    result = _judge(np.array(base_t), np.array(cand_t), tolerance)
    if max_rounds and result.verdict == "INCONCLUSIVE" and result.rounds_needed:
        more = min(max_rounds, math.ceil(1.25 * result.rounds_needed)) - len(base_t)
        if more > 0:
            alternate(more)
            result = _judge(np.array(base_t), np.array(cand_t), tolerance)
    return result


def _judge(base_t: np.ndarray, cand_t: np.ndarray, tolerance: float) -> Comparison:
    ratios = cand_t / base_t
    ratio = float(np.median(ratios))
    lo, hi = median_ci(ratios)
    decided, needed = verdict(ratio, lo, hi, tolerance, ratios.size)
    return Comparison(
        ratio=ratio,
        ci_low=lo,
        ci_high=hi,
        confidence=0.95,
        base=latency(base_t),
        candidate=latency(cand_t),
        rounds=int(ratios.size),
        tolerance=tolerance,
        verdict=decided,
        rounds_needed=needed,
    )


# ---------------------------------------------------------------------------------------------
# How zero overhead is stated: the one rule that `adapt bench`, the export report's lines and the
# demo follow. Graph identity is PROVEN (same nodes in the same order, same shapes, same parameter
# count: the merged model computes exactly what the base computes); latency is only MEASURED, and
# its PASS/FAIL/INCONCLUSIVE never changes the zero-overhead verdict.

PROOF = "graph identity (same nodes, same shapes, same parameter count)"


def zero_overhead_verdict(graph_identical: bool) -> str:
    """The zero-overhead verdict: the proof's, whatever the timing says."""
    return "PASS" if graph_identical else "FAIL"


def graph_line(description: str, graph_identical: bool) -> str:
    """What was proven: `description` of the compared graphs (or engine layers)."""
    return f"graph, proven: {description}: {zero_overhead_verdict(graph_identical)}"


def latency_line(c, label: str = "ratio") -> str:
    """What was only measured: a Comparison (or the export report's LatencyProof)."""
    more = f"; about {c.rounds_needed} rounds would decide" if c.rounds_needed else ""
    return (
        f"latency, measured: {label} {c.ratio:.4f} (95% CI {c.ci_low:.4f}-{c.ci_high:.4f}, "
        f"{c.rounds} rounds, tolerance {c.tolerance:.0%}): {c.verdict}{more}"
    )


def verdict_line(graph_identical: bool) -> str:
    """The overall verdict, saying what it rests on."""
    return (
        f"zero overhead: {zero_overhead_verdict(graph_identical)} (proven by {PROOF}; "
        "the latency is a measurement, not part of the proof)"
    )


def overhead_lines(description: str, graph_identical: bool, c, label: str = "ratio") -> list[str]:
    """The proof, the measurement and the verdict, in that order; a latency that is not PASS
    beside an identical graph is explained as timing noise."""
    lines = [graph_line(description, graph_identical), latency_line(c, label)]
    if graph_identical and c.verdict != "PASS":
        lines.append(
            "  (the graphs are identical, so a latency difference is timing noise: rerun on an "
            "idle machine or with more rounds)"
        )
    return [*lines, verdict_line(graph_identical)]
