"""Test inputs and numeric comparisons for exported graphs (numpy and ONNX Runtime, no torch)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np


def synthetic_image(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A photo-like (1, 3, H, W) float32 image in [0, 1]: smooth gradients, hard edges
    (rectangles, a disc, thin lines), a fine texture and sensor-like noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    yn, xn = y / max(height - 1, 1), x / max(width - 1, 1)
    img = np.stack([0.2 + 0.6 * xn, 0.3 + 0.5 * yn, 0.5 + 0.3 * (xn - yn)], axis=0)
    for _ in range(4):  # flat-coloured rectangles: step edges at random positions
        y0, x0 = rng.integers(0, height), rng.integers(0, width)
        y1, x1 = y0 + rng.integers(2, max(3, height // 2)), x0 + rng.integers(2, max(3, width // 2))
        img[:, y0:y1, x0:x1] = rng.uniform(0, 1, size=(3, 1, 1))
    cy, cx, r = height * 0.6, width * 0.4, min(height, width) / 4
    disc = (y - cy) ** 2 + (x - cx) ** 2 < r**2
    img[:, disc] = img[:, disc] * 0.3 + 0.6
    img[:, :, ::7] *= 0.5  # thin dark lines
    img += 0.08 * np.sin(x * 0.9 + y * 0.4)[None] * np.cos(y * 0.7)[None]  # fine texture
    img += rng.normal(0, 0.02, size=img.shape)  # noise
    return np.clip(img, 0, 1).astype(np.float32)[None]


def random_input(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((1, 3, height, width), dtype=np.float32)


def abs_error(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """(max, mean) absolute difference; NaN anywhere counts as an infinite error."""
    d = np.abs(a.astype(np.float64) - b.astype(np.float64))
    if not np.all(np.isfinite(d)):
        return math.inf, math.inf
    return float(d.max()), float(d.mean())


def psnr(test: np.ndarray, reference: np.ndarray, peak: float | None = None) -> float:
    """PSNR in dB of `test` against `reference`; inf when identical.

    The default peak is the larger of 1 (images in [0, 1]) and the reference's value range, so
    that an untrained model whose outputs span +-30 is judged against its own scale.
    """
    ref = reference.astype(np.float64)
    d = test.astype(np.float64) - ref
    if not np.all(np.isfinite(d)):
        return -math.inf
    if peak is None:
        peak = max(1.0, float(ref.max() - ref.min()))
    mse = float(np.mean(d * d))
    return math.inf if mse == 0 else 10 * math.log10(peak * peak / mse)


def session(path: str | Path, threads: int = 0):
    """An ONNX Runtime CPU session (graph optimisations on, as deployed)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    # Idle worker threads that spin steal the cores of the other session in an A/B timing
    # (merged/base ratios drifted by 3-5% on 2 cores with spinning, within 1% without).
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if threads:
        opts.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def run(sess, x: np.ndarray) -> np.ndarray:
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]
