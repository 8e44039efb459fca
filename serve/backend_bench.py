"""`adapt bench`: latency, throughput and peak memory of a backend, and A/B overhead checks.

Inputs are a seeded synthetic image (smooth gradients, edges and mild noise) so that every run
and every artifact sees the same pixels. With `tile` set, the whole tiled path (cutting,
batching, blending) is timed on an image of the given size; with tile 0 the backend runs the
image in one piece.
"""

from __future__ import annotations

import os
import sys
import threading
from dataclasses import asdict, dataclass

import numpy as np

from adaptsr.core.errors import UserError
from adaptsr.core.images import synthetic_image
from adaptsr.core.tiling import plan_tiles, tiled_upscale
from adaptsr.serve import engine_timing
from adaptsr.serve.backends import Backend
from adaptsr.serve.timing import (
    MAX_ROUNDS,
    MIN_ROUNDS,
    SELF_TIMED,
    Comparison,
    Latency,
    compare,
    measure,
)

try:
    import resource  # POSIX: the lifetime peak RSS where there is no /proc
except ImportError:  # Windows: `adapt bench` still runs, its peak memory reported unavailable
    resource = None  # type: ignore[assignment]  # the module or None, read as such below


class PeakRSS:
    """Samples this process's resident memory in a thread; Linux /proc, else ru_maxrss; peak
    None where neither can be read (Windows)."""

    def __init__(self, interval_s: float = 0.005):
        self.interval_s = interval_s
        self.peak: int | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._page = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096

    def _rss(self) -> int | None:
        try:
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * self._page
        except OSError:  # no /proc: the lifetime peak (KiB on Linux, bytes on macOS)
            if resource is None:
                return None
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            return peak if sys.platform == "darwin" else peak * 1024

    def _sample(self) -> None:
        rss = self._rss()
        if rss is not None:
            self.peak = rss if self.peak is None else max(self.peak, rss)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._sample()

    def __enter__(self) -> PeakRSS:
        self._sample()
        if self.peak is not None:  # nothing to sample where memory cannot be read
            self._thread = threading.Thread(target=self._loop, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join()
        self._sample()


@dataclass
class BenchResult:
    artifact: str
    kind: str
    device: str
    scale: int
    size: tuple[int, int]  # input (height, width)
    tile: int | None  # None: the backend on the whole image
    tiles: int  # tiles per image
    latency: Latency
    out_mp_per_s: float  # output megapixels per second, from the median latency
    peak_rss_mb: float | None  # process resident memory during the timed runs (None: unknown)
    peak_gpu_mb: float | None  # accelerator memory, where the backend reports it
    # tiled throughput / untiled throughput from alternating runs (with vs_untiled)
    tiling_efficiency: dict | None = None

    def to_dict(self) -> dict:
        d = asdict(self)
        d["latency"] = self.latency.to_dict()
        return d


def _runner(backend: Backend, image: np.ndarray, tile, overlap, batch):
    if tile is None:  # the backend alone, the image in one piece
        batch_input = image[None]
        return lambda: backend.run(batch_input)
    return lambda: tiled_upscale(
        backend.run, image, backend.scale, backend.rule, tile=tile, overlap=overlap, batch=batch
    )


def bench_backend(
    backend: Backend,
    size: tuple[int, int],
    runs: int = 10,
    warmup: int = 2,
    tile: int | None = None,
    overlap: int | None = None,
    batch: int = 1,
    vs_untiled: bool = False,
) -> BenchResult:
    """Warm up, time `runs` calls on one (3, H, W) image; tile None = the backend directly.

    With `vs_untiled` (and a tile), the tiled and the untiled path run alternately (`runs`
    rounds, timing.compare) and the result holds the tiled/untiled throughput ratio.
    """
    if runs < 1 or warmup < 0:
        raise UserError("--runs must be >= 1 and --warmup >= 0")
    height, width = size
    if height < 1 or width < 1:
        raise UserError(f"--size must be positive, not {height} {width}")
    image = synthetic_image(height, width)
    if tile is None:
        plan = plan_tiles(height, width, backend.rule, 0, 0)  # checks the size is accepted
        if plan.padded != (height, width):
            raise UserError(
                f"--size {height} {width} is not accepted by {backend.name} "
                f"({backend.rule.describe()}); try --size {plan.padded[0]} {plan.padded[1]}"
            )
        tiles = 1
    else:
        tiles = plan_tiles(height, width, backend.rule, tile, overlap).count
    fn = _runner(backend, image, tile, overlap, batch)
    efficiency = None
    backend.reset_peak_memory()
    with PeakRSS() as rss:
        if vs_untiled:
            if tile is None:
                raise UserError(
                    "--vs-untiled compares the tiled path with the untiled: give --tile"
                )
            if runs < MIN_ROUNDS:
                raise UserError(f"--vs-untiled alternates --runs rounds: give {MIN_ROUNDS} or more")
            untiled = _runner(backend, image, 0, None, 1)
            c = compare(untiled, fn, rounds=runs, warmup=warmup, sync=backend.sync)
            lat = c.candidate
            efficiency = {
                "ratio": 1.0 / c.ratio,
                "ci_low": 1.0 / c.ci_high,
                "ci_high": 1.0 / c.ci_low,
                "untiled_median_ms": c.base.median_ms,
                "rounds": c.rounds,
            }
        else:
            lat, _ = measure(fn, runs=runs, warmup=warmup, sync=backend.sync)
    gpu = backend.peak_memory_bytes()
    out_mp = height * width * backend.scale**2 / 1e6
    return BenchResult(
        artifact=backend.name,
        kind=backend.kind,
        device=backend.device,
        scale=backend.scale,
        size=(height, width),
        tile=tile,
        tiles=tiles,
        latency=lat,
        out_mp_per_s=out_mp / (lat.median_ms / 1e3),
        peak_rss_mb=None if rss.peak is None else rss.peak / 2**20,
        peak_gpu_mb=None if gpu is None else gpu / 2**20,
        tiling_efficiency=efficiency,
    )


def check_pair(base: Backend, candidate: Backend) -> None:
    """A latency ratio means something only between two artifacts of one backend and scale."""
    if base.kind != candidate.kind:
        raise UserError(
            f"--base is a {base.kind} artifact but --candidate is {candidate.kind}: "
            "compare two artifacts of the same backend"
        )
    if base.device != candidate.device:
        raise UserError(f"--base runs on {base.device} but --candidate on {candidate.device}")
    if base.scale != candidate.scale:
        raise UserError(
            f"--base upscales x{base.scale} but --candidate x{candidate.scale}: "
            "not two versions of one model"
        )


def compare_backends(
    base: Backend,
    candidate: Backend,
    size: tuple[int, int],
    rounds: int = 30,
    warmup: int = 3,
    tolerance: float = 0.02,
    max_rounds: int | None = MAX_ROUNDS,
) -> Comparison:
    """Alternate base and candidate on the same input; the verdict of adaptsr.serve.timing."""
    check_pair(base, candidate)
    if rounds < MIN_ROUNDS or warmup < 0:
        raise UserError(f"an A/B comparison needs at least {MIN_ROUNDS} rounds and --warmup >= 0")
    height, width = size
    for b in (base, candidate):
        plan = plan_tiles(height, width, b.rule, 0, 0)
        if plan.padded != (height, width):
            raise UserError(
                f"--size {height} {width} is not accepted by {b.name} ({b.rule.describe()})"
            )
    if base.kind == "tensorrt":  # GPU compute time from CUDA events, copies excluded
        shape = (base.fixed_batch or 1, 3, height, width)
        return compare(
            engine_timing.compute_clock(base, shape),
            engine_timing.compute_clock(candidate, shape),
            rounds=rounds,
            warmup=warmup,
            tolerance=tolerance,
            sync=SELF_TIMED,
            max_rounds=max_rounds,
        )
    batch_input = synthetic_image(height, width)[None]

    def sync() -> None:
        base.sync()
        candidate.sync()

    return compare(
        lambda: base.run(batch_input),
        lambda: candidate.run(batch_input),
        rounds=rounds,
        warmup=warmup,
        tolerance=tolerance,
        sync=sync,
        max_rounds=max_rounds,
    )
