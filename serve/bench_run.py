"""One `adapt bench` run over artifacts: each opened by the caller's loader, timed whole or
tiled (serve.backend_bench), engines also split into copies and GPU compute
(serve.engine_timing). Torch-free: a deployment machine benchmarks its ONNX files and engines.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from adaptsr.serve.backend_bench import BenchResult, bench_backend
from adaptsr.serve.backends import Backend
from adaptsr.serve.engine_timing import EngineTiming, time_engine


@dataclass(frozen=True)
class BenchSettings:
    """How every artifact of a run is timed (the options of `adapt bench`)."""

    size: tuple[int, int] = (256, 256)  # input (height, width)
    runs: int = 10
    warmup: int = 2
    tile: int | None = None  # None: the backend on the whole input
    overlap: int | None = None
    batch: int = 1
    vs_untiled: bool = False
    cuda_graph: bool = False  # engines: replay the copy/compute timing as a CUDA graph


@dataclass(frozen=True)
class BenchRow:
    """One artifact's numbers; `engine` only for a TensorRT engine (trtexec's split)."""

    result: BenchResult
    engine: EngineTiming | None = None

    def to_json(self) -> dict:
        out = self.result.to_dict()
        if self.engine is not None:
            out["engine_timing"] = self.engine.to_dict()
        return out


def bench_artifacts(
    specs: list[str], open_backend: Callable[[str], Backend], settings: BenchSettings
) -> list[BenchRow]:
    """Open each spec with `open_backend` (the loader) and time it."""
    rows = []
    for spec in specs:
        backend = open_backend(spec)
        s = settings
        result = bench_backend(backend, s.size, s.runs, s.warmup, s.tile, s.overlap, s.batch,
                               s.vs_untiled)  # fmt: skip
        engine = None
        if backend.kind == "tensorrt":  # copies and GPU compute apart, as trtexec reports
            shape = (backend.fixed_batch or s.batch, 3, *s.size)
            engine = time_engine(backend, shape, s.runs, s.warmup, cuda_graph=s.cuda_graph)
        rows.append(BenchRow(result, engine))
    return rows


def _short(name: str, width: int = 28) -> str:
    return name if len(name) <= width else "..." + name[-(width - 3) :]


def bench_table(rows: list[BenchRow]) -> str:
    """The rows as `adapt bench` prints them: a table, tiling and engine details below it."""
    lines = [
        f"{'artifact':<28} {'backend':<9} {'device':<6} {'size':>9} {'tiles':>5} "
        f"{'median ms':>10} {'p90 ms':>9} {'out MP/s':>9} {'RSS MB':>8} {'GPU MB':>8}"
    ]
    for r in (row.result for row in rows):
        gpu = "-" if r.peak_gpu_mb is None else f"{r.peak_gpu_mb:.0f}"
        rss = "-" if r.peak_rss_mb is None else f"{r.peak_rss_mb:.0f}"  # None: no RSS to read
        lines.append(
            f"{_short(r.artifact):<28} {r.kind:<9} {r.device:<6} {r.size[0]:>4}x{r.size[1]:<4} "
            f"{r.tiles:>5} {r.latency.median_ms:>10.2f} {r.latency.p90_ms:>9.2f} "
            f"{r.out_mp_per_s:>9.3f} {rss:>8} {gpu:>8}"
        )
        if r.tiling_efficiency:
            e = r.tiling_efficiency
            lines.append(
                f"  tiled/untiled throughput {e['ratio']:.3f} (95% CI {e['ci_low']:.3f} - "
                f"{e['ci_high']:.3f}, {e['rounds']} alternating rounds, untiled "
                f"{e['untiled_median_ms']:.2f} ms median)"
            )
    for row in rows:
        t = row.engine
        if t is None:
            continue
        graph = ", CUDA graph" if t.cuda_graph else ""
        lines.append(
            f"  {_short(row.result.artifact)} at {t.shape}: GPU compute "
            f"{t.compute.median_ms:.3f} ms, H2D {t.h2d.median_ms:.3f} ms, "
            f"D2H {t.d2h.median_ms:.3f} ms (medians, CUDA events, pinned buffers{graph})"
        )
    return "\n".join(lines)
