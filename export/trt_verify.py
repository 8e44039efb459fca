"""An engine checked against ONNX Runtime fp32 at its profile's shapes (no torch).

The engine runs on a photo-like input (gradients, flat regions with edges, lines, texture and
noise: `adaptsr.core.images.synthetic_image`, a different picture per batch item) at the profile's
min, opt and max shapes; the reference is the fp32 ONNX in ONNX Runtime on the CPU. PSNR (peak:
the larger of 1 and the reference's range, as in the fp16 export check) and the largest
absolute error go into the engine sidecar; below the threshold (45 dB) the build fails, naming
the shape.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from adaptsr.core.contracts import EngineVerify, VerifyCheck
from adaptsr.core.errors import UserError
from adaptsr.core.images import synthetic_image
from adaptsr.export import parity

MIN_PSNR_DB = 45.0


def photo_batch(shape: tuple[int, ...]) -> np.ndarray:
    """(N, 3, H, W) float32 of N different photo-like pictures."""
    n, _, h, w = shape
    return np.stack([synthetic_image(h, w, seed=i) for i in range(n)])


def profile_checks(profile) -> list[tuple[str, tuple[int, ...]]]:
    """(label, shape) for min, opt and max, each distinct shape once."""
    seen: dict[tuple[int, ...], list[str]] = {}
    for label, shape in (("min", profile.min), ("opt", profile.opt), ("max", profile.max)):
        seen.setdefault(tuple(shape), []).append(label)
    return [("/".join(labels), shape) for shape, labels in seen.items()]


def verify(
    run_engine: Callable[[np.ndarray], np.ndarray],
    reference: str | Path,
    profile,
    min_psnr: float = MIN_PSNR_DB,
) -> EngineVerify:
    """Engine vs the fp32 reference at every profile shape; raises below `min_psnr`."""
    sess = parity.session(reference)
    rows = []
    for label, shape in profile_checks(profile):
        x = photo_batch(shape)
        want = parity.run(sess, x)
        got = np.asarray(run_engine(x))
        if got.shape != want.shape:
            raise UserError(
                f"engine output {got.shape} at the {label} shape {list(shape)} does not match "
                f"ONNX Runtime's {want.shape}"
            )
        max_abs, mean_abs = parity.abs_error(got, want)
        rows.append(VerifyCheck(label, list(shape), parity.psnr(got, want), max_abs, mean_abs))
    worst = min(rows, key=lambda r: r.psnr_db)
    if worst.psnr_db < min_psnr:
        raise UserError(
            f"engine vs ONNX Runtime fp32: PSNR {worst.psnr_db:.1f} dB at the "
            f"{worst.profile} shape {worst.shape} is below "
            f"{min_psnr:g} dB: not written (--min-psnr lowers it)"
        )
    return EngineVerify(
        reference=str(reference),
        runtime="onnxruntime CPUExecutionProvider, fp32",
        input="synthetic photo-like images (adaptsr.core.images.synthetic_image)",
        threshold_db=min_psnr,
        min_psnr_db=worst.psnr_db,
        max_abs=max(r.max_abs for r in rows),
        checks=rows,
        passed=True,
    )
