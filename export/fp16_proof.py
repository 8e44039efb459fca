"""The fp16 export's proof: the fp16 graph against the fp32 one, in ONNX Runtime (storage and
weight rounding) and in fp16 arithmetic (onnx's reference evaluator, overflow included). An fp16
graph that overflows or loses too much is refused before anything is written. No torch.
"""

from __future__ import annotations

from pathlib import Path

from adaptsr.core.contracts import ArithmeticCheck, Fp16Arithmetic, Fp16Proof, PsnrCheck
from adaptsr.core.errors import UserError
from adaptsr.core.images import synthetic_image
from adaptsr.core.lazy import lazy_import
from adaptsr.export import parity
from adaptsr.export.fp16 import convert_to_fp16, run_in_fp16

onnx = lazy_import("onnx")

FP16_MIN_PSNR = 50.0  # dB, fp16 output vs fp32 output (ONNX Runtime: storage rounding)
FP16_ARITH_MIN_PSNR = 45.0  # dB, the same computed in fp16 arithmetic


def check_fp16(
    fp16_path: Path, fp32_path: Path, sizes: list[tuple[int, int]], converted
) -> Fp16Proof:
    """PSNR of the fp16 graph's output against the fp32 graph's, on photo-like images: in ONNX
    Runtime (fp16 storage and weight rounding), and computed in fp16 arithmetic by onnx's
    reference evaluator (overflow included), naming the first node that overflows. `converted`
    is export.fp16's report of the conversion."""
    s16, s32 = parity.session(fp16_path), parity.session(fp32_path)
    half = onnx.load(str(fp16_path))
    rows, arith = [], []
    overflow = None
    for i, (h, w) in enumerate(sizes):
        x = synthetic_image(h, w, seed=100 + i)[None]
        want = parity.run(s32, x)
        rows.append(PsnrCheck([h, w], parity.psnr(parity.run(s16, x), want)))
        got, first_bad = run_in_fp16(half, x)
        arith.append(ArithmeticCheck([h, w], parity.psnr(got, want), first_bad))
        overflow = overflow or first_bad
    worst = min(r.psnr_db for r in rows)
    worst_arith = min(r.psnr_db for r in arith)
    return Fp16Proof(
        fp32_islands=dict(converted.fp32_nodes),
        fp16_nodes=converted.fp16_nodes,
        casts_inserted=converted.casts,
        clipped_weights=converted.clipped_weights,
        runtime="onnxruntime CPUExecutionProvider",
        note="ORT on CPU runs fp16 nodes that lack CPU fp16 kernels in fp32 (it inserts "
        "casts), so this bounds the fp16 storage and weight rounding, not fp16 arithmetic",
        min_psnr_db=worst,
        threshold_db=FP16_MIN_PSNR,
        checks=rows,
        arithmetic=Fp16Arithmetic(
            runtime="onnx.reference (numpy, every op in its tensors' dtype)",
            min_psnr_db=worst_arith,
            threshold_db=FP16_ARITH_MIN_PSNR,
            first_overflow=overflow,
            checks=arith,
            passed=overflow is None and worst_arith >= FP16_ARITH_MIN_PSNR,
        ),
        passed=worst >= FP16_MIN_PSNR,
    )


def fp16_step(proto, fp32_path: Path, tmp: Path, sizes: list[tuple[int, int]]):
    """The fp16 graph and its proof; refused (nothing written) when it overflows or loses
    too much."""
    final, converted = convert_to_fp16(proto)
    fp16_path = tmp / "model.fp16.onnx"
    onnx.save(final, fp16_path)
    proof = check_fp16(fp16_path, fp32_path, sizes, converted)
    arith = proof.arithmetic
    if arith.first_overflow:  # first: it names the node, the PSNRs only follow
        raise UserError(
            "the fp16 graph overflows in fp16 arithmetic, first at "
            f"{arith.first_overflow}: not written (export without --fp16)"
        )
    if not proof.passed:
        raise UserError(
            f"fp16 output PSNR {proof.min_psnr_db:.1f} dB against fp32 is "
            f"below {FP16_MIN_PSNR:g} dB: not written"
        )
    if not arith.passed:
        raise UserError(
            f"fp16 arithmetic gives {arith.min_psnr_db:.1f} dB PSNR against fp32, below "
            f"{FP16_ARITH_MIN_PSNR:g} dB: not written"
        )
    return final, proof
