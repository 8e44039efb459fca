"""Latency measurement shared by `adapt bench` and the export's zero-overhead check (numpy only).

Two artifacts are compared by running them alternately on the same inputs, in a random order
within each round, so that clock boosts, thermal drift and caches hit both alike. The verdict
uses the median of the per-round ratios candidate/base, with a distribution-free confidence
interval for that median (order statistics of the binomial).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np


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
    passed: bool  # |ratio - 1| <= tolerance

    def to_dict(self) -> dict:
        d = asdict(self)
        d["verdict"] = "PASS" if self.passed else "FAIL"
        return d


def _timed(fn: Callable[[], object], sync: Callable[[], None] | None) -> float:
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
    if n < 6:  # too few rounds for a meaningful interval: report the range
        return float(v[0]), float(v[-1])
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
) -> Comparison:
    """Alternate base and candidate `rounds` times; PASS when |median ratio - 1| <= tolerance."""
    if rounds < 1:
        raise ValueError("rounds must be at least 1")
    for _ in range(warmup):
        run_base()
        run_candidate()
    order = np.random.default_rng(seed).integers(0, 2, size=rounds)
    base_t, cand_t = np.empty(rounds), np.empty(rounds)
    for i, candidate_first in enumerate(order):
        if candidate_first:
            cand_t[i] = _timed(run_candidate, sync)
            base_t[i] = _timed(run_base, sync)
        else:
            base_t[i] = _timed(run_base, sync)
            cand_t[i] = _timed(run_candidate, sync)
    ratios = cand_t / base_t
    ratio = float(np.median(ratios))
    lo, hi = median_ci(ratios)
    return Comparison(
        ratio=ratio,
        ci_low=lo,
        ci_high=hi,
        confidence=0.95,
        base=latency(base_t),
        candidate=latency(cand_t),
        rounds=rounds,
        tolerance=tolerance,
        passed=abs(ratio - 1.0) <= tolerance,
    )
