"""The fp16 (or bf16) export's proof: the reduced graph against the fp32 one, in ONNX Runtime
(storage and weight rounding) and in reduced arithmetic (onnx's reference evaluator, overflow
included), on photo-like images and, with --check-images, on crops of the user's own. A graph
that overflows or loses too much is refused before anything is written. No torch.

bf16 in ONNX Runtime: its CPU provider has no bf16 kernels for Add, Mul, MatMul or Conv, so the
bf16 graph cannot run there; what runs is the bf16 graph emulated in fp32 (export.bf16: bf16
weights, every bf16 tensor rounded to bf16), and the report and the command say so.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from adaptsr.core.contracts import ArithmeticCheck, Fp16Arithmetic, Fp16Proof, PsnrCheck
from adaptsr.core.errors import UserError
from adaptsr.core.image_headers import probe
from adaptsr.core.images import check_header, list_images, read_image, synthetic_image
from adaptsr.core.lazy import lazy_import
from adaptsr.export import parity
from adaptsr.export.bf16 import emulate_in_fp32
from adaptsr.export.fp16 import BFLOAT16, FLOAT, HALF, convert_to_fp16, run_in_fp16

onnx = lazy_import("onnx")

FP16_MIN_PSNR = 50.0  # dB, fp16 output vs fp32 output (ONNX Runtime: storage rounding)
FP16_ARITH_MIN_PSNR = 45.0  # dB, the same computed in fp16 arithmetic
# bf16 keeps 8 significant bits to fp16's 11: each rounding is 8 times larger (18 dB); 15 dB
# below the fp16 thresholds
BF16_MIN_PSNR = 35.0
BF16_ARITH_MIN_PSNR = 30.0
MAX_CHECK_IMAGES = 8  # --check-images: the first this many files of the folder, by name
CHECK_SIDE = 128  # ... each cropped (centre) to at most this many pixels a side


@dataclass(frozen=True)
class Reduced:
    """The reduced precision of an export: fp16 or bf16 compute, fp32 or fp16 inputs/outputs."""

    name: str = "fp16"
    io: str = "fp32"

    @property
    def low(self) -> int:
        return BFLOAT16 if self.name == "bf16" else HALF

    @property
    def io_type(self) -> int:
        return HALF if self.io == "fp16" else FLOAT

    @property
    def thresholds(self) -> tuple[float, float]:
        """(ONNX Runtime, reduced arithmetic) minimum PSNR in dB."""
        if self.name == "bf16":
            return BF16_MIN_PSNR, BF16_ARITH_MIN_PSNR
        return FP16_MIN_PSNR, FP16_ARITH_MIN_PSNR

    @property
    def flag(self) -> str:
        return "--bf16" if self.name == "bf16" else "--fp16"


FP16 = Reduced()


def image_crop(rgb: np.ndarray, tile: tuple[int, int] | None, min_size: int, multiple: int):
    """(1, 3, h, w) float32 from an (H, W, 3) image: the tile's size for a static export,
    otherwise the centre at most CHECK_SIDE a side, rounded down to the model's multiple and
    at least its minimum (edges repeated where the image is smaller)."""
    height, width = rgb.shape[:2]
    if tile:
        want = tile
    else:
        least = -(-max(min_size, 1) // multiple) * multiple
        want = tuple(
            max(least, (min(side, CHECK_SIDE) // multiple) * multiple) for side in (height, width)
        )
    pad = [(0, max(0, w - s)) for w, s in zip(want, (height, width), strict=True)]
    rgb = np.pad(rgb, pad + [(0, 0)], mode="edge")
    y0, x0 = (rgb.shape[0] - want[0]) // 2, (rgb.shape[1] - want[1]) // 2
    crop = rgb[y0 : y0 + want[0], x0 : x0 + want[1]]
    return np.ascontiguousarray(crop.transpose(2, 0, 1)[None], dtype=np.float32)


def check_image_files(folder: str | Path) -> list[Path]:
    """The images --check-images reads (at most MAX_CHECK_IMAGES); one line when there are none."""
    files = list_images(folder)  # a missing folder or a file: one line each
    if not files:
        raise UserError(f"--check-images {folder}: no images in this folder (png, jpg, ...)")
    files = files[:MAX_CHECK_IMAGES]
    for path in files:  # too many pixels or frames: said before the export's work
        check_header(path, probe(path))
    return files


def check_inputs(sizes, folder, tile, min_size: int, multiple: int):
    """(label, (1, 3, h, w) float32) of the check: a photo-like image at each size, then a crop
    of each --check-images file (`folder`, or None)."""
    inputs = [
        ("synthetic", synthetic_image(h, w, seed=100 + i)[None]) for i, (h, w) in enumerate(sizes)
    ]
    for path in check_image_files(folder) if folder is not None else []:
        rgb = read_image(path).rgb
        inputs.append((path.name, image_crop(rgb, tile, min_size, multiple)))
    return inputs


def _run(sess, x: np.ndarray) -> np.ndarray:
    """`x` (float32) in the session's input type; the output as float32."""
    inp = sess.get_inputs()[0]
    x = x.astype(np.float16) if inp.type == "tensor(float16)" else x
    return np.asarray(sess.run(None, {inp.name: x})[0], dtype=np.float32)


def _runtime(reduced: Reduced, low_path: Path, tmp: Path):
    """The ONNX Runtime session of the reduced graph (bf16: emulated in fp32), and its name."""
    if reduced.name == "fp16":
        return parity.session(low_path), "onnxruntime CPUExecutionProvider"
    emulated = tmp / "model.bf16-emulated.onnx"
    onnx.save(emulate_in_fp32(onnx.load(str(low_path))), emulated)
    runtime = "onnxruntime CPUExecutionProvider, bf16 emulated in fp32 (bf16 weights, every bf16 tensor rounded to bf16)"  # noqa: E501
    return parity.session(emulated), runtime


NOTES = {
    "fp16": "ORT on CPU runs fp16 nodes that lack CPU fp16 kernels in fp32 (it inserts casts), "
    "so this bounds the fp16 storage and weight rounding, not fp16 arithmetic",
    "bf16": "ORT's CPU provider has no bf16 kernels for Add, Mul, MatMul or Conv: the bf16 graph "
    "runs emulated, every op in fp32 and its output rounded to bf16 (storage and weight "
    "rounding); the arithmetic check runs the bf16 graph itself",
}


def check_fp16(
    low_path: Path, fp32_path: Path, inputs, converted, reduced: Reduced = FP16
) -> Fp16Proof:
    """PSNR of the reduced graph's output against the fp32 graph's on `inputs` (check_inputs):
    in ONNX Runtime (fp16 storage and weight rounding; bf16 emulated), and computed in reduced
    arithmetic by onnx's reference evaluator (overflow included), naming the first node that
    overflows. `converted` is export.fp16's report of the conversion."""
    s32 = parity.session(fp32_path)
    s_low, runtime = _runtime(reduced, low_path, low_path.parent)
    low = onnx.load(str(low_path))
    rows, arith = [], []
    overflow = None
    for label, x in inputs:
        size = list(x.shape[2:])
        want = _run(s32, x)
        rows.append(PsnrCheck(size, parity.psnr(_run(s_low, x), want), label))
        got, first_bad = run_in_fp16(low, x)
        arith.append(ArithmeticCheck(size, parity.psnr(got, want), first_bad, label))
        overflow = overflow or first_bad
    worst = min(r.psnr_db for r in rows)
    worst_arith = min(r.psnr_db for r in arith)
    runtime_min, arith_min = reduced.thresholds
    return Fp16Proof(
        fp32_islands=dict(converted.fp32_nodes),
        fp16_nodes=converted.fp16_nodes,
        casts_inserted=converted.casts,
        clipped_weights=converted.clipped_weights,
        runtime=runtime,
        note=NOTES[reduced.name],
        min_psnr_db=worst,
        threshold_db=runtime_min,
        checks=rows,
        arithmetic=Fp16Arithmetic(
            runtime=f"onnx.reference (numpy, every op in its tensors' dtype: {reduced.name})",
            min_psnr_db=worst_arith,
            threshold_db=arith_min,
            first_overflow=overflow,
            checks=arith,
            passed=overflow is None and worst_arith >= arith_min,
        ),
        passed=worst >= runtime_min,
        precision=reduced.name,
        io_precision=reduced.io,
        check_images=sorted({label for label, _ in inputs} - {"synthetic"}),
    )


def fp16_step(proto, fp32_path: Path, tmp: Path, inputs, reduced: Reduced = FP16):
    """The reduced graph and its proof on `inputs` (check_inputs); refused (nothing written)
    when it overflows or loses too much."""
    final, converted = convert_to_fp16(proto, low=reduced.low, io=reduced.io_type)
    low_path = tmp / f"model.{reduced.name}.onnx"
    onnx.save(final, low_path)
    proof = check_fp16(low_path, fp32_path, inputs, converted, reduced)
    arith, name = proof.arithmetic, reduced.name
    if arith.first_overflow:  # first: it names the node, the PSNRs only follow
        raise UserError(
            f"the {name} graph overflows in {name} arithmetic, first at "
            f"{arith.first_overflow}: not written (export without {reduced.flag})"
        )
    worst = min(proof.checks, key=lambda r: r.psnr_db)
    if not proof.passed:
        raise UserError(
            f"{name} output PSNR {proof.min_psnr_db:.1f} dB against fp32 is below "
            f"{proof.threshold_db:g} dB{_on(worst.image)}: not written"
        )
    if not arith.passed:
        worst_arith = min(arith.checks, key=lambda r: r.psnr_db)
        raise UserError(
            f"{name} arithmetic gives {arith.min_psnr_db:.1f} dB PSNR against fp32, below "
            f"{arith.threshold_db:g} dB{_on(worst_arith.image)}: not written"
        )
    return final, proof


def _on(image: str) -> str:
    return "" if image == "synthetic" else f" (on {image})"


def proof_lines(proof: Fp16Proof) -> list[str]:
    """What `adapt export onnx` says about the fp16 or bf16 check: on which images, in which
    runtime (bf16: emulated) and arithmetic."""
    name = proof.precision
    where = "ONNX Runtime" if name == "fp16" else "ONNX Runtime (bf16 emulated in fp32)"
    on = f"{len(proof.checks) - len(proof.check_images)} photo-like image(s)"
    if proof.check_images:
        on += f" and {len(proof.check_images)} of --check-images"
    lines = [
        f"{name} vs fp32 on {on}: min PSNR {proof.min_psnr_db:.1f} dB in {where}, "
        f"{proof.arithmetic.min_psnr_db:.1f} dB in {name} arithmetic (onnx.reference), "
        "no overflow: PASS"
    ]
    if proof.io_precision != "fp32":
        lines.append(f"inputs and outputs: {proof.io_precision}")
    return lines
