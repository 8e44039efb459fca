"""The few CUDA runtime calls that TensorRT inference needs, through cuda-python (no torch).

Why cuda-python: it is NVIDIA's own Python binding of the CUDA runtime, the one TensorRT's
Python samples use, published for x86-64 and for Jetson (aarch64); it has what timing "as
trtexec does" needs and polygraphy's small ctypes wrapper lacks: pinned (page-locked) host
memory, CUDA events and stream capture into CUDA graphs. Every call returns an error code first;
`check` turns a failure into one line naming the call.
"""

from __future__ import annotations

import ctypes
from typing import Any

import numpy as np

from adaptsr.core.errors import UserError

CUDA_PYTHON_HINT = "pip install cuda-python (the version matching the CUDA of your TensorRT)"


def runtime() -> Any:
    """cuda-python's runtime module (`cuda.bindings.runtime`, or `cuda.cudart` before 12.6)."""
    try:
        from cuda.bindings import runtime as rt
    except ImportError:
        try:
            from cuda import cudart as rt  # type: ignore[no-redef]
        except ImportError:
            raise UserError(f"TensorRT engines need cuda-python: {CUDA_PYTHON_HINT}") from None
    return rt


def check(result: Any, call: str) -> Any:
    """(error, *values) of a cuda-python call -> the value(s), or a UserError naming the call."""
    rt = runtime()
    err, values = (result[0], result[1:]) if isinstance(result, tuple) else (result, ())
    if err != rt.cudaError_t.cudaSuccess:
        _, text = rt.cudaGetErrorString(err)
        text = text.decode() if isinstance(text, bytes) else str(text)
        raise UserError(f"CUDA {call} failed: {text}")
    if not values:
        return None
    return values[0] if len(values) == 1 else values


def device_info(device: int | None = None) -> dict:
    """Name and compute capability of the current (or given) GPU, for the engine sidecar."""
    rt = runtime()
    if device is None:
        device = check(rt.cudaGetDevice(), "cudaGetDevice")
    prop = check(rt.cudaGetDeviceProperties(device), "cudaGetDeviceProperties")
    name = prop.name.decode(errors="replace") if isinstance(prop.name, bytes) else str(prop.name)
    return {"gpu": name.rstrip("\x00").strip(), "compute_capability": f"{prop.major}.{prop.minor}"}


class Stream:
    def __init__(self) -> None:
        self.rt = runtime()
        self.handle = check(self.rt.cudaStreamCreate(), "cudaStreamCreate")

    @property
    def ptr(self) -> int:
        return int(self.handle)

    def synchronize(self) -> None:
        check(self.rt.cudaStreamSynchronize(self.handle), "cudaStreamSynchronize")

    def __del__(self) -> None:
        if getattr(self, "handle", None) is not None:
            self.rt.cudaStreamDestroy(self.handle)


class DeviceBuffer:
    """Device memory that grows on demand (never shrinks: shapes change tile by tile)."""

    def __init__(self) -> None:
        self.rt = runtime()
        self.ptr = 0
        self.nbytes = 0

    def reserve(self, nbytes: int) -> int:
        if nbytes > self.nbytes:
            self.free()
            self.ptr = int(check(self.rt.cudaMalloc(nbytes), "cudaMalloc"))
            self.nbytes = nbytes
        return self.ptr

    def free(self) -> None:
        if self.ptr:
            self.rt.cudaFree(self.ptr)
            self.ptr, self.nbytes = 0, 0

    def __del__(self) -> None:
        self.free()


class PinnedBuffer:
    """Page-locked host memory seen as a numpy array, so copies run at full DMA speed and
    asynchronously (pageable memory is staged through a driver buffer first)."""

    def __init__(self) -> None:
        self.rt = runtime()
        self.ptr = 0
        self.nbytes = 0

    def array(self, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
        if nbytes > self.nbytes:
            self.free()
            self.ptr = int(check(self.rt.cudaMallocHost(nbytes), "cudaMallocHost"))
            self.nbytes = nbytes
        raw = (ctypes.c_byte * nbytes).from_address(self.ptr)
        return np.frombuffer(memoryview(raw), dtype=dtype, count=int(np.prod(shape))).reshape(shape)

    def free(self) -> None:
        if self.ptr:
            self.rt.cudaFreeHost(self.ptr)
            self.ptr, self.nbytes = 0, 0

    def __del__(self) -> None:
        self.free()


def copy_to_device(dst: int, src: np.ndarray, stream: Stream) -> None:
    rt = runtime()
    kind = rt.cudaMemcpyKind.cudaMemcpyHostToDevice
    check(rt.cudaMemcpyAsync(dst, src.ctypes.data, src.nbytes, kind, stream.handle), "H2D copy")


def copy_to_host(dst: np.ndarray, src: int, stream: Stream) -> None:
    rt = runtime()
    kind = rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
    check(rt.cudaMemcpyAsync(dst.ctypes.data, src, dst.nbytes, kind, stream.handle), "D2H copy")


class Event:
    def __init__(self) -> None:
        self.rt = runtime()
        self.handle = check(self.rt.cudaEventCreate(), "cudaEventCreate")

    def record(self, stream: Stream) -> None:
        check(self.rt.cudaEventRecord(self.handle, stream.handle), "cudaEventRecord")

    def elapsed_ms(self, start: Event) -> float:
        """Milliseconds from `start` to this event (both recorded; waits for this one)."""
        check(self.rt.cudaEventSynchronize(self.handle), "cudaEventSynchronize")
        return float(check(self.rt.cudaEventElapsedTime(start.handle, self.handle), "elapsed"))

    def __del__(self) -> None:
        if getattr(self, "handle", None) is not None:
            self.rt.cudaEventDestroy(self.handle)


class Graph:
    """The work `enqueue` puts on a stream, captured once and replayed with one launch
    (trtexec --useCudaGraph): no per-layer launch overhead on the CPU."""

    def __init__(self, enqueue, stream: Stream) -> None:
        self.rt = rt = runtime()
        mode = rt.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal
        check(rt.cudaStreamBeginCapture(stream.handle, mode), "cudaStreamBeginCapture")
        try:
            enqueue()
        finally:
            self.graph = check(rt.cudaStreamEndCapture(stream.handle), "cudaStreamEndCapture")
        self.exec = check(rt.cudaGraphInstantiate(self.graph, 0), "cudaGraphInstantiate")

    def launch(self, stream: Stream) -> None:
        check(self.rt.cudaGraphLaunch(self.exec, stream.handle), "cudaGraphLaunch")

    def __del__(self) -> None:
        if getattr(self, "exec", None) is not None:
            self.rt.cudaGraphExecDestroy(self.exec)
        if getattr(self, "graph", None) is not None:
            self.rt.cudaGraphDestroy(self.graph)
