"""The CUDA runtime's allocation calls (cuda-python's names) on ctypes buffers: host memory a
test can read, and a record of what was freed."""

import ctypes


class FakeRuntime:
    def __init__(self, real):
        self.cudaError_t = real.cudaError_t  # the real error codes and their messages
        self.cudaGetErrorString = real.cudaGetErrorString
        self.blocks, self.freed = [], []

    def cudaMallocHost(self, nbytes):
        self.blocks.append(ctypes.create_string_buffer(nbytes))
        return self.cudaError_t.cudaSuccess, ctypes.addressof(self.blocks[-1])

    cudaMalloc = cudaMallocHost

    def cudaFreeHost(self, ptr):
        self.freed.append(ptr)

    cudaFree = cudaFreeHost
