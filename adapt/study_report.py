"""The results of `adapt study`: each run's outcome, the table over seeds (study.json,
study.md) and the two plots (params.png, curves.png)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from adaptsr.adapt.eval_report import METRIC_LABELS
from adaptsr.core.fileio import atomic_output
from adaptsr.core.lazy import lazy_import

# plotting: only when the plots are drawn
matplotlib_agg = lazy_import("matplotlib.backends.backend_agg")
matplotlib_figure = lazy_import("matplotlib.figure")

STUDY_FILE = "study.json"
SCORE_COLUMNS = ("psnr_y", "ssim_y")  # the table's own columns; the perceptual ones follow


@dataclass
class RunOutcome:
    spec: str
    seed: int
    folder: str
    trainable: int
    psnr_y: float
    ssim_y: float
    train_seconds: float
    iters: int
    curve: list[tuple[int, float]] = field(default_factory=list)  # (iteration, val PSNR-Y)
    # LPIPS, DISTS, HaarPSI, MS-GMSD: those the run was scored with (adaptsr.adapt.metrics)
    perceptual: dict[str, float] = field(default_factory=dict)

    @property
    def it_per_s(self) -> float:
        return self.iters / self.train_seconds if self.train_seconds > 0 else float("nan")


def duration(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{max(1, round(seconds / 60))} min"


# ---------------------------------------------------------------------------------------------
# summary


def _mean_std(values: list[float]) -> tuple[float, float]:
    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return mean, std


def _perceptual_means(runs: list[RunOutcome]) -> dict[str, float]:
    """Mean and std over seeds of each perceptual metric every seed was scored with."""
    out = {}
    for name in runs[0].perceptual:
        if all(name in o.perceptual for o in runs):
            out[name], out[f"{name}_std"] = _mean_std([o.perceptual[name] for o in runs])
    return out


def perceptual_columns(report: dict) -> list[str]:
    """The perceptual metrics of the table: those of any row, in the order of METRIC_LABELS."""
    return [
        n for n in METRIC_LABELS if n not in SCORE_COLUMNS and any(n in r for r in report["runs"])
    ]


def summarise(settings, specs, base: dict, outcomes: list[RunOutcome]) -> dict:
    rows = []
    for spec in specs:
        mine = [o for o in outcomes if o.spec == spec.text]
        psnr, psnr_std = _mean_std([o.psnr_y for o in mine])
        ssim, ssim_std = _mean_std([o.ssim_y for o in mine])
        rows.append(
            {
                "spec": spec.text,
                "trainable": mine[0].trainable,
                "psnr_y": psnr,
                "psnr_y_std": psnr_std,
                "ssim_y": ssim,
                "ssim_y_std": ssim_std,
                "gain_db": psnr - base["psnr_y"],
                "train_seconds": sum(o.train_seconds for o in mine) / len(mine),
                "it_per_s": sum(o.it_per_s for o in mine) / len(mine),
                "seeds": len(mine),
                "per_seed": [o.psnr_y for o in mine],
                **_perceptual_means(mine),
            }
        )
    full = next((r for r in rows if r["spec"] == "full"), None)
    for r in rows:
        ok = full is not None and full["gain_db"] > 0
        r["share_of_full_gain"] = r["gain_db"] / full["gain_db"] if ok else None
    return {
        "settings": settings.flat(),
        "base": base,
        "runs": rows,
    }


def study_markdown(report: dict) -> str:
    s, base = report["settings"], report["base"]
    extra = perceptual_columns(report)
    heads = "".join(f" {METRIC_LABELS[n]} |" for n in extra)
    lines = [
        "# adapt study",
        "",
        f"`{s['model']}` on {', '.join(s['data'])}, validated on {s['val']}; {s['iters']} "
        f"iterations, batch {s['batch']} of {s['patch']}px HR crops, degradation "
        f"{s['degradation']} for HR-only folders, {s['seeds']} seed(s) per run.",
        "",
        f"Base: {base['psnr_y']:.2f} dB PSNR-Y, {base['ssim_y']:.4f} SSIM-Y.",
        "",
        "| run | trainable | PSNR-Y (dB) | SSIM-Y |" + heads + " gain (dB) | share of full's gain "
        "| train time | it/s |",
        "|---|---|---|---|" + "---|" * len(extra) + "---|---|---|---|",
    ]
    for r in report["runs"]:
        share = "-" if r["share_of_full_gain"] is None else f"{100 * r['share_of_full_gain']:.0f}%"
        lines.append(
            f"| {r['spec']} | {r['trainable']:,} | {r['psnr_y']:.2f} ± {r['psnr_y_std']:.3f} | "
            f"{r['ssim_y']:.4f} ± {r['ssim_y_std']:.4f} |{_cells(r, extra)} {r['gain_db']:+.2f} | "
            f"{share} | {duration(r['train_seconds'])} | {r['it_per_s']:.2f} |"
        )
    lines += [
        "",
        "± is the standard deviation over seeds." + _perceptual_note(extra),
        "",
        "![PSNR against trainable parameters](params.png)",
        "",
        "![validation PSNR against iterations](curves.png)",
        "",
    ]
    return "\n".join(lines)


def _cells(row: dict, names: list[str]) -> str:
    return "".join(
        f" {row[n]:.4f} ± {row[n + '_std']:.4f} |" if n in row else " - |" for n in names
    )


def _perceptual_note(names: list[str]) -> str:
    better = {"lpips": "lower", "dists": "lower", "haarpsi": "higher", "ms_gmsd": "lower"}
    if not names:
        return ""
    said = ", ".join(f"{METRIC_LABELS[n]} {better[n]}" for n in names)
    return f" Better is: {said}."


def write_outputs(out: Path, report: dict, outcomes: list[RunOutcome]) -> None:
    _plot_params(out / "params.png", report)
    _plot_curves(out / "curves.png", report, outcomes)
    with atomic_output(out / "study.md", force=True) as tmp:
        tmp.write_text(study_markdown(report))
    with atomic_output(out / STUDY_FILE, force=True) as tmp:
        tmp.write_text(json.dumps(report, indent=2) + "\n")


def _axes():
    """A figure drawn off-screen (no pyplot state, no display needed) and its axes."""
    fig = matplotlib_figure.Figure(figsize=(6, 4))
    matplotlib_agg.FigureCanvasAgg(fig)
    return fig, fig.add_subplot(1, 1, 1)


def _plot_params(path: Path, report: dict) -> None:
    fig, ax = _axes()
    for r in report["runs"]:
        ax.errorbar(r["trainable"], r["psnr_y"], yerr=r["psnr_y_std"], fmt="o", capsize=3)
        ax.annotate(r["spec"], (r["trainable"], r["psnr_y"]), textcoords="offset points",
                    xytext=(5, 5), fontsize=8)  # fmt: skip
    ax.axhline(report["base"]["psnr_y"], color="gray", linestyle="--", label="base")
    ax.set_xscale("log")
    ax.set_xlabel("trainable parameters")
    ax.set_ylabel("PSNR-Y (dB)")
    ax.legend()
    ax.grid(True, alpha=0.3)
    _save(fig, path)


def _plot_curves(path: Path, report: dict, outcomes: list[RunOutcome]) -> None:
    fig, ax = _axes()
    for r in report["runs"]:
        curves = [o.curve for o in outcomes if o.spec == r["spec"] and o.curve]
        if not curves:
            continue
        iters = sorted({it for c in curves for it, _ in c})
        means = []
        for it in iters:
            vals = [v for c in curves for i, v in c if i == it]
            means.append(sum(vals) / len(vals))
        ax.plot(iters, means, marker=".", label=r["spec"])
    ax.axhline(report["base"]["psnr_y"], color="gray", linestyle="--", label="base")
    ax.set_xlabel("iteration")
    ax.set_ylabel("validation PSNR-Y (dB)")
    ax.legend(fontsize=8)
    ax.grid(True, alpha=0.3)
    _save(fig, path)


def _save(fig, path: Path) -> None:
    with atomic_output(path, force=True) as tmp:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
