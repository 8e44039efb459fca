"""The CUDA runtime calls (adaptsr.serve.cudart): errors as one line, and pinned and device buffers
on the stand-in runtime of tests/fakes/cudart.py."""

import ctypes

import numpy as np
import pytest
from fakes.cudart import FakeRuntime

from adaptsr.core.errors import UserError
from adaptsr.serve import cudart


def test_cuda_errors_are_one_line_naming_the_call():
    rt = cudart.runtime()
    with pytest.raises(UserError, match="CUDA cudaMalloc failed: .*no CUDA-capable device"):
        cudart.check((rt.cudaError_t.cudaErrorNoDevice, None), "cudaMalloc")
    assert cudart.check((rt.cudaError_t.cudaSuccess, 7), "x") == 7
    assert cudart.check((rt.cudaError_t.cudaSuccess,), "x") is None


def test_pinned_and_device_buffers_grow_and_are_reused(monkeypatch):
    from adaptsr.serve import cudart

    real = cudart.runtime()
    fake = FakeRuntime(real)
    blocks, freed = fake.blocks, fake.freed
    monkeypatch.setattr(cudart, "runtime", lambda: fake)
    pinned = cudart.PinnedBuffer()
    a = pinned.array((2, 3), np.float32)
    a[...] = 7
    assert a.ctypes.data == pinned.ptr == ctypes.addressof(blocks[0]) and pinned.nbytes == 24
    assert bytes(blocks[0])[:4] == np.float32(7).tobytes()  # the array is the pinned memory
    b = pinned.array((1, 3), np.float16)  # smaller: the same block
    assert b.ctypes.data == pinned.ptr and len(blocks) == 1
    pinned.array((4, 4), np.float32)  # larger: a new block, the old one freed
    assert len(blocks) == 2 and freed == [ctypes.addressof(blocks[0])]
    device = cudart.DeviceBuffer()
    assert device.reserve(100) == device.reserve(50) and device.nbytes == 100
    with pytest.raises(UserError, match="CUDA cudaMallocHost failed"):
        monkeypatch.setattr(
            fake, "cudaMallocHost",
            lambda n: (real.cudaError_t.cudaErrorMemoryAllocation, None),
        )  # fmt: skip
        cudart.PinnedBuffer().array((1,), np.float32)
