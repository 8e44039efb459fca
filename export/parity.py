"""Test inputs and numeric comparisons for exported graphs (numpy and ONNX Runtime, no torch)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from adaptsr.core.lazy import lazy_import

ort = lazy_import("onnxruntime")


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
