"""Stage 4 of the GPU check: the paper's training budgets projected from the measured steps/s
and degradation rate."""

from __future__ import annotations

import math

from benchmarks.gpu_check.training_timing import best

PAPER_HOURS = {("safmn-x4", "lora"): 1, ("swinir-m-x4", "lora"): 4}
PAPER_HOURS.update({("safmn-x4", "full"): 9, ("swinir-m-x4", "full"): 23})
PAPER_ITERS = {"lora": 100_000, "full": 500_000}


def budgets(rows, degradation: dict, batch: int) -> list[dict]:
    """Projected hours of the paper's runs: model steps only, and with the on-device
    Real-ESRGAN degradation of each batch added (the loop runs it on the same GPU)."""
    out = []
    rate = degradation.get("realesrgan")
    for (model, mode), paper in PAPER_HOURS.items():
        row = best(rows, model, mode)
        if row is None:
            continue
        iters = PAPER_ITERS[mode]
        step = 1 / row["it_s"]
        with_data = step + (batch / rate if rate else math.nan)
        out.append(
            dict(
                model=model,
                mode=mode,
                variant=row["variant"],
                iters=iters,
                paper_h=paper,
                model_h=iters * step / 3600,
                with_degradation_h=iters * with_data / 3600,
            )  # fmt: skip
        )
    return out


def budget_misses(plans) -> list[str]:
    misses = []
    for p in plans:
        if p["model"] == "safmn-x4" and p["mode"] == "lora":
            minutes = p["with_degradation_h"] * 60
            if not minutes < 15:
                misses.append(
                    f"budgets: SAFMN 100k LoRA iterations take {minutes:.1f} min with the "
                    f"degradation ({p['model_h'] * 60:.1f} min without) > 15 min "
                    f"(ratio {minutes / 15:.2f})"
                )
    return misses
