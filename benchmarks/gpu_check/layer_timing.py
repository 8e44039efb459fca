"""Stage 2 of the GPU check: per layer shape and rank, forward + backward of the fused designs,
eager LoRA, the floor, full fine-tuning and one low-rank pass, against the issue's targets."""

from __future__ import annotations

import math
import time

import torch
import torch.nn.functional as F

from benchmarks import lora_layers
from benchmarks.gpu_check.report import dtype_name


def cases_and_settings(quick: bool):
    """(cases, ranks, (runs, warmup), (batch, patch), dtypes): the benchmark's own, or one conv
    and one linear case, tiny, for the CPU run."""
    if quick:
        cases = [
            lora_layers.LayerCase("tiny", "conv 3x3", 16, 18, 3),
            lora_layers.LayerCase("tiny", "qkv", 16, 48, qkv=True),
        ]
        return cases, (8,), (1, 0), (1, 5), [torch.float32]
    dtypes = [torch.bfloat16, torch.float32]
    return (
        lora_layers.layer_cases(),
        lora_layers.RANKS,
        (20, 5),
        (lora_layers.BATCH, lora_layers.PATCH),
        dtypes,
    )


def lowrank_ms(case, r, device, dtype, runs, warmup, batch, patch) -> float:
    """One low-rank pass over x and dY: z = x A^T and dz = dY (*) B (what the adapter
    gradients must read beyond the floor)."""
    _, _, a, b, _ = lora_layers.make_lora(case, r, device, dtype)
    a, b = a.detach(), b.detach()
    sets = lora_layers.input_sets(
        case, device, dtype, batch, patch, 0 if device.type == "cpu" else 256 << 20
    )

    def fn(i):
        x, dy = sets[i % len(sets)]
        with torch.no_grad():
            if case.is_conv:
                F.conv2d(x, a)
                torch.nn.grad.conv2d_input(
                    (x.shape[0], a.shape[0], *x.shape[2:]), b, dy, 1, case.k // 2
                )
            else:
                F.linear(x, a)
                dy.matmul(b)

    return lora_layers.time_ms(fn, runs, warmup, device)


def layer_rows(device, dtypes, ranks, runs, warmup, batch, patch, deadline, cases) -> tuple:
    rows, skipped = [], []
    min_bytes = 0 if device.type == "cpu" else 256 << 20
    kw = dict(runs=runs, warmup=warmup, batch=batch, patch=patch, min_bytes=min_bytes)
    for dtype in dtypes:
        for case in cases:
            if time.time() > deadline:
                skipped.append(f"layers: {case.model} {case.layer} {dtype_name(dtype)}")
                continue
            base = lora_layers.bench_layer(case, 1, ("floor", "full"), device, dtype, **kw)
            for r in ranks:
                t = lora_layers.bench_layer(
                    case, r, ("one-pass", "two-pass", "eager"), device, dtype, **kw
                )
                low = lowrank_ms(case, r, device, dtype, runs, warmup, batch, patch)
                auto = lora_layers.auto_design(case, r, dtype, batch, patch)
                rows.append(
                    dict(
                        case=case,
                        dtype=dtype_name(dtype),
                        r=r,
                        auto=auto,
                        lowrank=low,
                        check=math.nan,
                        **base,
                        **t,
                    )
                )
    return rows, skipped


def layer_misses(rows) -> list[str]:
    misses = []
    for row in rows:
        c = row["case"]
        where = f"layers: {c.model} {c.layer} {row['dtype']} r={row['r']}"
        fused = min(row["one-pass"], row["two-pass"])
        speedup = row["eager"] / fused
        if speedup < 1.3:
            misses.append(
                f"{where}: fused only {speedup:.2f}x faster than eager (target 1.3x; "
                f"ratio {speedup / 1.3:.2f})"
            )
        limit = 1.2 * (row["floor"] + row["lowrank"])
        if fused > limit:
            misses.append(
                f"{where}: fused {fused:.3f} ms > 1.2 x (floor {row['floor']:.3f} + low-rank pass "
                f"{row['lowrank']:.3f}) ms (ratio {fused / limit:.2f})"
            )
        if row[row["auto"]] > fused * 1.05:
            misses.append(
                f"{where}: the cost model picks {row['auto']}, "
                f"{row[row['auto']] / fused:.2f}x slower than the other design"
            )
    return misses
