"""The cost model's bounds per layer shape: `python -m benchmarks.roofline_table [GPU]` prints
the table behind docs/kernels.md (no GPU needed; GPU is a datasheet in
`adaptsr.kernels.roofline.PEAKS`, default H100 SXM).
"""

from __future__ import annotations

import sys

from adaptsr.kernels.roofline import PEAKS, bound_us, costs, prefer_one_pass
from benchmarks.lora_layers import layer_cases


def floor_table(cases, r: int = 8, pixels: int = 8 * 64 * 64, gpu: str = "H100 SXM") -> str:
    """Markdown: per case and dtype, each variant's bound; fused is the design
    `prefer_one_pass` picks."""
    peak = PEAKS[gpu]
    lines = [
        "| layer | dtype | floor GFLOP | floor MB | floor us | one-pass us | two-pass us "
        "| eager us | full us | fused/floor | eager/fused | full/fused |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|---|"
    ]
    for case in cases:
        rank, k = case.lora_rank(r), max(case.k, 1)
        for dtype, e, math in (("fp32", 4, "fp32"), ("bf16", 2, "bf16")):
            c = costs(pixels, case.c_in, case.c_out, k, rank, e)
            t = {v: bound_us(*c[v], peak, math) for v in c}
            one = prefer_one_pass(pixels, case.c_in, case.c_out, k, rank, e, math)
            fused = t["one-pass" if one else "two-pass"]
            lines.append(
                f"| {case.model} {case.layer} ({case.c_in}->{case.c_out}) | {dtype} "
                f"| {c['floor'][0] / 1e9:.2f} | {c['floor'][1] / 1e6:.1f} | {t['floor']:.1f} "
                f"| {t['one-pass']:.1f} | {t['two-pass']:.1f} | {t['eager']:.1f} "
                f"| {t['full']:.1f} | {fused / t['floor']:.2f} | {t['eager'] / fused:.2f} "
                f"| {t['full'] / fused:.2f} |"
            )
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    gpu = (argv if argv is not None else sys.argv[1:]) or ["H100 SXM"]
    name = " ".join(gpu)
    if name not in PEAKS:
        print(f"error: unknown GPU {name!r} (choose from {', '.join(PEAKS)})", file=sys.stderr)
        return 2
    p = PEAKS[name]
    print(
        f"Bounds at r=8 (qkv: 3 x 8), batch 8 of 64x64, {name} datasheet peaks: "
        f"{p['bw'] / 1e12:.2f} TB/s, fp32 {p['fp32'] / 1e12:.0f} TFLOP/s (TF32 off), "
        f"bf16 {p['bf16'] / 1e12:.0f} TFLOP/s\n"
    )
    print(floor_table(layer_cases(), gpu=name))
    return 0


if __name__ == "__main__":
    sys.exit(main())
