"""`adapt train --bench`: the training throughput table (adapt/train/throughput.py) and the
degradation rates, printed and written to RUN_DIR/bench.md."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from adaptsr.adapt.degradations import degradations_per_second
from adaptsr.adapt.train.config import MODES
from adaptsr.adapt.train.throughput import bench_defaults, bench_table, benchmark
from adaptsr.core.errors import UserError
from adaptsr.core.fileio import atomic_output, check_writable


@dataclass(frozen=True)
class BenchReport:
    text: str
    path: Path


def bench_to_file(given: dict, out: str | Path, force: bool) -> BenchReport:
    """Time training steps for every model and mode in `given` (comma-separated "model" and
    "mode"; the other settings as `adapt train` names them) and write the table."""
    path = check_writable(Path(out) / "bench.md", force)  # before minutes of timing
    device = given.get("device", "auto")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    settings = {**bench_defaults(device), **given}
    models = settings.get("model", "safmn-x4,swinir-light-x4").split(",")
    modes = settings.get("mode", "lora,full").split(",")
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        raise UserError(f"unknown mode {unknown[0]!r} (choose from {', '.join(MODES)})")
    batch, patch = settings["batch"], settings["patch"]
    rows = benchmark(
        models,
        modes,
        batch,
        patch,
        settings["iters"],
        device,
        settings.get("rank", 8),
        kernels=settings.get("kernels", "auto"),
        compile=settings.get("compile", False),
        cuda_graphs=settings.get("cuda_graphs", False),
    )
    lines = [bench_table(rows), ""]
    for kind in ("bicubic", "realesrgan"):
        rate = degradations_per_second(kind, batch, patch, device=device)
        lines.append(f"{kind} degradation: {rate:.1f} HR crops/s ({patch}x{patch}, batch {batch})")
    text = "\n".join(lines)
    with atomic_output(path, force=force) as tmp:
        tmp.write_text(text + "\n")
    return BenchReport(text, path)
