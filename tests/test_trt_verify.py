"""Verification of an engine against ONNX Runtime fp32 (adaptsr.export.trt_verify); it runs here:
the engine is stood in by a callable."""

import math

import numpy as np
import pytest
from fakes.exports import write_onnx

from adaptsr.core.errors import UserError
from adaptsr.export import parity
from adaptsr.export.tensorrt import Profile
from adaptsr.export.trt_verify import photo_batch, verify


def test_verify_passes_and_records_psnr_per_profile_shape(tmp_path):
    path = write_onnx(tmp_path / "m.onnx", n="N")
    sess = parity.session(path)
    profile = Profile("input", (1, 3, 16, 16), (2, 3, 32, 48), (2, 3, 32, 48))
    noise = 1e-3

    def engine(x):  # the exact output plus a known error
        return parity.run(sess, x) + noise

    r = verify(engine, path, profile)
    assert [c.profile for c in r.checks] == ["min", "opt/max"]
    assert [c.shape for c in r.checks] == [[1, 3, 16, 16], [2, 3, 32, 48]]
    for c in r.checks:  # PSNR of a constant error, from its definition
        n, _, h, w = c.shape
        ref = parity.run(sess, photo_batch((n, 3, h, w)))
        peak = max(1.0, float(ref.max() - ref.min()))
        assert c.psnr_db == pytest.approx(10 * math.log10(peak**2 / noise**2), abs=1e-3)
        assert c.max_abs == pytest.approx(noise, rel=1e-3)
    assert r.passed and r.threshold_db == 45.0
    assert r.min_psnr_db == min(c.psnr_db for c in r.checks)


def test_verify_fails_below_the_threshold_naming_the_shape(tmp_path):
    path = write_onnx(tmp_path / "m.onnx", n="N")
    sess = parity.session(path)
    profile = Profile("input", (1, 3, 16, 16), (1, 3, 32, 32), (2, 3, 64, 64))

    def engine(x):  # fine at small shapes, wrong at the largest
        y = parity.run(sess, x)
        return y + (0.05 if x.shape[0] == 2 else 0.0)

    message = r"PSNR .* dB at the max shape \[2, 3, 64, 64\] is below 45"
    with pytest.raises(UserError, match=message):
        verify(engine, path, profile)
    assert verify(engine, path, profile, min_psnr=20.0).passed  # the flag lowers it
    with pytest.raises(UserError, match="does not match ONNX Runtime's"):
        verify(lambda x: x[:, :, ::2], path, profile)


def test_photo_batch_holds_different_pictures():
    b = photo_batch((3, 3, 24, 40))
    assert b.shape == (3, 3, 24, 40) and b.dtype == np.float32
    assert not np.array_equal(b[0], b[1]) and b.min() >= 0 and b.max() <= 1
