"""The GPU check's report: failures first, then the environment and every stage's table, as
markdown (DIR/report.md); and the one-line forms of dtypes and errors the stages record."""

from __future__ import annotations

import math


def dtype_name(dtype) -> str:
    return str(dtype).removeprefix("torch.")


def one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:300]}" if text else type(e).__name__


def plain(v):
    """JSON for what json cannot write itself (layer cases, devices)."""
    return getattr(v, "__dict__", str(v))


def _f(v, digits=3):
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"


def render(results: dict, failures: list[str]) -> str:
    env = results.get("environment", {})
    lines = ["# GPU check", ""]
    lines += [f"## Failures ({len(failures)})", ""] + [f"- {x}" for x in failures] + [""]
    lines += ["## Environment", ""] + [f"- {k}: {v}" for k, v in env.items()] + [""]
    lines += _kernel_sections(results)
    lines += _layer_section(results.get("layers") or [])
    lines += _e2e_section(results.get("e2e") or [])
    deg = results.get("degradation") or {}
    if deg:
        lines += ["## Degradations (HR crops/s, batch and crop as the steps)", ""]
        lines += [f"- {k}: {v:.1f}" for k, v in deg.items()] + [""]
    lines += _budget_section(results.get("budgets") or [])
    if "loop" in results:
        lines += ["## Training loop with the speed options", "", f"{results['loop']}", ""]
    return "\n".join(lines)


def _kernel_sections(results: dict) -> list[str]:
    lines = []
    acc = results.get("accuracy") or []
    if acc:
        lines += ["## Kernel accuracy (max rel error of y, dx, dA, dB against fp64)", ""]
        lines += [
            "| dtype | case | one-pass | two-pass | eager (same dtype) |",
            "|---|---|---|---|---|",
        ]
        lines += [
            f"| {r['dtype']} | {r['case']} | {r['one-pass']:.1e} | {r['two-pass']:.1e} "
            f"| {r['eager']:.1e} |"
            for r in acc
        ]
        lines.append("")
    ops = results.get("opcheck") or []
    if ops:
        lines += ["## torch.library.opcheck", "", "| op | dtype | result |", "|---|---|---|"]
        lines += [f"| {r['op']} | {r['dtype']} | {r['status']} |" for r in ops] + [""]
    if "graph_capture" in results:
        lines += [
            f"CUDA graph capture of a LoRA conv (fused, bf16): {results['graph_capture']}",
            "",
        ]
    return lines


def _layer_section(layers: list[dict]) -> list[str]:
    if not layers:
        return []
    lines = ["## Layers (forward + backward, ms)", ""]
    lines += [
        "| model | layer | dtype | r | one-pass | two-pass | picked | eager | floor "
        "| low-rank pass | full FT | eager/fused | fused/(floor+low-rank) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in layers:
        fused = min(r["one-pass"], r["two-pass"])
        lines.append(
            f"| {r['model']} | {r['layer']} | {r['dtype']} | {r['r']} | {_f(r['one-pass'])} "
            f"| {_f(r['two-pass'])} | {r['auto']} | {_f(r['eager'])} | {_f(r['floor'])} "
            f"| {_f(r['lowrank'])} | {_f(r['full'])} | {_f(r['eager'] / fused, 2)} "
            f"| {_f(fused / (r['floor'] + r['lowrank']), 2)} |"
        )
    return lines + [""]


def _e2e_section(e2e: list[dict]) -> list[str]:
    if not e2e:
        return []
    lines = ["## End to end (steps/s, peak memory)", ""]
    lines += [
        "| model | variant | it/s | peak memory (MiB) | warm-up s | trainable |",
        "|---|---|---|---|---|---|",
    ]
    for r in e2e:
        if "it_s" in r:
            mem = r.get("gpu_peak_mb", r.get("peak_rss_mb"))
            lines.append(
                f"| {r['model']} | {r['variant']} | {r['it_s']:.2f} | {mem:.0f} "
                f"| {r['warmup_s']:.1f} | {r['trainable']:,} |"
            )
        else:
            lines.append(
                f"| {r['model']} | {r['variant']} | {r.get('error') or r.get('skipped')} | | | |"
            )
    return lines + [""]


def _budget_section(plans: list[dict]) -> list[str]:
    if not plans:
        return []
    lines = ["## The paper's budgets (projected hours)", ""]
    lines += [
        "| model | mode | iterations | variant | steps only | with degradation | paper (RTX 4090) |"
    ]
    lines += ["|---|---|---|---|---|---|---|"]
    lines += [
        f"| {p['model']} | {p['mode']} | {p['iters']:,} | {p['variant']} | {p['model_h']:.2f} "
        f"| {p['with_degradation_h']:.2f} | {p['paper_h']} |"
        for p in plans
    ]
    return lines + [""]
